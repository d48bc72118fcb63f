package apiv2

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/comfyshim/comfyshim/proxy/internal/form"
	"github.com/comfyshim/comfyshim/tagstore/assets"
)

// v2 assets are the Cloud API's assets (the same ids, files and tags), in
// the v2 shape: {id, hash, size_bytes, content_type, file_path, created_at,
// url, url_expires_at}. Job outputs are assets too; one ComfyUI wrote to a
// folder comfyshim does not see is served through ComfyUI's /view.
type assetJSON struct {
	ID           string  `json:"id"`
	Hash         *string `json:"hash"`
	SizeBytes    int64   `json:"size_bytes"`
	ContentType  string  `json:"content_type"`
	FilePath     *string `json:"file_path"`
	CreatedNew   *bool   `json:"created_new,omitempty"`
	CreatedAt    string  `json:"created_at"`
	URL          string  `json:"url"`
	URLExpiresAt string  `json:"url_expires_at"`
	ExpiresAt    *string `json:"expires_at"`
	JobID        *string `json:"job_id,omitempty"`
}

// filePath is an asset's path in the contract's global namespace: input
// files by their path inside input/ ("photo.png"), the others with their
// folder ("models/checkpoints/x.safetensors", "output/ComfyUI_00001_.png").
func filePath(root, rel string) string {
	if root == "input" {
		return rel
	}
	return root + "/" + rel
}

// placement reads an upload's file_path: "name" or "input/name" into
// input/, "output/name" into output/, "models/<category>/name" into that
// model folder. Folders below those are not created.
func placement(fp string) (root, category, name string, err error) {
	fp = strings.Trim(strings.ReplaceAll(fp, `\`, "/"), "/")
	parts := strings.Split(fp, "/")
	switch {
	case len(parts) == 1:
		root, name = "input", parts[0]
	case len(parts) == 2 && (parts[0] == "input" || parts[0] == "output"):
		root, name = parts[0], parts[1]
	case len(parts) == 3 && parts[0] == "models":
		root, category, name = "models", parts[1], parts[2]
		if c, cerr := assets.CleanName(category); cerr != nil || c != category {
			return "", "", "", fmt.Errorf("%q is not a model folder name", category)
		}
	default:
		return "", "", "", fmt.Errorf(`file_path %q: want "name", "input/name", "output/name" or "models/<category>/name"`, fp)
	}
	clean, err := assets.CleanName(name)
	if err != nil {
		return "", "", "", err
	}
	if clean != name {
		return "", "", "", fmt.Errorf("%q is not a usable file name", name)
	}
	return root, category, name, nil
}

func (a *API) assetView(r *http.Request, x assets.Asset) assetJSON {
	fp := filePath(x.Root, x.Rel)
	out := assetJSON{ID: x.ID, SizeBytes: x.Size, ContentType: x.MIME, FilePath: &fp, CreatedAt: rfc3339(x.Created())}
	if h, ok := a.lib.Hash(x); ok {
		out.Hash = &h
	}
	if loc, ok := a.records.output(x.ID); ok {
		out.JobID = &loc.job
	}
	out.URL, out.URLExpiresAt = a.contentURL(r, x.ID)
	return out
}

// outputAsset renders a job output ComfyUI wrote where comfyshim cannot
// see it.
func (a *API) outputAsset(r *http.Request, loc outputLoc) assetJSON {
	o := a.outputView(r, loc.job, loc.ref)
	fp := filePath(loc.ref.Root, loc.ref.Rel)
	return assetJSON{ID: o.ID, Hash: o.Hash, SizeBytes: o.SizeBytes, ContentType: o.ContentType, FilePath: &fp,
		CreatedAt: rfc3339(loc.created), URL: o.URL, URLExpiresAt: o.URLExpiresAt, JobID: &loc.job}
}

// upload is POST /api/v2/assets: multipart content_type, file_path,
// expected_hash?, tags*, file. The file streams to disk, hashed with BLAKE3
// on the way; a declared hash that differs is 409 hash_mismatch and
// nothing is kept. Content the target folder already has returns that
// asset (200, created_new false); else the file is placed (201).
func (a *API) upload(c *gin.Context) {
	ct, _, _ := mime.ParseMediaType(c.GetHeader("Content-Type"))
	if ct != "multipart/form-data" {
		fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, "send the file as multipart/form-data", nil)
		return
	}
	mr, err := c.Request.MultipartReader()
	if err != nil {
		fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, "reading the multipart body: "+err.Error(), nil)
		return
	}
	var staged *assets.Staged
	defer func() {
		if staged != nil {
			staged.Discard()
		}
	}()
	fm, err := form.Read(mr, []string{"content_type", "file_path", "expected_hash", "tags", "expires_in"}, func(r io.Reader) (err error) {
		staged, err = a.lib.Stage(r, a.opts.MaxUpload)
		return err
	})
	if fe, ok := form.AsError(err); ok {
		var details map[string]any
		if fe.Field != "" {
			details = map[string]any{"field": fe.Field}
		}
		fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, fe.Msg, details)
		return
	} else if err != nil {
		a.uploadError(c, err)
		return
	}
	fields, tags := fm.Fields, fm.Tags
	for _, f := range []string{"file_path", "content_type"} {
		if fields[f] == "" {
			fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, fmt.Sprintf("%q is required", f), map[string]any{"field": f})
			return
		}
	}
	if staged == nil {
		fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, `"file" is required`, map[string]any{"field": "file"})
		return
	}
	if v := fields["expires_in"]; v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 60 || n > 7*24*3600 {
			fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, "expires_in must be 60 to 604800 seconds", map[string]any{"field": "expires_in"})
			return
		}
	}
	if want := fields["expected_hash"]; want != "" {
		if !assets.ValidHash(want) {
			fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, "expected_hash must be blake3:<64 lowercase hex digits>", map[string]any{"field": "expected_hash"})
			return
		}
		if want != staged.Hash {
			fail(c, http.StatusConflict, codeHashMismatch, "the bytes received do not have the expected hash", map[string]any{"expected": want, "received": staged.Hash})
			return
		}
	}
	root, category, name, err := placement(fields["file_path"])
	if err != nil {
		fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, err.Error(), map[string]any{"field": "file_path"})
		return
	}
	u, err := tagUpdate(tags)
	if err != nil {
		fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, err.Error(), map[string]any{"field": "tags"})
		return
	}
	s := staged
	staged = nil // Add consumes it
	x, created, err := a.lib.Add(s, root, category, name, u)
	if err != nil {
		a.uploadError(c, err)
		return
	}
	a.created(c, x, created)
}

func (a *API) created(c *gin.Context, x assets.Asset, created bool) {
	out := a.assetView(c.Request, x)
	out.CreatedNew = &created
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(c, status, out)
}

// tagUpdate reads tags fields (repeated, or comma-separated).
func tagUpdate(values []string) (assets.Update, error) {
	var tags []string
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				tags = append(tags, t)
			}
		}
	}
	if len(tags) > assets.MaxTagsPerRequest {
		return assets.Update{}, fmt.Errorf("%d tags; at most %d", len(tags), assets.MaxTagsPerRequest)
	}
	if len(tags) == 0 {
		return assets.Update{}, nil
	}
	norm, err := assets.NormalizeTags(tags)
	if err != nil {
		return assets.Update{}, err
	}
	return assets.Update{Tags: &norm}, nil
}

func (a *API) uploadError(c *gin.Context, err error) {
	switch {
	case errors.Is(err, assets.ErrUploadTooLarge):
		fail(c, http.StatusUnprocessableEntity, "file_too_large", fmt.Sprintf("the file is larger than %d bytes", a.opts.MaxUpload), nil)
	case errors.Is(err, assets.ErrBadName), errors.Is(err, assets.ErrInvalidTags):
		fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, err.Error(), nil)
	case errors.Is(err, assets.ErrNoFolder):
		fail(c, http.StatusUnprocessableEntity, "no_upload_folder", err.Error()+"; set comfyui_dir (or input_dir/models_dir) so comfyshim can place files", nil)
	default:
		a.log.Warn("v2 upload failed", "err", err)
		fail(c, http.StatusUnprocessableEntity, "upload_failed", "the upload did not complete", nil)
	}
}

// fromHash is POST /api/v2/assets/from-hash: an asset over content comfyshim
// already has. The same content already in the target folder is returned
// as it is (200); else a copy is placed there (201).
func (a *API) fromHash(c *gin.Context) {
	var req struct {
		Hash      string   `json:"hash"`
		FilePath  string   `json:"file_path"`
		Tags      []string `json:"tags"`
		ExpiresIn *int     `json:"expires_in"`
	}
	dec := json.NewDecoder(io.LimitReader(c.Request.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, "want {hash, file_path?, tags?}: "+err.Error(), nil)
		return
	}
	if !assets.ValidHash(req.Hash) {
		fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, "hash must be blake3:<64 lowercase hex digits>", map[string]any{"field": "hash"})
		return
	}
	src, ok := a.lib.ByHash(req.Hash)
	if !ok {
		fail(c, http.StatusNotFound, codeBlobNotFound, "no content with hash "+req.Hash+" is known here", nil)
		return
	}
	root, category, name := src.Root, src.Category, src.Name
	if req.FilePath != "" {
		var err error
		if root, category, name, err = placement(req.FilePath); err != nil {
			fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, err.Error(), map[string]any{"field": "file_path"})
			return
		}
	}
	u, err := tagUpdate(req.Tags)
	if err != nil {
		fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, err.Error(), map[string]any{"field": "tags"})
		return
	}
	if dup, ok := a.lib.ByHashIn(req.Hash, root, category); ok {
		if u.Tags != nil {
			if _, err := a.lib.AddTags(dup, *u.Tags); err != nil {
				a.uploadError(c, err)
				return
			}
			dup, _ = a.lib.Get(dup.ID)
		}
		a.created(c, dup, false)
		return
	}
	staged, err := a.lib.Copy(src, req.Hash, a.opts.MaxUpload)
	if err != nil {
		if errors.Is(err, assets.ErrChanged) || errors.Is(err, os.ErrNotExist) {
			fail(c, http.StatusNotFound, codeBlobNotFound, "the content with that hash is no longer here", nil)
			return
		}
		a.uploadError(c, err)
		return
	}
	x, created, err := a.lib.Add(staged, root, category, name, u)
	if err != nil {
		a.uploadError(c, err)
		return
	}
	a.created(c, x, created)
}

// byHash is HEAD /api/v2/assets/by-hash/{hash}: 200 when content with that
// hash is here (as far as hashing has got), else 404.
func (a *API) byHash(c *gin.Context) {
	if h := c.Param("hash"); assets.ValidHash(h) {
		if _, ok := a.lib.ByHash(h); ok {
			c.Status(http.StatusOK)
			return
		}
	}
	c.Status(http.StatusNotFound)
}

// find returns the asset of the path's id: a library asset, or a job
// output comfyshim cannot see on disk.
func (a *API) find(c *gin.Context) (assets.Asset, outputLoc, bool) {
	id, err := assets.CanonicalID(c.Param("id"))
	if err == nil {
		if x, ok := a.lib.Get(id); ok && !x.Missing {
			return x, outputLoc{}, true
		}
		if loc, ok := a.records.output(id); ok {
			return assets.Asset{}, loc, true
		}
	}
	fail(c, http.StatusNotFound, codeNotFound, "no asset "+c.Param("id"), nil)
	return assets.Asset{}, outputLoc{}, false
}

func (a *API) getAsset(c *gin.Context) {
	x, loc, ok := a.find(c)
	if !ok {
		return
	}
	if x.File == nil {
		writeJSON(c, http.StatusOK, a.outputAsset(c.Request, loc))
		return
	}
	writeJSON(c, http.StatusOK, a.assetView(c.Request, x))
}

// deleteAsset removes an input, output or temp file and its record. Model
// files are refused (409 asset_in_use): ComfyUI loads them, and the Cloud
// asset API deletes one only when asked with delete_content=true.
func (a *API) deleteAsset(c *gin.Context) {
	x, _, ok := a.find(c)
	if !ok {
		return
	}
	if x.File == nil {
		fail(c, http.StatusConflict, "asset_in_use", "this output is in a folder comfyshim does not manage", nil)
		return
	}
	if x.Root == "models" {
		fail(c, http.StatusConflict, "asset_in_use", "model files are not deleted through API v2", nil)
		return
	}
	if err := a.lib.Delete(x, false); err != nil {
		a.log.Warn("v2 asset delete failed", "asset", x.ID, "err", err)
		fail(c, http.StatusInternalServerError, codeUpstream, "the asset could not be deleted", nil)
		return
	}
	c.Status(http.StatusNoContent)
}

// content serves an asset's bytes (Range-aware): from its file, or for an
// output comfyshim cannot see, streamed from ComfyUI's /view.
func (a *API) content(c *gin.Context) {
	x, loc, ok := a.find(c)
	if !ok {
		return
	}
	if x.File == nil {
		// An output the folder watch has not listed yet is read from
		// disk all the same; one in a folder comfyshim cannot see comes
		// from ComfyUI.
		f, err := a.lib.Stat(loc.ref.Root, loc.ref.Rel)
		if err != nil {
			a.fromView(c, loc.ref)
			return
		}
		x = assets.Asset{File: f}
	}
	f, err := a.lib.Open(x)
	if err != nil {
		fail(c, http.StatusNotFound, codeNotFound, "the asset's file is gone", nil)
		return
	}
	defer f.Close()
	c.Header("Content-Type", x.MIME)
	c.Header("Cache-Control", "private, max-age=300")
	c.Header("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": x.Name}))
	http.ServeContent(c.Writer, c.Request, x.Name, x.Modified(), f)
}

func viewQuery(ref outputRef) string {
	dir, file := path.Split(ref.Rel)
	return url.Values{"filename": {file}, "subfolder": {strings.TrimSuffix(dir, "/")}, "type": {ref.Root}}.Encode()
}

func (a *API) viewURL(ref outputRef) string {
	u := *a.opts.Upstream
	u.Path = strings.TrimSuffix(u.Path, "/") + "/view"
	u.RawQuery = viewQuery(ref)
	return u.String()
}

// fromView streams an output from ComfyUI's /view, passing Range through.
func (a *API) fromView(c *gin.Context, ref outputRef) {
	req, err := http.NewRequestWithContext(c.Request.Context(), c.Request.Method, a.viewURL(ref), nil)
	if err != nil {
		a.upstreamError(c, err)
		return
	}
	if rg := c.GetHeader("Range"); rg != "" {
		req.Header.Set("Range", rg)
	}
	resp, err := a.view.Do(req)
	if err != nil {
		a.upstreamError(c, err)
		return
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK, http.StatusPartialContent, http.StatusRequestedRangeNotSatisfiable:
	case http.StatusNotFound:
		fail(c, http.StatusNotFound, codeNotFound, "ComfyUI no longer has this output", nil)
		return
	default:
		a.upstreamError(c, fmt.Errorf("/view answered %d", resp.StatusCode))
		return
	}
	for _, h := range []string{"Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "Last-Modified", "ETag"} {
		if v := resp.Header.Get(h); v != "" {
			c.Header(h, v)
		}
	}
	c.Status(resp.StatusCode)
	_, _ = io.Copy(c.Writer, resp.Body)
}

// remoteSize asks ComfyUI the size of an output comfyshim cannot see.
func (a *API) remoteSize(ctx context.Context, ref outputRef) (int64, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, a.viewURL(ref), nil)
	if err != nil {
		return 0, false
	}
	resp, err := a.view.Do(req)
	if err != nil {
		return 0, false
	}
	resp.Body.Close()
	return resp.ContentLength, resp.StatusCode == http.StatusOK && resp.ContentLength >= 0
}
