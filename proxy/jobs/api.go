// Package jobs serves Comfy Cloud's job API over a ComfyUI: job status,
// job lists and details, history_v2, the queue and the user, read from
// ComfyUI's own routes and answered in Cloud's shapes.
package jobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/comfyshim/comfyshim/proxy/apierror"
)

// Options wire the job API to the rest of comfyshim.
type Options struct {
	Upstream  *url.URL          // ComfyUI's base URL
	Transport http.RoundTripper // to reach it
	Registry  *Registry         // prompts submitted through comfyshim
	MaxBody   int64             // bound on JSON request bodies
	// UserID names the caller for /api/user without revealing its key.
	UserID func(*http.Request) string
}

type api struct {
	src  *source
	opts Options
}

// Mount serves the job routes on r.
func Mount(r gin.IRouter, opts Options) {
	a := &api{src: &source{base: opts.Upstream, client: &http.Client{Transport: opts.Transport}}, opts: opts}
	r.GET("/api/job/:id/status", a.status)
	r.GET("/api/jobs", a.list)
	r.GET("/api/jobs/:id", a.detail)
	r.GET("/api/history_v2", a.historyList)
	r.GET("/api/history_v2/:id", a.historyOne)
	r.GET("/api/user", a.user)
	r.POST("/api/queue", a.manageQueue)
}

// Owns says whether a request that matched no route is still the job API's
// to answer (with a 404): reads under its paths. ComfyUI's own job routes
// (POST /api/jobs/{id}/cancel and the like) stay ComfyUI's.
func Owns(method, path string) bool {
	if method != http.MethodGet && method != http.MethodHead {
		return false
	}
	for _, p := range []string{"/api/jobs/", "/api/job/", "/api/history_v2/"} {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

func fail(c *gin.Context, status int, code, msg string) {
	apierror.Write(c.Writer, status, code, msg)
	c.Abort()
}

func upstreamFailed(c *gin.Context, err error) {
	if errors.Is(err, errUpstream) {
		fail(c, http.StatusBadGateway, "UPSTREAM_UNAVAILABLE", err.Error())
		return
	}
	fail(c, http.StatusBadGateway, "UPSTREAM_UNAVAILABLE", "ComfyUI could not be asked: "+err.Error())
}

// validID accepts the ids ComfyUI gives prompts (UUIDs, or what a client
// chose as prompt_id): anything else cannot name a job and is a 404, never
// a path sent on to ComfyUI.
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// find returns the job with id: from ComfyUI, else, for a prompt submitted
// through comfyshim that ComfyUI no longer knows (deleted from its queue),
// a cancelled job.
func (a *api) find(c *gin.Context, detail bool) (Job, bool) {
	id := c.Param("id")
	if !validID(id) {
		fail(c, http.StatusNotFound, "NOT_FOUND", "no job with id "+strconv.Quote(id))
		return Job{}, false
	}
	j, ok, err := a.src.job(c.Request.Context(), id)
	if err != nil {
		upstreamFailed(c, err)
		return Job{}, false
	}
	if ok {
		if j.CreateTime == 0 {
			if s, ok := a.opts.Registry.Get(id); ok {
				j.CreateTime = s.Created.UnixMilli()
			}
		}
		return j, true
	}
	if s, ok := a.opts.Registry.Get(id); ok {
		return Job{ID: id, Status: StatusCancelled, CreateTime: s.Created.UnixMilli(), Detail: detail}, true
	}
	fail(c, http.StatusNotFound, "NOT_FOUND", "no job with id "+strconv.Quote(id))
	return Job{}, false
}

func rfc3339(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}

// updated is when the job last changed, as far as ComfyUI tells.
func (j Job) updated() int64 {
	return max(j.CreateTime, j.StartTime, j.EndTime)
}

// status answers Cloud's JobStatusResponse with Cloud's raw states.
func (a *api) status(c *gin.Context) {
	j, ok := a.find(c, false)
	if !ok {
		return
	}
	var errMsg *string
	if m := j.ErrorMessage(); m != "" {
		errMsg = &m
	}
	c.JSON(http.StatusOK, gin.H{
		"id":                 j.ID,
		"status":             j.CloudState(),
		"created_at":         rfc3339(j.CreateTime),
		"updated_at":         rfc3339(j.updated()),
		"last_state_update":  rfc3339(j.updated()),
		"assigned_inference": nil,
		"error_message":      errMsg,
	})
}

// jobJSON is a job as /api/jobs answers it: ComfyUI's shape, which is also
// Cloud's (times in milliseconds, as both send them).
type jobJSON struct {
	ID                 string         `json:"id"`
	Status             string         `json:"status"`
	Priority           any            `json:"priority,omitempty"`
	CreateTime         int64          `json:"create_time"`
	UpdateTime         *int64         `json:"update_time,omitempty"`
	ExecutionStartTime int64          `json:"execution_start_time,omitempty"`
	ExecutionEndTime   int64          `json:"execution_end_time,omitempty"`
	ExecutionError     map[string]any `json:"execution_error,omitempty"`
	OutputsCount       *int           `json:"outputs_count,omitempty"`
	PreviewOutput      map[string]any `json:"preview_output,omitempty"`
	WorkflowID         string         `json:"workflow_id,omitempty"`
	Workflow           map[string]any `json:"workflow,omitempty"`
	Outputs            map[string]any `json:"outputs,omitempty"`
	ExecutionStatus    map[string]any `json:"execution_status,omitempty"`
	ExecutionMeta      map[string]any `json:"execution_meta,omitempty"`
}

func render(j Job, detail bool) jobJSON {
	out := jobJSON{ID: j.ID, Status: j.Status, Priority: j.Priority, CreateTime: j.CreateTime, WorkflowID: j.WorkflowID}
	if detail {
		u := j.updated()
		out.UpdateTime = &u
		out.Workflow = j.Workflow
	}
	if !j.terminal() {
		return out
	}
	n := j.OutputsCount
	out.OutputsCount = &n
	out.ExecutionStartTime, out.ExecutionEndTime = j.StartTime, j.EndTime
	out.PreviewOutput = j.PreviewOutput
	if j.Error != nil {
		out.ExecutionError = executionError(j.Error)
	}
	if detail {
		out.Outputs, out.ExecutionStatus, out.ExecutionMeta = j.Outputs, j.ExecutionStatus, j.ExecutionMeta
		if out.Outputs == nil {
			out.Outputs = map[string]any{}
		}
	}
	return out
}

// executionError is ComfyUI's execution_error message with every field
// Cloud's ExecutionError requires present.
func executionError(e map[string]any) map[string]any {
	out := make(map[string]any, len(e)+4)
	for k, v := range e {
		out[k] = v
	}
	for k, def := range map[string]any{"node_id": "", "node_type": "", "exception_message": "", "exception_type": "",
		"traceback": []any{}, "current_inputs": map[string]any{}, "current_outputs": map[string]any{}} {
		if out[k] == nil {
			out[k] = def
		}
	}
	if id, ok := out["node_id"].(float64); ok { // some releases send node ids as numbers
		out["node_id"] = strconv.FormatFloat(id, 'f', -1, 64)
	}
	return out
}

func (a *api) detail(c *gin.Context) {
	j, ok := a.find(c, true)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, render(j, true))
}

// listQuery is GET /api/jobs's query, checked.
type listQuery struct {
	statuses   []string
	workflowID string
	outputType string
	byDuration bool
	asc        bool
	offset     int
	limit      int
}

func parseListQuery(q url.Values) (listQuery, error) {
	lq := listQuery{limit: 100}
	for _, name := range []string{"status", "workflow_id", "output_type", "sort_by", "sort_order", "offset", "limit"} {
		if len(q[name]) > 1 {
			return lq, fmt.Errorf("%s given more than once", name)
		}
	}
	if s := q.Get("status"); s != "" {
		for _, st := range strings.Split(s, ",") {
			st = strings.TrimSpace(st)
			if !slices.Contains(allStatuses, st) {
				return lq, fmt.Errorf("status %q is not one of %s", st, strings.Join(allStatuses, ", "))
			}
			lq.statuses = append(lq.statuses, st)
		}
	}
	lq.workflowID = q.Get("workflow_id")
	switch lq.outputType = q.Get("output_type"); lq.outputType {
	case "", "image", "video", "audio":
	default:
		return lq, fmt.Errorf("output_type must be image, video or audio")
	}
	switch q.Get("sort_by") {
	case "", "create_time":
	case "execution_time":
		lq.byDuration = true
	default:
		return lq, fmt.Errorf("sort_by must be create_time or execution_time")
	}
	switch q.Get("sort_order") {
	case "", "desc":
	case "asc":
		lq.asc = true
	default:
		return lq, fmt.Errorf("sort_order must be asc or desc")
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 10_000_000 {
			return lq, fmt.Errorf("offset must be an integer from 0 to 10000000")
		}
		lq.offset = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return lq, fmt.Errorf("limit must be an integer from 1 to 1000")
		}
		lq.limit = n
	}
	return lq, nil
}

func (lq listQuery) keep(j Job) bool {
	if len(lq.statuses) > 0 && !slices.Contains(lq.statuses, j.Status) {
		return false
	}
	if lq.workflowID != "" && j.WorkflowID != lq.workflowID {
		return false
	}
	if lq.outputType != "" && mediaKind(j.PreviewOutput) != lq.outputType {
		return false
	}
	return true
}

func (a *api) list(c *gin.Context) {
	lq, err := parseListQuery(c.Request.URL.Query())
	if err != nil {
		fail(c, http.StatusBadRequest, "INVALID_QUERY", err.Error())
		return
	}
	all, err := a.src.all(c.Request.Context())
	if err != nil {
		upstreamFailed(c, err)
		return
	}
	kept := all[:0]
	for _, j := range all {
		if lq.keep(j) {
			kept = append(kept, j)
		}
	}
	key := func(j Job) int64 {
		if lq.byDuration {
			if j.StartTime > 0 && j.EndTime > 0 {
				return j.EndTime - j.StartTime
			}
			return 0
		}
		return j.CreateTime
	}
	sort.SliceStable(kept, func(x, y int) bool {
		kx, ky := key(kept[x]), key(kept[y])
		if kx == ky {
			return kept[x].ID < kept[y].ID
		}
		return (kx < ky) == lq.asc
	})
	total := len(kept)
	page := kept[min(lq.offset, total):]
	page = page[:min(lq.limit, len(page))]
	out := make([]jobJSON, len(page))
	for i, j := range page {
		out[i] = render(j, false)
	}
	c.JSON(http.StatusOK, gin.H{
		"jobs":       out,
		"pagination": gin.H{"offset": lq.offset, "limit": lq.limit, "total": total, "has_more": lq.offset+len(page) < total},
	})
}

// historyList is /api/history_v2: ComfyUI's /history as an array, newest
// first, the workflow removed from extra_pnginfo.
func (a *api) historyList(c *gin.Context) {
	q := c.Request.URL.Query()
	offset, maxItems := 0, -1
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 10_000_000 {
			fail(c, http.StatusBadRequest, "INVALID_QUERY", "offset must be an integer from 0 to 10000000")
			return
		}
		offset = n
	}
	if v := q.Get("max_items"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			fail(c, http.StatusBadRequest, "INVALID_QUERY", "max_items must be a non-negative integer")
			return
		}
		maxItems = n
	}
	hist, err := a.src.history(c.Request.Context())
	if err != nil {
		upstreamFailed(c, err)
		return
	}
	type entry struct {
		id     string
		create int64
		item   historyItem
	}
	entries := make([]entry, 0, len(hist))
	for id, h := range hist {
		var extra map[string]any
		if len(h.Prompt) >= 4 {
			_ = json.Unmarshal(h.Prompt[3], &extra)
		}
		create, _ := extraMetadata(extra)
		entries = append(entries, entry{id, create, h})
	}
	sort.Slice(entries, func(x, y int) bool {
		if entries[x].create == entries[y].create {
			return entries[x].id < entries[y].id
		}
		return entries[x].create > entries[y].create
	})
	entries = entries[min(offset, len(entries)):]
	if maxItems >= 0 && maxItems < len(entries) {
		entries = entries[:maxItems]
	}
	out := make([]gin.H, 0, len(entries))
	for _, e := range entries {
		var priority any
		var extra map[string]any
		if len(e.item.Prompt) >= 4 {
			_ = json.Unmarshal(e.item.Prompt[0], &priority)
			_ = json.Unmarshal(e.item.Prompt[3], &extra)
		}
		create, workflowID := extraMetadata(extra)
		if info, ok := extra["extra_pnginfo"].(map[string]any); ok {
			trimmed := make(map[string]any, len(info))
			for k, v := range info {
				if k != "workflow" {
					trimmed[k] = v
				}
			}
			extra["extra_pnginfo"] = trimmed
		}
		h := gin.H{
			"prompt_id": e.id,
			"prompt":    gin.H{"priority": priority, "prompt_id": e.id, "extra_data": orEmpty(extra)},
			"outputs":   orEmpty(e.item.Outputs),
			"status":    orEmpty(e.item.Status),
			"meta":      orEmpty(e.item.Meta),
		}
		if create > 0 {
			h["create_time"] = create
		}
		if workflowID != "" {
			h["workflow_id"] = workflowID
		}
		out = append(out, h)
	}
	c.JSON(http.StatusOK, gin.H{"history": out})
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// historyOne is /api/history_v2/{prompt_id}: ComfyUI's /history/{id} with
// the prompt tuple spelled out.
func (a *api) historyOne(c *gin.Context) {
	id := c.Param("id")
	if !validID(id) {
		fail(c, http.StatusNotFound, "NOT_FOUND", "no history for prompt "+strconv.Quote(id))
		return
	}
	var hist map[string]historyItem
	if err := a.src.getJSON(c.Request.Context(), "/history/"+id, &hist); err != nil {
		upstreamFailed(c, err)
		return
	}
	h, ok := hist[id]
	if !ok {
		fail(c, http.StatusNotFound, "NOT_FOUND", "no history for prompt "+strconv.Quote(id))
		return
	}
	p := gin.H{"prompt_id": id}
	fields := []string{"priority", "prompt_id", "prompt", "extra_data", "outputs_to_execute"}
	for i, raw := range h.Prompt {
		if i < len(fields) && i != 1 {
			var v any
			if json.Unmarshal(raw, &v) == nil && v != nil {
				p[fields[i]] = v
			}
		}
	}
	c.JSON(http.StatusOK, gin.H{id: gin.H{"prompt": p, "outputs": orEmpty(h.Outputs), "status": orEmpty(h.Status), "meta": orEmpty(h.Meta)}})
}

// user answers Cloud's UserResponse for the local installation: always
// active, with an id derived from the credential (no personal data).
func (a *api) user(c *gin.Context) {
	id := "local"
	if a.opts.UserID != nil {
		id = a.opts.UserID(c.Request)
	}
	c.JSON(http.StatusOK, gin.H{"status": "active", "id": id})
}

// manageQueue is Cloud's POST /api/queue: ComfyUI does the work; the answer
// says which of the named prompts were pending and so were deleted.
func (a *api) manageQueue(c *gin.Context) {
	var req struct {
		Delete []string `json:"delete"`
		Clear  bool     `json:"clear"`
	}
	body, err := io.ReadAll(io.LimitReader(c.Request.Body, a.opts.MaxBody+1))
	if err != nil {
		fail(c, http.StatusBadRequest, "INVALID_BODY", "the body could not be read")
		return
	}
	if int64(len(body)) > a.opts.MaxBody {
		fail(c, http.StatusRequestEntityTooLarge, "BODY_TOO_LARGE", fmt.Sprintf("the body exceeds %d bytes", a.opts.MaxBody))
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		fail(c, http.StatusBadRequest, "INVALID_BODY", "the body must be a JSON object with delete (an array of job ids) and/or clear (a boolean)")
		return
	}
	for _, id := range req.Delete {
		if !validID(id) {
			fail(c, http.StatusBadRequest, "INVALID_BODY", "not a job id: "+strconv.Quote(id))
			return
		}
	}
	before, err := a.src.queue(c.Request.Context())
	if err != nil {
		upstreamFailed(c, err)
		return
	}
	fwd, _ := json.Marshal(gin.H{"delete": orNone(req.Delete), "clear": req.Clear})
	status, _, err := a.src.get(c.Request.Context(), http.MethodPost, "/queue", fwd)
	if err != nil {
		upstreamFailed(c, err)
		return
	}
	if status != http.StatusOK {
		fail(c, http.StatusBadGateway, "UPSTREAM_UNAVAILABLE", fmt.Sprintf("ComfyUI answered POST /queue with %d", status))
		return
	}
	deleted := []string{}
	for _, j := range before {
		if j.Status == StatusPending && (req.Clear || slices.Contains(req.Delete, j.ID)) {
			deleted = append(deleted, j.ID)
		}
	}
	c.JSON(http.StatusOK, gin.H{"deleted": deleted, "cleared": req.Clear})
}

func orNone(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
