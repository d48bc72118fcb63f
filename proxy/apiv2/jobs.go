package apiv2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/comfyshim/comfyshim/proxy/jobs"
	"github.com/comfyshim/comfyshim/tagstore/assets"
	"github.com/comfyshim/comfyshim/tagstore/catalog"
)

// Job statuses of the contract.
const (
	statusQueued    = "queued"
	statusRunning   = "running"
	statusSucceeded = "succeeded"
	statusCanceling = "canceling"
	statusCanceled  = "canceled"
	statusFailed    = "failed"
	statusExpired   = "expired"
)

func terminal(status string) bool {
	switch status {
	case statusSucceeded, statusCanceled, statusFailed, statusExpired:
		return true
	}
	return false
}

// maxWorkflowBody bounds a submission: ComfyUI's own request limit.
const maxWorkflowBody = 100 << 20

type jobJSON struct {
	ID            string            `json:"id"`
	Status        string            `json:"status"`
	CreatedAt     string            `json:"created_at"`
	StartedAt     *string           `json:"started_at"`
	CompletedAt   *string           `json:"completed_at"`
	ExpiresAt     string            `json:"expires_at"`
	QueuePosition *int              `json:"queue_position"`
	Progress      *progressJSON     `json:"progress"`
	Outputs       []outputJSON      `json:"outputs"`
	Error         *jobError         `json:"error"`
	Metrics       map[string]*int64 `json:"metrics"`
	URLs          jobURLs           `json:"urls"`
}

type progressJSON struct {
	Value            float64 `json:"value"`
	NodesDone        int     `json:"nodes_done"`
	NodesTotal       int     `json:"nodes_total"`
	CurrentNode      *string `json:"current_node"`
	CurrentNodeClass *string `json:"current_node_class"`
	Step             *int    `json:"step"`
	Steps            *int    `json:"steps"`
	Message          *string `json:"message"`
}

type outputJSON struct {
	NodeID       string  `json:"node_id"`
	Name         string  `json:"name"`
	Type         string  `json:"type"`
	ContentType  string  `json:"content_type"`
	SizeBytes    int64   `json:"size_bytes"`
	ID           string  `json:"id"`
	Hash         *string `json:"hash"`
	URL          string  `json:"url"`
	URLExpiresAt string  `json:"url_expires_at"`
	JobID        string  `json:"job_id"`
}

type jobURLs struct {
	Self   string `json:"self"`
	Events string `json:"events"`
	Cancel string `json:"cancel"`
}

// state is a job as established now.
type state struct {
	status   string
	position *int
	started  time.Time
	ended    time.Time
	outputs  []outputRef
	err      *jobError
	progress *progressJSON
}

// errNoJob: the record names a prompt ComfyUI never accepted.
var errNoJob = errors.New("no such job")

// state establishes where a job is: its final state if on record, else
// ComfyUI's queue (running, or queued at a position), else ComfyUI's
// history (then the final state is put on record), else cancelled if a
// cancel removed it, else lost.
func (a *API) state(ctx context.Context, rec record) (state, error) {
	if time.Now().After(rec.Expires) {
		return state{status: statusExpired}, nil
	}
	if f := rec.Final; f != nil {
		return state{status: f.Status, started: f.Started, ended: f.Completed, outputs: f.Outputs, err: f.Error, progress: finalProgress(f, rec)}, nil
	}
	lv := a.live.view(rec.ID)
	for attempt := 0; attempt < 2; attempt++ {
		// A shared read of the queue older than what the messages told
		// (started, done) is stale.
		notBefore := rec.Created
		for _, t := range []time.Time{lv.started, lv.settledAt} {
			if t.After(notBefore) {
				notBefore = t
			}
		}
		if attempt > 0 {
			notBefore = time.Now()
		}
		q, err := a.queue(ctx, notBefore)
		if err != nil {
			return state{}, err
		}
		pending := 0
		for _, j := range q {
			if j.ID == rec.ID {
				if j.Status == jobs.StatusInProgress {
					st := state{status: statusRunning, started: lv.started, outputs: lv.outputs, progress: lv.progress}
					if st.started.IsZero() && j.StartTime > 0 {
						st.started = time.UnixMilli(j.StartTime)
					}
					if rec.CancelRequested {
						st.status = statusCanceling
					}
					if st.progress == nil {
						st.progress = &progressJSON{NodesTotal: len(rec.Nodes)}
					}
					return st, nil
				}
				pos := pending
				return state{status: statusQueued, position: &pos}, nil
			}
			if j.Status == jobs.StatusPending {
				pending++
			}
		}
		if st, done, err := a.settle(ctx, rec.ID); done || err != nil {
			return st, err
		}
	}
	// Neither queued nor in the history: ComfyUI restarted, or its history
	// was cleared, before comfyshim saw the end.
	return a.finish(rec, &snapshot{Status: statusFailed, Completed: time.Now(), Error: &jobError{Code: "job_lost",
		Message: "ComfyUI no longer knows this job (restarted, or its history was cleared) and its outcome was not seen"}})
}

// settle reads a job that is not in ComfyUI's queue from its history, once
// for all its concurrent readers (a thousand streams wake at its end): the
// first puts the final state on record, the others find it there. done is
// false when ComfyUI has it in neither place.
func (a *API) settle(ctx context.Context, id string) (st state, done bool, err error) {
	m, _ := a.lookups.LoadOrStore(id, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	defer mu.Unlock()
	rec, ok := a.records.get(id)
	switch {
	case !ok:
		return state{}, true, errNoJob
	case rec.Final != nil:
		st, err = a.state(ctx, rec)
		return st, true, err
	}
	j, ok, err := a.src.Job(ctx, id)
	switch {
	case err != nil:
		return state{}, true, err
	case ok && (j.Status == jobs.StatusCompleted || j.Status == jobs.StatusFailed || j.Status == jobs.StatusCancelled):
		st, err = a.finish(rec, finalOf(j))
		return st, true, err
	case ok:
		return state{}, false, nil // between the queue and the history: read again
	case !rec.Accepted:
		return state{}, true, errNoJob
	case rec.CancelRequested:
		st, err = a.finish(rec, &snapshot{Status: statusCanceled, Completed: time.Now()})
		return st, true, err
	}
	return state{}, false, nil
}

// finish puts a job's final state on record.
func (a *API) finish(rec record, f *snapshot) (state, error) {
	unlock := a.lockJob(rec.ID)
	cur, ok := a.records.get(rec.ID)
	if ok && cur.Final == nil {
		if _, err := a.records.update(rec.ID, func(r *record) { r.Final = f }); err != nil {
			a.log.Warn("job's final state not recorded", "job", rec.ID, "err", err)
		}
	} else if ok {
		f = cur.Final
	}
	unlock()
	a.live.forget(rec.ID)
	return state{status: f.Status, started: f.Started, ended: f.Completed, outputs: f.Outputs, err: f.Error, progress: finalProgress(f, rec)}, nil
}

func finalProgress(f *snapshot, rec record) *progressJSON {
	if f.Status != statusSucceeded {
		return nil
	}
	return &progressJSON{Value: 1, NodesDone: len(rec.Nodes), NodesTotal: len(rec.Nodes)}
}

// finalOf reads a finished prompt as ComfyUI's job source reports it.
func finalOf(j jobs.Job) *snapshot {
	f := &snapshot{Status: statusSucceeded}
	switch j.Status {
	case jobs.StatusFailed:
		f.Status = statusFailed
		raw, _ := json.Marshal(j.Error)
		f.Error = executionError(raw)
	case jobs.StatusCancelled:
		f.Status = statusCanceled
	}
	if j.StartTime > 0 {
		f.Started = time.UnixMilli(j.StartTime)
	}
	if j.EndTime > 0 {
		f.Completed = time.UnixMilli(j.EndTime)
	} else {
		f.Completed = time.Now()
	}
	nodes := make([]string, 0, len(j.Outputs))
	for n := range j.Outputs {
		nodes = append(nodes, n)
	}
	sortNodeIDs(nodes)
	for _, n := range nodes {
		raw, _ := json.Marshal(j.Outputs[n])
		f.Outputs = append(f.Outputs, parseOutputs(n, raw)...)
	}
	return f
}

// jobView renders a job.
func (a *API) jobView(r *http.Request, rec record, st state) jobJSON {
	base := "/api/v2/jobs/" + rec.ID
	j := jobJSON{
		ID: rec.ID, Status: st.status, CreatedAt: rfc3339(rec.Created), ExpiresAt: rfc3339(rec.Expires),
		StartedAt: timePtr(st.started), CompletedAt: timePtr(st.ended), QueuePosition: st.position,
		Progress: st.progress, Error: st.err, Outputs: []outputJSON{},
		URLs:    jobURLs{Self: base, Events: base + "/events", Cancel: base + "/cancel"},
		Metrics: map[string]*int64{"queue_ms": nil, "execution_ms": nil},
	}
	if !st.started.IsZero() {
		q := st.started.Sub(rec.Created).Milliseconds()
		j.Metrics["queue_ms"] = &q
		if !st.ended.IsZero() {
			e := st.ended.Sub(st.started).Milliseconds()
			j.Metrics["execution_ms"] = &e
		}
	}
	if st.status != statusExpired {
		for _, o := range st.outputs {
			j.Outputs = append(j.Outputs, a.outputView(r, rec.ID, o))
		}
	}
	return j
}

// outputView renders one output as the asset it is.
func (a *API) outputView(r *http.Request, jobID string, o outputRef) outputJSON {
	id := assets.IDOf(o.Root, o.Rel)
	name := path.Base(o.Rel)
	ct := catalog.MIMEType(name)
	out := outputJSON{NodeID: o.NodeID, Name: name, Type: outputType(o.Kind, ct), ContentType: ct, ID: id, JobID: jobID}
	if x, ok := a.lib.Get(id); ok && !x.Missing {
		out.SizeBytes = x.Size
		if h, ok := a.lib.Hash(x); ok {
			out.Hash = &h
		}
	} else if f, err := a.lib.Stat(o.Root, o.Rel); err == nil {
		out.SizeBytes = f.Size
	} else if n, ok := a.remoteSize(r.Context(), o); ok {
		out.SizeBytes = n
	}
	out.URL, out.URLExpiresAt = a.contentURL(r, id)
	return out
}

// outputType is the contract's kind of an output, from the key ComfyUI
// listed it under and its MIME type.
func outputType(kind, mime string) string {
	switch {
	case kind == "latents" || path.Ext(mime) == ".latent":
		return "latent"
	case len(mime) > 6 && mime[:6] == "image/":
		return "image"
	case len(mime) > 6 && mime[:6] == "video/", kind == "gifs" || kind == "video" || kind == "videos":
		return "video"
	case len(mime) > 6 && mime[:6] == "audio/", kind == "audio":
		return "audio"
	case len(mime) > 5 && mime[:5] == "text/":
		return "text"
	}
	return "file"
}

// contentURL is an absolute URL of an asset's bytes, signed (working
// without a key until it expires) when there are keys.
func (a *API) contentURL(r *http.Request, id string) (string, string) {
	p := "/api/v2/assets/" + id + "/content"
	exp := time.Now().Add(a.opts.URLLifetime)
	u := a.opts.Origin(r) + p
	if a.opts.Sign != nil {
		if q := a.opts.Sign(p, exp); q != "" {
			u += "?" + q
		}
	}
	return u, rfc3339(exp)
}

// lookup returns the caller's record of the job in the path, or answers
// 404 (another owner's job is as absent as an unknown one).
func (a *API) lookup(c *gin.Context) (record, bool) {
	id := c.Param("id")
	rec, ok := a.records.get(id)
	if !ok || rec.Owner != a.opts.Owner(c.Request) || (!rec.Accepted && rec.Final == nil) {
		fail(c, http.StatusNotFound, codeNotFound, "no job "+id, nil)
		return record{}, false
	}
	return rec, true
}

func (a *API) getJob(c *gin.Context) {
	rec, ok := a.lookup(c)
	if !ok {
		return
	}
	st, err := a.state(c.Request.Context(), rec)
	if err != nil {
		a.refuse(c, err)
		return
	}
	writeJSON(c, http.StatusOK, a.jobView(c.Request, rec, st))
}

// getWorkflow answers the graph ComfyUI ran (core/ASSET references
// resolved): format "api".
func (a *API) getWorkflow(c *gin.Context) {
	rec, ok := a.lookup(c)
	if !ok {
		return
	}
	wf, err := a.records.workflow(rec.ID)
	if err != nil {
		fail(c, http.StatusNotFound, codeNotFound, "the workflow of this job is no longer kept", nil)
		return
	}
	writeJSON(c, http.StatusOK, struct {
		Workflow json.RawMessage `json:"workflow"`
		Format   string          `json:"format"`
	}{wf, "api"})
}

// submit is POST /api/v2/jobs.
func (a *API) submit(c *gin.Context) {
	r := c.Request
	body, err := io.ReadAll(io.LimitReader(r.Body, maxWorkflowBody+1))
	if err != nil {
		fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, "the request body could not be read", nil)
		return
	}
	if len(body) > maxWorkflowBody {
		fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, fmt.Sprintf("a submission may be at most %d bytes", maxWorkflowBody), nil)
		return
	}
	sub, err := parseSubmission(body)
	if err != nil {
		a.refuse(c, err)
		return
	}
	owner := a.opts.Owner(r)
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 255 {
		fail(c, http.StatusUnprocessableEntity, codeInvalidRequest, "Idempotency-Key is longer than 255 characters", nil)
		return
	}
	sum := sha256.Sum256(sub.raw)
	fp := hex.EncodeToString(sum[:])
	id := uuid.NewString()
	if key != "" {
		slot := owner + "\x00" + key
		a.inflightMu.Lock()
		busy := a.inflight[slot]
		a.inflight[slot] = true
		a.inflightMu.Unlock()
		if busy {
			retryAfter(c, 1)
			fail(c, http.StatusConflict, codeIdempotencyConflict, "a request with this Idempotency-Key is being processed; retry shortly", nil)
			return
		}
		defer func() {
			a.inflightMu.Lock()
			delete(a.inflight, slot)
			a.inflightMu.Unlock()
		}()
		if prev, ok := a.records.byIdempotencyKey(owner, key, time.Now()); ok {
			if prev.Fingerprint != fp {
				fail(c, http.StatusUnprocessableEntity, codeKeyReuse, "this Idempotency-Key was used with a different workflow", nil)
				return
			}
			if prev.Accepted && len(prev.Response) == 0 {
				// Accepted by the check at start, answered never: answer now.
				a.accepted(c, prev, true)
				return
			}
			if prev.Accepted {
				c.Header("Idempotency-Replayed", "true")
				c.Header("Cache-Control", "no-store")
				c.Data(http.StatusCreated, "application/json; charset=utf-8", prev.Response)
				return
			}
			// A submission interrupted by a crash: did ComfyUI get it?
			if _, ok, err := a.src.Job(r.Context(), prev.ID); err != nil {
				a.upstreamError(c, err)
				return
			} else if ok {
				a.accepted(c, prev, true)
				return
			}
			id = prev.ID // not sent after all: send it now, under the same id
		}
	}
	if a.opts.MaxQueue > 0 {
		q, err := a.queue(r.Context(), time.Now())
		if err != nil {
			a.upstreamError(c, err)
			return
		}
		if len(q) >= a.opts.MaxQueue {
			retryAfter(c, 5)
			fail(c, http.StatusTooManyRequests, codeQueueFull, fmt.Sprintf("ComfyUI has %d prompts queued or running (the limit is %d)", len(q), a.opts.MaxQueue), nil)
			return
		}
	}
	graph, err := resolveAssets(sub, a.lib)
	if err != nil {
		a.refuse(c, err)
		return
	}
	now := time.Now()
	rec := record{ID: id, Owner: owner, Created: now, Expires: now.Add(a.opts.Retention), Key: key, Fingerprint: fp, Nodes: sub.nodes}
	if err := a.records.putWorkflow(id, graph); err != nil {
		a.storeError(c, err)
		return
	}
	// The intent is on disk before ComfyUI sees the prompt: a retry after a
	// crash finds it (by its key), and so does the check at start.
	if err := a.records.put(rec); err != nil {
		a.storeError(c, err)
		return
	}
	prompt := map[string]any{"prompt": graph, "prompt_id": id}
	if cid, err := a.opts.ClientID(r.Context(), owner); err == nil {
		prompt["client_id"] = cid
	} else {
		a.log.Warn("v2 job submitted without live events: no socket to ComfyUI", "err", err)
	}
	if len(sub.extra) > 0 {
		prompt["extra_data"] = sub.extra
	}
	payload, _ := json.Marshal(prompt)
	a.live.register(id, sub.nodes)
	// A client that goes away does not cut the submission short: it is
	// recorded either way, and its retry replays it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), time.Minute)
	defer cancel()
	status, answer, err := a.src.Post(ctx, "/prompt", payload)
	switch {
	case err != nil && key != "":
		// ComfyUI's answer was lost, not its decision: it may have the
		// prompt. The intent stays, so a retry with this key asks ComfyUI
		// for this id (as after a crash) instead of sending it again.
		a.upstreamError(c, err)
		return
	case err == nil && status == http.StatusOK:
		a.queueChanged()
		rec.Accepted = true
		a.accepted(c, rec, false)
		return
	case err == nil && status == http.StatusBadRequest:
		err = comfyValidation(answer)
	case err == nil:
		err = fmt.Errorf("ComfyUI answered the prompt with %d: %.200s", status, bytes.TrimSpace(answer))
	}
	a.live.forget(id)
	a.records.drop(id)
	a.refuse(c, err)
}

// accepted records a job ComfyUI took and answers 201 (replayed: a retry
// that found it there).
func (a *API) accepted(c *gin.Context, rec record, replayed bool) {
	rec.Accepted = true
	st := state{status: statusQueued}
	if s, err := a.state(c.Request.Context(), rec); err == nil {
		st = s
	}
	view := a.jobView(c.Request, rec, st)
	body, _ := json.Marshal(view)
	rec.Response = body
	unlock := a.lockJob(rec.ID)
	if cur, ok := a.records.get(rec.ID); ok && cur.Final != nil {
		rec.Final = cur.Final // it may have ended already
	}
	err := a.records.put(rec)
	unlock()
	if err != nil {
		// Not durable, so not acknowledged: take it back out of the queue.
		_, _, _ = a.src.Post(context.WithoutCancel(c.Request.Context()), "/queue", []byte(`{"delete":["`+rec.ID+`"]}`))
		a.records.drop(rec.ID)
		a.storeError(c, err)
		return
	}
	if a.opts.Registry != nil {
		a.opts.Registry.Add(rec.ID, jobs.Submission{Owner: rec.Owner, Created: rec.Created})
	}
	if replayed {
		c.Header("Idempotency-Replayed", "true")
	}
	c.Header("Location", view.URLs.Self)
	c.Header("Cache-Control", "no-store")
	c.Data(http.StatusCreated, "application/json; charset=utf-8", body)
}

func (a *API) storeError(c *gin.Context, err error) {
	a.log.Error("v2 job record could not be written", "err", err)
	fail(c, http.StatusInternalServerError, codeUpstream, "the job could not be recorded durably", nil)
}

// refuse answers a job request's error: 422 with its code for a refused
// submission, 404 for a job ComfyUI never took, 500 when ComfyUI failed.
func (a *API) refuse(c *gin.Context, err error) {
	var re *requestError
	switch {
	case errors.As(err, &re):
		fail(c, http.StatusUnprocessableEntity, re.code, re.msg, re.details)
	case errors.Is(err, errNoJob):
		fail(c, http.StatusNotFound, codeNotFound, "no job "+c.Param("id"), nil)
	default:
		a.upstreamError(c, err)
	}
}

// cancel is POST /api/v2/jobs/{id}/cancel: a queued job is removed from
// ComfyUI's queue, a running one interrupted (only if it is still the one
// running). Idempotent: a finished job answers its final state.
func (a *API) cancel(c *gin.Context) {
	rec, ok := a.lookup(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	st, err := a.state(ctx, rec)
	if err != nil {
		a.refuse(c, err)
		return
	}
	if !terminal(st.status) {
		unlock := a.lockJob(rec.ID)
		rec, err = a.records.update(rec.ID, func(r *record) { r.CancelRequested = true })
		unlock()
		if err != nil {
			a.storeError(c, err)
			return
		}
		if st.status == statusQueued {
			if _, _, err := a.src.Post(ctx, "/queue", []byte(`{"delete":["`+rec.ID+`"]}`)); err != nil {
				a.upstreamError(c, err)
				return
			}
			a.queueChanged()
		}
		if st, err = a.state(ctx, rec); err == nil && (st.status == statusRunning || st.status == statusCanceling) {
			body, _ := json.Marshal(map[string]string{"prompt_id": rec.ID})
			_, _, err = a.src.Post(ctx, "/interrupt", body)
		}
		if err != nil {
			a.refuse(c, err)
			return
		}
		a.live.poke(rec.ID)
	}
	writeJSON(c, http.StatusOK, a.jobView(c.Request, rec, st))
}

// sortNodeIDs orders node ids numerically where they are numbers.
func sortNodeIDs(ids []string) {
	sort.Slice(ids, func(i, j int) bool {
		a, ea := strconv.Atoi(ids[i])
		b, eb := strconv.Atoi(ids[j])
		if ea == nil && eb == nil {
			return a < b
		}
		return ids[i] < ids[j]
	})
}
