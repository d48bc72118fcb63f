package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/comfyshim/comfyshim/tagstore"
	"github.com/comfyshim/comfyshim/tagstore/catalog"
)

// assetAPI serves the Cloud asset tag endpoints over the catalog of ComfyUI
// files and the tag store.
type assetAPI struct {
	files   *catalog.Catalog
	tags    *tagstore.Store
	maxBody int64

	buildMu sync.Mutex
	index   atomic.Pointer[catalog.Index]
}

func (a *assetAPI) mount(r gin.IRouter) {
	r.GET("/api/assets", a.list)
	r.GET("/api/assets/:id", a.get)
	r.GET("/api/assets/:id/content", a.content)
	r.POST("/api/assets/:id/tags", a.addTags)
	r.DELETE("/api/assets/:id/tags", a.removeTags)
	r.GET("/api/tags", a.listTags)
	r.GET("/api/assets/tags/refine", a.refine)
	notImpl := func(c *gin.Context) {
		apiError(c, http.StatusNotImplemented, "NOT_IMPLEMENTED", c.Request.Method+" "+c.FullPath()+" is not implemented by comfyshim")
	}
	r.POST("/api/assets", notImpl)
	r.PUT("/api/assets/:id", notImpl)
	r.DELETE("/api/assets/:id", notImpl)
	r.POST("/api/assets/from-hash", notImpl)
	r.GET("/api/assets/remote-metadata", notImpl)
	r.POST("/api/assets/download", notImpl)
	r.HEAD("/api/assets/hash/:hash", notImpl)
}

// ownsPath reports whether a path belongs to the asset API, so requests the
// router did not match (other methods, unknown sub-paths) are answered here
// and never forwarded.
func ownsPath(p string) bool {
	return p == "/api/tags" || p == "/api/tags/" || p == "/api/assets" || strings.HasPrefix(p, "/api/assets/")
}

func apiError(c *gin.Context, status int, code, msg string) {
	writeError(c.Writer, status, code, msg)
	c.Abort()
}

// current returns the index for the current files and tags, rebuilding it
// when either changed.
func (a *assetAPI) current() *catalog.Index {
	snap := a.files.Snapshot()
	gen := a.tags.Generation()
	if x := a.index.Load(); x != nil && x.FileGen == snap.Gen && x.TagGen == gen {
		return x
	}
	a.buildMu.Lock()
	defer a.buildMu.Unlock()
	snap = a.files.Snapshot()
	gen = a.tags.Generation()
	x := a.index.Load()
	switch {
	case x != nil && x.FileGen == snap.Gen && x.TagGen == gen:
		return x
	case x != nil && x.FileGen == snap.Gen:
		// Only tags changed: patch the assets that changed.
		if ids, ok := a.tags.ChangedSince(x.TagGen); ok {
			x = x.Update(ids, a.tags, gen)
			break
		}
		x = catalog.BuildIndex(snap, a.tags)
	default:
		x = catalog.BuildIndex(snap, a.tags)
	}
	a.index.Store(x)
	return x
}

// assetJSON is the Cloud Asset schema plus OSS ComfyUI's display_name and
// loader_path.
type assetJSON struct {
	ID             string         `json:"id"`
	Name           string         `json:"name"`
	Size           int64          `json:"size"`
	MimeType       string         `json:"mime_type"`
	Tags           []string       `json:"tags"`
	UserMetadata   map[string]any `json:"user_metadata"`
	PreviewURL     string         `json:"preview_url,omitempty"`
	CreatedAt      string         `json:"created_at"`
	UpdatedAt      string         `json:"updated_at"`
	LastAccessTime string         `json:"last_access_time"`
	IsImmutable    bool           `json:"is_immutable"`
	DisplayName    string         `json:"display_name"`
	LoaderPath     string         `json:"loader_path,omitempty"`
}

func timestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func toJSON(c *gin.Context, x catalog.Asset) assetJSON {
	out := assetJSON{
		ID:             x.ID,
		Name:           x.Name,
		Size:           x.Size,
		MimeType:       x.MIME,
		Tags:           x.Tags,
		UserMetadata:   map[string]any{},
		CreatedAt:      timestamp(x.Created),
		UpdatedAt:      timestamp(x.Modified),
		LastAccessTime: timestamp(x.Accessed),
		DisplayName:    x.Rel,
		LoaderPath:     x.LoaderPath,
	}
	if x.Root != "models" { // ComfyUI's /view serves input, output and temp only
		sub, file := path.Split(x.Rel)
		q := url.Values{"type": {x.Root}, "filename": {file}, "subfolder": {strings.TrimSuffix(sub, "/")}}
		out.PreviewURL = requestOrigin(c.Request) + "/api/view?" + q.Encode()
	}
	return out
}

// requestOrigin is the scheme and host the client used: behind a trusted
// https proxy, https.
func requestOrigin(r *http.Request) string {
	return clientOf(r).scheme() + "://" + r.Host
}

func (a *assetAPI) list(c *gin.Context) {
	q, err := parseListQuery(c.Request.URL.Query())
	if err != nil {
		apiError(c, http.StatusBadRequest, "INVALID_QUERY", err.Error())
		return
	}
	page, total := a.current().List(q.filter, q.sort, q.desc, q.offset, q.limit)
	assets := make([]assetJSON, len(page))
	for i, x := range page {
		assets[i] = toJSON(c, x)
	}
	c.JSON(http.StatusOK, gin.H{"assets": assets, "total": total, "has_more": q.offset+len(page) < total})
}

// lookup resolves the :id parameter to a listed asset, answering the error
// itself when there is none. It reads the catalog and the store directly:
// single-asset requests never wait for an index rebuild.
func (a *assetAPI) lookup(c *gin.Context) (catalog.Asset, bool) {
	id, err := tagstore.CanonicalID(c.Param("id"))
	if err != nil {
		apiError(c, http.StatusBadRequest, "INVALID_ID", err.Error())
		return catalog.Asset{}, false
	}
	f, ok := a.files.Snapshot().Get(id)
	if !ok {
		apiError(c, http.StatusNotFound, "ASSET_NOT_FOUND", "no asset with id "+id)
		return catalog.Asset{}, false
	}
	return catalog.AssetOf(f, a.tags), true
}

func (a *assetAPI) get(c *gin.Context) {
	if x, ok := a.lookup(c); ok {
		c.JSON(http.StatusOK, toJSON(c, x))
	}
}

// inlineSafe are the types a browser may render from comfyshim's origin;
// anything else (HTML, SVG, scripts) is sent as a download.
var inlineSafe = []string{"image/png", "image/jpeg", "image/webp", "image/gif", "image/avif", "video/mp4", "video/webm", "audio/mpeg", "audio/wav", "audio/flac", "audio/ogg"}

func (a *assetAPI) content(c *gin.Context) {
	x, ok := a.lookup(c)
	if !ok {
		return
	}
	f, err := a.files.Open(x.File)
	if err != nil {
		apiError(c, http.StatusNotFound, "ASSET_NOT_FOUND", "asset file is no longer readable")
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		apiError(c, http.StatusNotFound, "ASSET_NOT_FOUND", "asset file is no longer readable")
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

func (a *assetAPI) addTags(c *gin.Context)    { a.modify(c, false) }
func (a *assetAPI) removeTags(c *gin.Context) { a.modify(c, true) }

func (a *assetAPI) modify(c *gin.Context, remove bool) {
	x, ok := a.lookup(c)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, a.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			apiError(c, http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", fmt.Sprintf("body larger than %d bytes", a.maxBody))
			return
		}
		apiError(c, http.StatusBadRequest, "INVALID_BODY", "reading body: "+err.Error())
		return
	}
	tags, code, err := parseTagsBody(body)
	if err != nil {
		apiError(c, http.StatusBadRequest, code, err.Error())
		return
	}
	seed := tagstore.Entry{Path: x.Path(), Tags: x.Defaults}
	var ch tagstore.Change
	if remove {
		ch, err = a.tags.Remove(x.ID, seed, tags)
	} else {
		ch, err = a.tags.Add(x.ID, seed, tags)
	}
	switch {
	case errors.Is(err, tagstore.ErrInvalidTags):
		apiError(c, http.StatusBadRequest, "INVALID_BODY", err.Error())
		return
	case errors.Is(err, tagstore.ErrSidecarInvalid):
		apiError(c, http.StatusServiceUnavailable, "SIDECAR_INVALID", "the tags file on disk does not parse; fix it to resume changes: "+err.Error())
		return
	case errors.Is(err, tagstore.ErrBusy):
		c.Header("Retry-After", "1")
		apiError(c, http.StatusServiceUnavailable, "SIDECAR_BUSY", "the tags file kept changing on disk during the write; nothing was changed, try again")
		return
	case errors.Is(err, tagstore.ErrNotDurable):
		apiError(c, http.StatusInternalServerError, "SIDECAR_NOT_DURABLE", "the change is in the tags file, but its folder could not be synced: it may not survive a power loss")
		return
	case err != nil:
		apiError(c, http.StatusInternalServerError, "INTERNAL_ERROR", "saving tags failed")
		return
	}
	if remove {
		c.JSON(http.StatusOK, gin.H{"removed": ch.Changed, "not_present": ch.Unchanged, "total_tags": ch.Tags})
	} else {
		c.JSON(http.StatusOK, gin.H{"added": ch.Changed, "already_present": ch.Unchanged, "total_tags": ch.Tags})
	}
}

// parseTagsBody reads {"tags":[...]} and returns the tags normalised, or the
// error code and reason.
func parseTagsBody(body []byte) ([]string, string, error) {
	if !utf8.Valid(body) {
		return nil, "INVALID_JSON", errors.New("body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, "INVALID_JSON", fmt.Errorf("body is not valid JSON: %v", err)
	}
	if dec.More() {
		return nil, "INVALID_JSON", errors.New("body has data after the JSON value")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, "INVALID_BODY", errors.New(`body must be an object {"tags":[...]}`)
	}
	raw, ok := obj["tags"]
	if !ok {
		return nil, "INVALID_BODY", errors.New(`missing "tags"`)
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, "INVALID_BODY", errors.New(`"tags" must be an array of strings`)
	}
	if len(list) > tagstore.MaxTagsPerRequest {
		return nil, "INVALID_BODY", fmt.Errorf("%d tags; at most %d per request", len(list), tagstore.MaxTagsPerRequest)
	}
	tags := make([]string, len(list))
	for i, t := range list {
		s, ok := t.(string)
		if !ok {
			return nil, "INVALID_BODY", fmt.Errorf("tags[%d] is not a string", i)
		}
		// The decoder turns an unpaired surrogate escape (\ud800) into
		// U+FFFD; only a literal or escaped U+FFFD may stand for itself.
		if strings.ContainsRune(s, utf8.RuneError) && !writesReplacementChar(body) {
			return nil, "INVALID_BODY", fmt.Errorf("tags[%d] is not valid Unicode (unpaired surrogate escape)", i)
		}
		tags[i] = s
	}
	norm, err := tagstore.NormalizeTags(tags)
	if err != nil {
		return nil, "INVALID_BODY", err
	}
	return norm, "", nil
}

func writesReplacementChar(body []byte) bool {
	return bytes.Contains(body, []byte("\uFFFD")) || bytes.Contains(bytes.ToLower(body), []byte(`\ufffd`))
}

// maxOffset caps offset parameters as OSS ComfyUI does: beyond it paging is
// a denial of service, not a use.
const maxOffset = 10_000_000

func (a *assetAPI) listTags(c *gin.Context) {
	qv := c.Request.URL.Query()
	limit, err := intParam(qv, "limit", 100, 1, 1000)
	if err != nil {
		apiError(c, http.StatusBadRequest, "INVALID_QUERY", err.Error())
		return
	}
	offset, err := intParam(qv, "offset", 0, 0, maxOffset)
	if err != nil {
		apiError(c, http.StatusBadRequest, "INVALID_QUERY", err.Error())
		return
	}
	byName := false
	switch o := qv.Get("order"); o {
	case "", "count_desc":
	case "name_asc":
		byName = true
	default:
		apiError(c, http.StatusBadRequest, "INVALID_QUERY", fmt.Sprintf("order %q: want count_desc or name_asc", o))
		return
	}
	includeZero, err := boolParam(qv, "include_zero", false)
	if err == nil {
		_, err = boolParam(qv, "include_public", true)
	}
	if err != nil {
		apiError(c, http.StatusBadRequest, "INVALID_QUERY", err.Error())
		return
	}
	rows := a.current().TagList(qv.Get("prefix"), byName, includeZero, a.tags.TagCounts())
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

func (a *assetAPI) refine(c *gin.Context) {
	qv := c.Request.URL.Query()
	q, err := parseFilter(qv)
	limit := 0
	if err == nil {
		limit, err = intParam(qv, "limit", 100, 1, 1000)
	}
	if err != nil {
		apiError(c, http.StatusBadRequest, "INVALID_QUERY", err.Error())
		return
	}
	hist := a.current().Histogram(q)
	if len(hist) > limit {
		rows := make([]catalog.TagCount, 0, len(hist))
		for t, n := range hist {
			rows = append(rows, catalog.TagCount{Name: t, Count: n})
		}
		slices.SortFunc(rows, func(x, y catalog.TagCount) int {
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
	filter        catalog.Filter
	sort          string
	desc          bool
	offset, limit int
}

func parseListQuery(qv url.Values) (listQuery, error) {
	var q listQuery
	var err error
	if q.filter, err = parseFilter(qv); err != nil {
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
		if !slices.Contains(catalog.SortKeys, s) {
			return q, fmt.Errorf("sort %q: want one of %s", s, strings.Join(catalog.SortKeys, ", "))
		}
		q.sort = s
	}
	switch o := qv.Get("order"); o {
	case "", "desc":
		q.desc = true
	case "asc":
	default:
		return q, fmt.Errorf("order %q: want asc or desc", o)
	}
	if _, err := boolParam(qv, "include_public", true); err != nil {
		return q, err
	}
	return q, nil
}

// parseFilter reads the tag and name filters shared by listing and refine.
// Tag lists are accepted comma-separated, repeated, or both.
func parseFilter(qv url.Values) (catalog.Filter, error) {
	var f catalog.Filter
	f.All = append(tagList(qv["include_tags"]), tagList(qv["tags_all"])...)
	f.Any = tagList(qv["tags_any"])
	f.None = append(tagList(qv["exclude_tags"]), tagList(qv["tags_none"])...)
	f.NameContains = qv.Get("name_contains")
	if n := len(f.All) + len(f.Any) + len(f.None); n > maxFilterTags {
		return f, fmt.Errorf("%d tags in filters; at most %d", n, maxFilterTags)
	}
	for _, list := range [][]string{f.All, f.Any, f.None, {f.NameContains}} {
		for _, t := range list {
			if !utf8.ValidString(t) {
				return f, errors.New("filter values must be valid UTF-8")
			}
		}
	}
	if mf := qv.Get("metadata_filter"); mf != "" {
		var m map[string]any
		if err := json.Unmarshal([]byte(mf), &m); err != nil {
			return f, errors.New("metadata_filter must be a JSON object")
		}
		// Local files carry no user metadata: a non-empty filter matches nothing.
		f.Nothing = len(m) > 0
	}
	return f, nil
}

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
			return 0, fmt.Errorf("%s %q: want an integer from %d to %d", name, s, lo, hi)
		}
		return 0, fmt.Errorf("%s %q: want an integer of at least %d", name, s, lo)
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
		return false, fmt.Errorf("%s %q: want true or false", name, s)
	}
	return b, nil
}
