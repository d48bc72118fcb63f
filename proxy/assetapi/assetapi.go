// Package assetapi serves the Comfy Cloud asset endpoints over the asset
// library: request parsing, responses, and one error type.
package assetapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/comfyshim/comfyshim/proxy/apierror"
	"github.com/comfyshim/comfyshim/proxy/internal/stamp"
	"github.com/comfyshim/comfyshim/tagstore/assets"
)

// Options tune the API.
type Options struct {
	MaxBody int64 // bound on JSON request bodies
	// Origin is the scheme://host the client used, for the URLs the API
	// builds (preview_url) when AbsoluteURLs is set.
	Origin func(*http.Request) string
	// Resolve, when set, finds the file behind an asset id comfyshim does
	// not know (one ComfyUI's own asset database gave, with
	// --enable-assets): its root and path inside it.
	Resolve func(ctx context.Context, id string) (root, rel string, ok bool)
	// Events announces asset events (assets.seed.*) to every open websocket.
	Events func(typ string, data map[string]any)
	// MaxUpload bounds an uploaded file (POST /api/assets).
	MaxUpload int64
	// AbsoluteURLs makes preview_url absolute, as the Cloud spec's format
	// says; by default it is relative, as OSS ComfyUI and its web app use it.
	AbsoluteURLs bool
}

// api serves the Cloud asset endpoints over a library of assets.
type api struct {
	lib     *assets.Library
	opts    Options
	seeding seeder
}

// Error is an API error: its status, Cloud error code and message.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func badQuery(format string, args ...any) *Error {
	return &Error{http.StatusBadRequest, "INVALID_QUERY", fmt.Sprintf(format, args...)}
}

// fail answers err: an *Error as it says, anything else as a 500.
func fail(c *gin.Context, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{http.StatusInternalServerError, "INTERNAL_ERROR", "internal error"}
	}
	apierror.Write(c.Writer, e.Status, e.Code, e.Message)
	c.Abort()
}

// Mount serves the asset endpoints on r.
func Mount(r gin.IRouter, lib *assets.Library, opts Options) {
	if opts.MaxUpload <= 0 {
		opts.MaxUpload = 16 << 30
	}
	if opts.Origin == nil {
		opts.Origin = func(r *http.Request) string { return "http://" + r.Host }
	}
	(&api{lib: lib, opts: opts}).mount(r)
}

func (a *api) mount(r gin.IRouter) {
	r.GET("/api/assets", a.list)
	r.GET("/api/assets/:id", a.get)
	r.GET("/api/assets/:id/content", a.content)
	r.POST("/api/assets/:id/tags", a.addTags)
	r.DELETE("/api/assets/:id/tags", a.removeTags)
	r.GET("/api/tags", a.listTags)
	r.GET("/api/assets/tags/refine", a.refine)
	notImpl := func(c *gin.Context) {
		fail(c, &Error{http.StatusNotImplemented, "NOT_IMPLEMENTED", c.Request.Method + " " + c.FullPath() + " is not implemented by comfyshim"})
	}
	r.POST("/api/assets", a.upload)
	r.POST("/api/assets/seed", a.seed)
	r.GET("/api/assets/seed/status", a.getSeedStatus)
	r.POST("/api/assets/seed/cancel", a.cancelSeed)
	r.POST("/api/assets/prune", a.prune)
	r.PUT("/api/assets/:id", a.update)
	r.DELETE("/api/assets/:id", a.remove)
	r.POST("/api/assets/from-hash", a.fromHash)
	r.GET("/api/assets/remote-metadata", notImpl)
	r.POST("/api/assets/download", notImpl)
	r.HEAD("/api/assets/hash/:hash", a.hasHash)
}

// Owns reports whether a path belongs to the asset API, so requests the
// router did not match (other methods, unknown sub-paths) are answered by
// comfyshim and never forwarded.
func Owns(p string) bool {
	return p == "/api/tags" || p == "/api/tags/" || p == "/api/assets" || strings.HasPrefix(p, "/api/assets/")
}

// assetJSON is the Cloud Asset schema plus OSS ComfyUI's display_name,
// loader_path and metadata.
type assetJSON struct {
	ID             string          `json:"id"`
	Name           string          `json:"name"`
	Size           int64           `json:"size"`
	MimeType       string          `json:"mime_type"`
	Tags           []string        `json:"tags"`
	UserMetadata   json.RawMessage `json:"user_metadata"`
	Metadata       json.RawMessage `json:"metadata"`
	PreviewURL     string          `json:"preview_url,omitempty"`
	CreatedAt      string          `json:"created_at"`
	UpdatedAt      string          `json:"updated_at"`
	LastAccessTime string          `json:"last_access_time"`
	IsImmutable    bool            `json:"is_immutable"`
	DisplayName    string          `json:"display_name"`
	LoaderPath     string          `json:"loader_path"`
	AssetHash      string          `json:"asset_hash,omitempty"`
}

func timestamp(t time.Time) string { return stamp.Millis(t) }

// loaderValue is what a loader node or LoadImage widget takes for x: the
// path inside the model category, or inside input/output, "/"-separated on
// every OS.
func loaderValue(x assets.Asset) string {
	if x.Root == "models" {
		return x.LoaderPath
	}
	return x.Rel
}

// listJSON is a listing's answer.
type listJSON struct {
	Assets     []assetJSON `json:"assets"`
	Total      int         `json:"total"`
	HasMore    bool        `json:"has_more"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

// emptyObject is every asset's metadata: shared, never modified.
var emptyObject = json.RawMessage(`{}`)

// userMetadata is what the API stored for an asset (meta, may be nil) with
// "filename" set to the loader value unless the stored object sets it. A
// listing renders a page of these: the common case allocates one string.
func userMetadata(filename string, meta json.RawMessage) json.RawMessage {
	if meta == nil {
		b := make([]byte, 0, len(filename)+16)
		b = append(b, `{"filename":`...)
		return append(appendString(b, filename), '}') // escaped as json.Marshal does
	}
	var um map[string]any
	if json.Unmarshal(meta, &um) != nil {
		um = map[string]any{}
	}
	if _, ok := um["filename"]; !ok {
		um["filename"] = filename
	}
	b, _ := json.Marshal(um)
	return b
}

func (a *api) toJSON(c *gin.Context, x assets.Asset) assetJSON {
	lv := loaderValue(x)
	out := assetJSON{
		ID:             x.ID,
		Name:           x.Name,
		Size:           x.Size,
		MimeType:       x.MIME,
		Tags:           x.Tags,
		Metadata:       emptyObject,
		CreatedAt:      timestamp(x.Created()),
		UpdatedAt:      timestamp(x.Modified()),
		LastAccessTime: timestamp(x.Accessed()),
		DisplayName:    x.Rel,
		LoaderPath:     lv,
	}
	name, meta := a.lib.Extra(x.ID)
	if name != "" {
		out.Name = name
	}
	out.UserMetadata = userMetadata(lv, meta)
	if h, ok := a.lib.Hash(x); ok {
		out.AssetHash = h
	}
	if x.Root != "models" && !x.Missing { // ComfyUI's /view serves input, output and temp only
		// As url.Values would encode it (keys sorted), without its map.
		sub, file := path.Split(x.Rel)
		out.PreviewURL = "/api/view?filename=" + url.QueryEscape(file) + "&subfolder=" + url.QueryEscape(strings.TrimSuffix(sub, "/")) + "&type=" + url.QueryEscape(x.Root)
		if a.opts.AbsoluteURLs {
			out.PreviewURL = a.opts.Origin(c.Request) + out.PreviewURL
		}
	}
	return out
}

func (a *api) list(c *gin.Context) {
	q, err := a.parseListQuery(c.Request.URL.Query())
	if err != nil {
		fail(c, err)
		return
	}
	var page []assets.Asset
	var total int
	var more bool
	if q.after != nil {
		page, total, more = a.lib.Current().ListAfter(q.filter, *q.after, q.limit)
	} else {
		page, total = a.lib.Current().List(q.filter, q.sort, q.desc, q.offset, q.limit)
		more = q.offset+len(page) < total
	}
	out := make([]assetJSON, len(page))
	for i, x := range page {
		out[i] = a.toJSON(c, x)
	}
	resp := listJSON{Assets: out, Total: total, HasMore: more}
	if more && len(page) > 0 {
		resp.NextCursor = encodeCursor(assets.MarkOf(page[len(page)-1], q.sort, q.desc))
	}
	p := listBuffers.Get().(*[]byte)
	b := resp.appendJSON((*p)[:0])
	c.Data(http.StatusOK, "application/json; charset=utf-8", b)
	if cap(b) <= 1<<20 {
		*p = b
		listBuffers.Put(p)
	}
}

// listBuffers are reused for listing answers (tens of KiB each, thousands
// per second: garbage the collector would otherwise chase).
var listBuffers = sync.Pool{New: func() any { return new([]byte) }}

// lookup resolves the :id parameter to a listed asset, answering the error
// itself when there is none.
func (a *api) lookup(c *gin.Context) (assets.Asset, bool) {
	id, err := assets.CanonicalID(c.Param("id"))
	if err != nil {
		// OSS ComfyUI's routes only match UUIDs, and the spec lists only 404
		// for most of these routes: anything else names no asset.
		fail(c, &Error{http.StatusNotFound, "ASSET_NOT_FOUND", "no asset with id " + strconv.Quote(c.Param("id")) + ": " + err.Error()})
		return assets.Asset{}, false
	}
	x, ok := a.lib.Get(id)
	if !ok && a.opts.Resolve != nil {
		// An id from ComfyUI's own asset database (in /history outputs when
		// it runs with --enable-assets): the same file under comfyshim's id.
		if root, rel, found := a.opts.Resolve(c.Request.Context(), id); found {
			x, ok = a.lib.Get(assets.IDOf(root, rel))
		}
	}
	if !ok {
		fail(c, &Error{http.StatusNotFound, "ASSET_NOT_FOUND", "no asset with id " + id})
		return assets.Asset{}, false
	}
	return x, true
}

func (a *api) get(c *gin.Context) {
	if x, ok := a.lookup(c); ok {
		c.JSON(http.StatusOK, a.toJSON(c, x))
	}
}

// inlineSafe are the types a browser may render from comfyshim's origin;
// anything else (HTML, SVG, scripts) is sent as a download.
var inlineSafe = []string{"image/png", "image/jpeg", "image/webp", "image/gif", "image/avif", "video/mp4", "video/webm", "audio/mpeg", "audio/wav", "audio/flac", "audio/ogg"}

func (a *api) content(c *gin.Context) {
	x, ok := a.lookup(c)
	if !ok {
		return
	}
	f, err := a.lib.Open(x)
	if err != nil {
		fail(c, &Error{http.StatusNotFound, "ASSET_NOT_FOUND", "asset file is no longer readable"})
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		fail(c, &Error{http.StatusNotFound, "ASSET_NOT_FOUND", "asset file is no longer readable"})
		return
	}
	h := c.Writer.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	disposition := "inline"
	if slices.Contains(inlineSafe, x.MIME) {
		h.Set("Content-Type", x.MIME)
	} else {
		h.Set("Content-Type", "application/octet-stream")
		disposition = "attachment"
	}
	h.Set("Content-Disposition", disposition+"; filename*=UTF-8''"+url.PathEscape(x.Name))
	http.ServeContent(c.Writer, c.Request, "", fi.ModTime(), f)
}

// update is PUT /api/assets/{id}: the asset's name, tags (the complete
// list) and user_metadata, any of them; the file itself is not touched.
func (a *api) update(c *gin.Context) {
	x, ok := a.lookup(c)
	if !ok {
		return
	}
	body, ok := a.readBody(c)
	if !ok {
		return
	}
	u, err := parseUpdateBody(body)
	if err != nil {
		fail(c, err)
		return
	}
	if _, err := a.lib.Update(x, u); err != nil {
		fail(c, storeError(err))
		return
	}
	if x, ok = a.lib.Get(x.ID); !ok {
		fail(c, &Error{http.StatusNotFound, "ASSET_NOT_FOUND", "the asset went away during the update"})
		return
	}
	c.JSON(http.StatusOK, a.toJSON(c, x))
}

// remove is DELETE /api/assets/{id}: the file (input, output, temp; a
// model's only with ?delete_content=true) and its entry in the tags file.
func (a *api) remove(c *gin.Context) {
	x, ok := a.lookup(c)
	if !ok {
		return
	}
	withModel, err := boolParam(c.Request.URL.Query(), "delete_content", false)
	if err != nil {
		fail(c, err)
		return
	}
	switch err := a.lib.Delete(x, withModel); {
	case errors.Is(err, assets.ErrProtected):
		fail(c, &Error{http.StatusConflict, "MODEL_FILE_PROTECTED", "model files are deleted only with ?delete_content=true; nothing was changed"})
	case err != nil && errors.Is(err, os.ErrNotExist):
		fail(c, &Error{http.StatusNotFound, "ASSET_NOT_FOUND", "the asset's file is already gone"})
	case err != nil:
		fail(c, storeError(err))
	default:
		c.Status(http.StatusNoContent)
	}
}

// readBody reads a JSON request body within the size bound.
func (a *api) readBody(c *gin.Context) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, a.opts.MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			fail(c, &Error{http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", fmt.Sprintf("body larger than %d bytes", a.opts.MaxBody)})
			return nil, false
		}
		fail(c, &Error{http.StatusBadRequest, "INVALID_BODY", "reading body: " + err.Error()})
		return nil, false
	}
	return body, true
}

// parseUpdateBody reads {"name"?, "tags"?, "user_metadata"?}: at least one.
func parseUpdateBody(body []byte) (assets.Update, error) {
	var u assets.Update
	invalid := func(code, format string, args ...any) (assets.Update, error) {
		return u, &Error{http.StatusBadRequest, code, fmt.Sprintf(format, args...)}
	}
	if !utf8.Valid(body) {
		return invalid("INVALID_JSON", "body is not valid UTF-8")
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&raw); err != nil || raw == nil {
		return invalid("INVALID_JSON", "body must be a JSON object")
	}
	if dec.More() {
		return invalid("INVALID_JSON", "body has data after the JSON value")
	}
	if len(raw) == 0 {
		return invalid("INVALID_BODY", "give at least one of name, tags, user_metadata")
	}
	for k, v := range raw {
		switch k {
		case "name":
			var n string
			if json.Unmarshal(v, &n) != nil || strings.TrimSpace(n) == "" {
				return invalid("INVALID_BODY", `"name" must be a non-empty string`)
			}
			n = strings.TrimSpace(n)
			u.Name = &n
		case "tags":
			tags, err := parseTagsBody([]byte(`{"tags":` + string(v) + `}`))
			if err != nil {
				return u, err
			}
			u.Tags = &tags
		case "user_metadata":
			var m map[string]any
			if json.Unmarshal(v, &m) != nil || m == nil {
				return invalid("INVALID_BODY", `"user_metadata" must be a JSON object`)
			}
			u.Meta = v
		default:
			return invalid("INVALID_BODY", "%q cannot be changed here (name, tags and user_metadata can)", k)
		}
	}
	return u, nil
}

func (a *api) addTags(c *gin.Context)    { a.modify(c, false) }
func (a *api) removeTags(c *gin.Context) { a.modify(c, true) }

func (a *api) modify(c *gin.Context, remove bool) {
	x, ok := a.lookup(c)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, a.opts.MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			fail(c, &Error{http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", fmt.Sprintf("body larger than %d bytes", a.opts.MaxBody)})
			return
		}
		fail(c, &Error{http.StatusBadRequest, "INVALID_BODY", "reading body: " + err.Error()})
		return
	}
	tags, err := parseTagsBody(body)
	if err != nil {
		fail(c, err)
		return
	}
	var ch assets.Change
	if remove {
		ch, err = a.lib.RemoveTags(x, tags)
	} else {
		ch, err = a.lib.AddTags(x, tags)
	}
	if err != nil {
		fail(c, storeError(err))
		return
	}
	if remove {
		c.JSON(http.StatusOK, gin.H{"removed": ch.Changed, "not_present": ch.Unchanged, "total_tags": ch.Tags})
	} else {
		c.JSON(http.StatusOK, gin.H{"added": ch.Changed, "already_present": ch.Unchanged, "total_tags": ch.Tags})
	}
}

// storeError says what a failed tag change means to the client; nothing
// was changed.
func storeError(err error) *Error {
	switch {
	case errors.Is(err, assets.ErrInvalidTags):
		return &Error{http.StatusBadRequest, "INVALID_BODY", err.Error()}
	case errors.Is(err, assets.ErrSidecarInvalid):
		return &Error{http.StatusServiceUnavailable, "SIDECAR_INVALID", "the tags file on disk does not parse; fix it to resume changes: " + err.Error()}
	}
	return &Error{http.StatusInternalServerError, "INTERNAL_ERROR", "saving tags failed"}
}

// parseTagsBody reads {"tags":[...]} and returns the tags normalised.
func parseTagsBody(body []byte) ([]string, error) {
	invalid := func(code, format string, args ...any) ([]string, error) {
		return nil, &Error{http.StatusBadRequest, code, fmt.Sprintf(format, args...)}
	}
	if !utf8.Valid(body) {
		return invalid("INVALID_JSON", "body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var v any
	if err := dec.Decode(&v); err != nil {
		return invalid("INVALID_JSON", "body is not valid JSON: %v", err)
	}
	if dec.More() {
		return invalid("INVALID_JSON", "body has data after the JSON value")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return invalid("INVALID_BODY", `body must be an object {"tags":[...]}`)
	}
	raw, ok := obj["tags"]
	if !ok {
		return invalid("INVALID_BODY", `missing "tags"`)
	}
	list, ok := raw.([]any)
	if !ok {
		return invalid("INVALID_BODY", `"tags" must be an array of strings`)
	}
	if len(list) > assets.MaxTagsPerRequest {
		return invalid("INVALID_BODY", "%d tags; at most %d per request", len(list), assets.MaxTagsPerRequest)
	}
	tags := make([]string, len(list))
	for i, t := range list {
		s, ok := t.(string)
		if !ok {
			return invalid("INVALID_BODY", "tags[%d] is not a string", i)
		}
		// The decoder turns an unpaired surrogate escape (\ud800) into
		// U+FFFD; only a literal or escaped U+FFFD may stand for itself.
		if strings.ContainsRune(s, utf8.RuneError) && !writesReplacementChar(body) {
			return invalid("INVALID_BODY", "tags[%d] is not valid Unicode (unpaired surrogate escape)", i)
		}
		tags[i] = s
	}
	norm, err := assets.NormalizeTags(tags)
	if err != nil {
		return invalid("INVALID_BODY", "%v", err)
	}
	return norm, nil
}

func writesReplacementChar(body []byte) bool {
	return bytes.Contains(body, []byte("\uFFFD")) || bytes.Contains(bytes.ToLower(body), []byte(`\ufffd`))
}

// maxOffset caps offset parameters as OSS ComfyUI does: beyond it paging is
// a denial of service, not a use.
const maxOffset = 10_000_000

func (a *api) listTags(c *gin.Context) {
	qv := c.Request.URL.Query()
	limit, err := intParam(qv, "limit", 100, 1, 1000)
	if err != nil {
		fail(c, err)
		return
	}
	offset, err := intParam(qv, "offset", 0, 0, maxOffset)
	if err != nil {
		fail(c, err)
		return
	}
	byName := false
	switch o := qv.Get("order"); o {
	case "", "count_desc":
	case "name_asc":
		byName = true
	default:
		fail(c, badQuery("order %q: want count_desc or name_asc", o))
		return
	}
	includeZero, err := boolParam(qv, "include_zero", false)
	if err == nil {
		_, err = boolParam(qv, "include_public", true)
	}
	if err != nil {
		fail(c, err)
		return
	}
	rows := a.lib.Current().TagList(qv.Get("prefix"), byName, includeZero, a.lib.SidecarTagCounts())
	total := len(rows)
	rows = rows[min(offset, total):min(offset+limit, total)]
	out := make([]tagInfo, len(rows))
	for i, r := range rows {
		out[i] = tagInfo{r.Name, r.Count}
	}
	c.JSON(http.StatusOK, gin.H{"tags": out, "total": total, "has_more": offset+len(rows) < total})
}

// tagInfo is the Cloud TagInfo schema.
type tagInfo struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

func (a *api) refine(c *gin.Context) {
	qv := c.Request.URL.Query()
	q, err := a.parseFilter(qv)
	limit := 0
	if err == nil {
		limit, err = intParam(qv, "limit", 100, 1, 1000)
	}
	if err != nil {
		fail(c, err)
		return
	}
	hist := a.lib.Current().Histogram(q)
	if len(hist) > limit {
		rows := make([]assets.TagCount, 0, len(hist))
		for t, n := range hist {
			rows = append(rows, assets.TagCount{Name: t, Count: n})
		}
		slices.SortFunc(rows, func(x, y assets.TagCount) int {
			if x.Count != y.Count {
				return y.Count - x.Count
			}
			return strings.Compare(x.Name, y.Name)
		})
		hist = make(map[string]int, limit)
		for _, r := range rows[:limit] {
			hist[r.Name] = r.Count
		}
	}
	c.JSON(http.StatusOK, gin.H{"tag_counts": hist})
}

type listQuery struct {
	filter        assets.Filter
	sort          string
	desc          bool
	offset, limit int
	after         *assets.Mark // keyset paging: continue after this
}

func (a *api) parseListQuery(qv url.Values) (listQuery, error) {
	var q listQuery
	var err error
	if q.filter, err = a.parseFilter(qv); err != nil {
		return q, err
	}
	if q.limit, err = intParam(qv, "limit", 20, 1, 500); err != nil {
		return q, err
	}
	if q.offset, err = intParam(qv, "offset", 0, 0, maxOffset); err != nil {
		return q, err
	}
	q.sort = "created_at"
	if s := qv.Get("sort"); s != "" {
		if !slices.Contains(assets.SortKeys, s) {
			return q, badQuery("sort %q: want one of %s", s, strings.Join(assets.SortKeys, ", "))
		}
		q.sort = s
	}
	switch o := qv.Get("order"); o {
	case "", "desc":
		q.desc = true
	case "asc":
	default:
		return q, badQuery("order %q: want asc or desc", o)
	}
	if _, err := boolParam(qv, "include_public", true); err != nil {
		return q, err
	}
	if c := qv.Get("after"); c != "" {
		if q.offset > 0 {
			return q, badQuery("give offset or after, not both")
		}
		m, err := decodeCursor(c)
		if err != nil {
			return q, &Error{http.StatusBadRequest, "INVALID_CURSOR", err.Error()}
		}
		if m.Key != q.sort || m.Desc != q.desc {
			return q, &Error{http.StatusBadRequest, "INVALID_CURSOR", "the cursor was made for another sort or order"}
		}
		q.after = &m
	}
	return q, nil
}

// parseFilter reads the tag and name filters shared by listing and refine.
// Tag lists are accepted comma-separated, repeated, or both.
func (a *api) parseFilter(qv url.Values) (assets.Filter, error) {
	var f assets.Filter
	f.All = append(tagList(qv["include_tags"]), tagList(qv["tags_all"])...)
	f.Any = tagList(qv["tags_any"])
	f.None = append(tagList(qv["exclude_tags"]), tagList(qv["tags_none"])...)
	f.NameContains = qv.Get("name_contains")
	if n := len(f.All) + len(f.Any) + len(f.None); n > maxFilterTags {
		return f, &Error{http.StatusBadRequest, "INVALID_TAG_FILTER", fmt.Sprintf("%d tags in filters; at most %d", n, maxFilterTags)}
	}
	for _, t := range f.All {
		if slices.Contains(f.None, t) {
			return f, &Error{http.StatusBadRequest, "INVALID_TAG_FILTER", fmt.Sprintf("tag %q is both required and excluded", t)}
		}
	}
	for _, list := range [][]string{f.All, f.Any, f.None, {f.NameContains}} {
		for _, t := range list {
			if !utf8.ValidString(t) {
				return f, badQuery("filter values must be valid UTF-8")
			}
		}
	}
	if mf := qv.Get("metadata_filter"); mf != "" {
		var m map[string]any
		if len(mf) > maxMetadataFilter {
			return f, badQuery("metadata_filter is longer than %d bytes", maxMetadataFilter)
		}
		if err := json.Unmarshal([]byte(mf), &m); err != nil || m == nil {
			return f, badQuery("metadata_filter must be a JSON object")
		}
		if len(m) > 0 {
			f.IDs = a.lib.MatchMeta(m)
		}
	}
	return f, nil
}

// maxMetadataFilter bounds a metadata_filter's text.
const maxMetadataFilter = 16 << 10

// maxFilterTags bounds the tags one listing may filter by, as OSS does.
const maxFilterTags = 100

func tagList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

// intParam reads an integer in [lo, hi] (hi < 0: no upper bound).
func intParam(qv url.Values, name string, def, lo, hi int) (int, error) {
	s := qv.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || (hi >= 0 && n > hi) {
		if hi >= 0 {
			return 0, badQuery("%s %q: want an integer from %d to %d", name, s, lo, hi)
		}
		return 0, badQuery("%s %q: want an integer of at least %d", name, s, lo)
	}
	return n, nil
}

func boolParam(qv url.Values, name string, def bool) (bool, error) {
	s := qv.Get(name)
	if s == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, badQuery("%s %q: want true or false", name, s)
	}
	return b, nil
}
