package assetapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/comfyshim/comfyshim/proxy/internal/form"
	"github.com/comfyshim/comfyshim/tagstore/assets"
)

// upload is POST /api/assets: a multipart upload (Cloud's fields file,
// tags, name, user_metadata, id) streamed to disk and hashed on the way.
// The tags choose the folder as OSS ComfyUI does: "models" with
// "model_type:<category>" puts the file in that model folder, "output" in
// output/, anything else in input/.
func (a *api) upload(c *gin.Context) {
	ct, _, _ := mime.ParseMediaType(c.GetHeader("Content-Type"))
	if ct != "multipart/form-data" {
		fail(c, &Error{http.StatusUnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE", "send the file as multipart/form-data (uploads from a URL are not supported)"})
		return
	}
	mr, err := c.Request.MultipartReader()
	if err != nil {
		fail(c, &Error{http.StatusBadRequest, "INVALID_BODY", "reading the multipart body: " + err.Error()})
		return
	}
	var staged *assets.Staged
	defer func() {
		if staged != nil {
			staged.Discard()
		}
	}()
	fm, err := form.Read(mr, []string{"tags", "name", "user_metadata", "id", "mime_type", "preview_id"}, func(r io.Reader) (err error) {
		staged, err = a.lib.Stage(r, a.opts.MaxUpload)
		return err
	})
	if fe, ok := form.AsError(err); ok {
		fail(c, &Error{http.StatusBadRequest, "INVALID_BODY", fe.Msg})
		return
	} else if err != nil {
		fail(c, uploadError(err, a.opts.MaxUpload))
		return
	}
	fields, tagValues, fileName := fm.Fields, fm.Tags, fm.FileName
	if id := fields["id"]; id != "" {
		// Ids are derived from paths here: one can only name an existing
		// asset, which is then returned as it is (idempotent retries).
		cid, err := assets.CanonicalID(id)
		if err != nil {
			fail(c, &Error{http.StatusBadRequest, "INVALID_ID", err.Error()})
			return
		}
		if x, ok := a.lib.Get(cid); ok && !x.Missing {
			c.JSON(http.StatusOK, createdJSON{assetJSON: a.toJSON(c, x), CreatedNew: false})
			return
		}
		fail(c, &Error{http.StatusBadRequest, "INVALID_ID", "asset ids are derived from file paths here; an id can only name an existing asset"})
		return
	}
	if staged == nil {
		fail(c, &Error{http.StatusBadRequest, "MISSING_FILE", `no "file" part`})
		return
	}
	tags, err := formTags(tagValues)
	if err != nil {
		fail(c, err)
		return
	}
	tags, root, category, err := uploadTarget(tags)
	if err != nil {
		fail(c, err)
		return
	}
	if n := fields["name"]; n != "" {
		fileName = n
	}
	fileName, err = assets.CleanName(fileName)
	if err != nil {
		fail(c, &Error{http.StatusBadRequest, "INVALID_BODY", err.Error()})
		return
	}
	u := assets.Update{Tags: &tags}
	if m := fields["user_metadata"]; m != "" {
		var obj map[string]any
		if json.Unmarshal([]byte(m), &obj) != nil || obj == nil {
			fail(c, &Error{http.StatusBadRequest, "INVALID_BODY", `"user_metadata" must be a JSON object`})
			return
		}
		u.Meta = json.RawMessage(m)
	}
	// The same content already in that folder: that asset is returned (as
	// the Cloud spec says), with the tags asked for added.
	s := staged
	staged = nil // Add consumes it
	x, created, err := a.lib.Add(s, root, category, fileName, u)
	if err != nil {
		fail(c, uploadError(err, a.opts.MaxUpload))
		return
	}
	out := createdJSON{assetJSON: a.toJSON(c, x), CreatedNew: created}
	out.AssetHash = s.Hash
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	c.JSON(status, out)
}

// createdJSON is Cloud's AssetCreated.
type createdJSON struct {
	assetJSON
	CreatedNew bool `json:"created_new"`
}

// formTags reads the tags fields: repeated, comma-separated, or a JSON
// array.
func formTags(values []string) ([]string, error) {
	var tags []string
	for _, v := range values {
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, "[") {
			var list []string
			if err := json.Unmarshal([]byte(v), &list); err != nil {
				return nil, &Error{http.StatusBadRequest, "INVALID_BODY", `"tags" is neither a JSON array of strings nor a comma-separated list`}
			}
			tags = append(tags, list...)
			continue
		}
		tags = append(tags, tagList([]string{v})...)
	}
	return tags, nil
}

// uploadTarget checks an upload's tags and chooses the folder from them:
// "models" with "model_type:<category>" that model folder, "output"
// output/, anything else input/. It returns the tags normalised.
func uploadTarget(tags []string) (norm []string, root, category string, err error) {
	if len(tags) > assets.MaxTagsPerRequest {
		return nil, "", "", &Error{http.StatusBadRequest, "INVALID_BODY", fmt.Sprintf("%d tags; at most %d", len(tags), assets.MaxTagsPerRequest)}
	}
	norm = []string{}
	if len(tags) > 0 {
		if norm, err = assets.NormalizeTags(tags); err != nil {
			return nil, "", "", &Error{http.StatusBadRequest, "INVALID_BODY", err.Error()}
		}
	}
	switch {
	case slices.Contains(norm, "models"):
		for _, t := range norm {
			if c, ok := strings.CutPrefix(t, "model_type:"); ok {
				if _, err := assets.CleanName(c); err != nil || strings.ContainsAny(c, `/\`) {
					return nil, "", "", &Error{http.StatusBadRequest, "INVALID_BODY", fmt.Sprintf("model_type %q is not a folder name", c)}
				}
				return norm, "models", c, nil
			}
		}
		return nil, "", "", &Error{http.StatusBadRequest, "INVALID_BODY", `a "models" upload needs a "model_type:<category>" tag`}
	case slices.Contains(norm, "output"):
		return norm, "output", "", nil
	}
	return norm, "input", "", nil
}

func uploadError(err error, limit int64) *Error {
	switch {
	case errors.Is(err, assets.ErrUploadTooLarge):
		return &Error{http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", fmt.Sprintf("the file is larger than %d bytes", limit)}
	case errors.Is(err, assets.ErrBadName):
		return &Error{http.StatusBadRequest, "INVALID_BODY", err.Error()}
	case errors.Is(err, assets.ErrNoFolder):
		return &Error{http.StatusServiceUnavailable, "NO_UPLOAD_FOLDER", err.Error()}
	case errors.Is(err, assets.ErrInvalidTags):
		return &Error{http.StatusBadRequest, "INVALID_BODY", err.Error()}
	}
	return &Error{http.StatusBadRequest, "UPLOAD_FAILED", "the upload did not complete: " + err.Error()}
}

// hasHash is HEAD /api/assets/hash/{hash}: 200 when a listed asset has
// that content (as far as the background hashing knows), else 404.
func (a *api) hasHash(c *gin.Context) {
	h := c.Param("hash")
	if !assets.ValidHash(h) {
		fail(c, &Error{http.StatusBadRequest, "INVALID_HASH", "want blake3:<64 lowercase hex digits>"})
		return
	}
	if _, ok := a.lib.ByHash(h); ok {
		c.Status(http.StatusOK)
		return
	}
	c.Status(http.StatusNotFound)
}

// fromHash is POST /api/assets/from-hash: a new asset with the content of
// an existing one (a copy in the folder the tags choose, under name).
func (a *api) fromHash(c *gin.Context) {
	body, ok := a.readBody(c)
	if !ok {
		return
	}
	var req struct {
		Hash         string          `json:"hash"`
		Name         string          `json:"name"`
		Tags         []string        `json:"tags"`
		UserMetadata json.RawMessage `json:"user_metadata"`
		MimeType     string          `json:"mime_type"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		fail(c, &Error{http.StatusBadRequest, "INVALID_BODY", "want {hash, tags, name?, user_metadata?}: " + err.Error()})
		return
	}
	if !assets.ValidHash(req.Hash) {
		fail(c, &Error{http.StatusBadRequest, "INVALID_HASH", "want blake3:<64 lowercase hex digits>"})
		return
	}
	if len(req.Tags) == 0 {
		fail(c, &Error{http.StatusBadRequest, "INVALID_BODY", `"tags" needs at least one tag`})
		return
	}
	tags, root, category, err := uploadTarget(req.Tags)
	if err != nil {
		fail(c, err)
		return
	}
	src, ok := a.lib.ByHash(req.Hash)
	if !ok {
		fail(c, &Error{http.StatusNotFound, "ASSET_NOT_FOUND", "no asset with content " + req.Hash + " is known"})
		return
	}
	name := req.Name
	if name == "" {
		name = src.Name
	}
	if name, err = assets.CleanName(name); err != nil {
		fail(c, &Error{http.StatusBadRequest, "INVALID_BODY", err.Error()})
		return
	}
	u := assets.Update{Tags: &tags}
	if len(req.UserMetadata) > 0 && string(req.UserMetadata) != "null" {
		u.Meta = req.UserMetadata
	}
	staged, err := a.lib.Copy(src, req.Hash, a.opts.MaxUpload)
	switch {
	case errors.Is(err, assets.ErrChanged):
		fail(c, &Error{http.StatusConflict, "HASH_MISMATCH", "the file with that hash changed; try again"})
		return
	case errors.Is(err, os.ErrNotExist):
		fail(c, &Error{http.StatusNotFound, "ASSET_NOT_FOUND", "the asset with that content is no longer readable"})
		return
	case err != nil:
		fail(c, uploadError(err, a.opts.MaxUpload))
		return
	}
	x, err := a.lib.Place(staged, root, category, name, u)
	if err != nil {
		fail(c, uploadError(err, a.opts.MaxUpload))
		return
	}
	out := createdJSON{assetJSON: a.toJSON(c, x), CreatedNew: true}
	out.AssetHash = req.Hash
	c.JSON(http.StatusCreated, out)
}
