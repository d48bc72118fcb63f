// Package apiv2 serves Comfy API v2 (/api/v2/jobs and /api/v2/assets, the
// contract of Comfy's official SDKs) over a ComfyUI: a second face over the
// same machinery as the Cloud API (the job source, the asset library,
// signed URLs, the websocket collector sockets).
package apiv2

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/comfyshim/comfyshim/proxy/internal/stamp"
	"github.com/comfyshim/comfyshim/proxy/jobs"
	"github.com/comfyshim/comfyshim/tagstore/assets"
)

// Options wire the v2 API to the rest of comfyshim.
type Options struct {
	Upstream  *url.URL          // ComfyUI's base URL
	Transport http.RoundTripper // to reach it
	Library   *assets.Library
	Registry  *jobs.Registry // prompts submitted through comfyshim (the v1 job API reads it)
	Dir       string         // where job records are kept
	Logger    *slog.Logger

	Retention  time.Duration // a job's expires_at, after its creation
	MaxQueue   int           // 429 queue_full at this many queued+running prompts (0: none)
	MaxStreams int           // open event streams at most
	// MaxStreamsPerOwner bounds one owner's open event streams (a key's,
	// when keys are configured), so one client cannot take them all; 0:
	// MaxStreams.
	MaxStreamsPerOwner int
	MaxUpload          int64         // largest uploaded file
	URLLifetime        time.Duration // how long a content URL is valid

	// Origin is the scheme://host clients reach comfyshim at, for
	// absolute URLs.
	Origin func(*http.Request) string
	// Owner names who a request acts for ("" without keys); jobs are
	// visible to their owner only.
	Owner func(*http.Request) string
	// ClientID is the owner's collector socket's clientId, put into
	// submitted prompts so their events reach Observe.
	ClientID func(ctx context.Context, owner string) (string, error)
	// Sign returns the query that makes a GET of path work without a key
	// until expires, or "" when there is nothing to sign with (no keys).
	Sign func(path string, expires time.Time) string

	// PollInterval is how often an open event stream re-reads ComfyUI's
	// queue (queue position, a job ComfyUI lost); 2 s.
	PollInterval time.Duration
	// KeepAlive is how often an idle event stream gets a comment, so
	// clients and proxies that drop silent streams keep it (the TypeScript
	// SDK gives up after 45 s of silence); 15 s.
	KeepAlive time.Duration
}

// API is the v2 face. Observe must be fed the collector sockets' messages.
type API struct {
	opts    Options
	log     *slog.Logger
	src     *jobs.Source
	lib     *assets.Library
	records *records
	live    *live
	streams atomic.Int64
	ownerMu sync.Mutex
	owned   map[string]int // open streams by owner
	view    *http.Client   // ComfyUI's /view, for outputs without a local file

	inflightMu sync.Mutex
	inflight   map[string]bool // owner+key of submissions being processed

	jobMu   sync.Map // job id -> *sync.Mutex: record updates of one job in order
	lookups sync.Map // job id -> *sync.Mutex: one history lookup at a time

	queueMu   sync.Mutex
	queueAt   time.Time
	queueJobs []jobs.Job

	started time.Time
	stop    chan struct{}
	done    chan struct{}
	bgMu    sync.Mutex     // orders starting a recordEnd goroutine with Close's stop
	bg      sync.WaitGroup // recordEnd goroutines, waited for by Close
}

// New opens the job records and starts the background upkeep.
func New(opts Options) (*API, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 2 * time.Second
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 15 * time.Second
	}
	if opts.Retention <= 0 {
		opts.Retention = 7 * 24 * time.Hour
	}
	if opts.URLLifetime <= 0 {
		opts.URLLifetime = 5 * time.Minute
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = 10000
	}
	if opts.MaxStreamsPerOwner <= 0 || opts.MaxStreamsPerOwner > opts.MaxStreams {
		opts.MaxStreamsPerOwner = opts.MaxStreams
	}
	recs, err := openRecords(opts.Dir, opts.Logger)
	if err != nil {
		return nil, err
	}
	a := &API{
		opts:     opts,
		log:      opts.Logger,
		src:      jobs.NewSource(opts.Upstream, opts.Transport),
		lib:      opts.Library,
		records:  recs,
		live:     newLive(),
		view:     &http.Client{Transport: opts.Transport},
		inflight: map[string]bool{},
		owned:    map[string]int{},
		started:  time.Now(),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	for _, rec := range recs.all() {
		if rec.Accepted && opts.Registry != nil {
			opts.Registry.Add(rec.ID, jobs.Submission{Owner: rec.Owner, Created: rec.Created})
		}
	}
	go a.upkeep()
	return a, nil
}

// Close stops the upkeep.
func (a *API) Close() {
	// Once stop is closed under bgMu no recordEnd starts: Wait never races
	// an Add.
	a.bgMu.Lock()
	select {
	case <-a.stop:
		a.bgMu.Unlock()
		return
	default:
		close(a.stop)
	}
	a.bgMu.Unlock()
	<-a.done
	a.bg.Wait()
}

// upkeep prunes expired records and forgets finished live jobs.
func (a *API) upkeep() {
	defer close(a.done)
	a.resolveIntents()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		a.records.prune(time.Now())
		a.live.sweep(time.Now(), a.opts.Retention)
		select {
		case <-a.stop:
			return
		case <-t.C:
		}
	}
}

// resolveIntents settles the submissions a crash interrupted (their record
// written, ComfyUI's answer not): a prompt ComfyUI has is a job; one it
// never got is forgotten, unless an Idempotency-Key lets its retry send it.
func (a *API) resolveIntents() {
	for _, rec := range a.records.all() {
		if rec.Accepted || rec.Final != nil || !rec.Created.Before(a.started) {
			continue // settled, or a submission of this run in progress
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, ok, err := a.src.Job(ctx, rec.ID)
		cancel()
		switch {
		case err != nil:
			a.log.Warn("an interrupted v2 submission could not be checked with ComfyUI", "job", rec.ID, "err", err)
		case ok:
			unlock := a.lockJob(rec.ID)
			_, err := a.records.update(rec.ID, func(r *record) { r.Accepted = true })
			unlock()
			if err == nil && a.opts.Registry != nil {
				a.opts.Registry.Add(rec.ID, jobs.Submission{Owner: rec.Owner, Created: rec.Created})
			}
		case rec.Key == "":
			a.records.drop(rec.ID)
		}
	}
}

// Observe takes a message ComfyUI sent a collector socket: text messages
// (JSON) and binary frames (previews).
func (a *API) Observe(binary bool, data []byte) {
	if binary {
		a.live.observeBinary(data)
		return
	}
	if id := a.live.observeText(data); id != "" {
		// Record the end now, not at the next read: ComfyUI's history is
		// gone after its restart, the record is not.
		a.bgMu.Lock()
		defer a.bgMu.Unlock()
		select {
		case <-a.stop:
		default:
			a.bg.Go(func() { a.recordEnd(id) })
		}
	}
}

// recordEnd puts a finished job's final state on record.
func (a *API) recordEnd(id string) {
	rec, ok := a.records.get(id)
	if !ok || rec.Final != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := a.state(ctx, rec); err != nil {
		a.log.Warn("a finished v2 job's state could not be read; the next read records it", "job", id, "err", err)
	}
}

// Mount serves the v2 routes on r.
func (a *API) Mount(r gin.IRouter) {
	r.POST("/api/v2/jobs", a.submit)
	r.GET("/api/v2/jobs/:id", a.getJob)
	r.GET("/api/v2/jobs/:id/workflow", a.getWorkflow)
	r.GET("/api/v2/jobs/:id/events", a.events)
	r.POST("/api/v2/jobs/:id/cancel", a.cancel)
	r.POST("/api/v2/assets", a.upload)
	r.POST("/api/v2/assets/from-hash", a.fromHash)
	r.HEAD("/api/v2/assets/by-hash/:hash", a.byHash)
	r.GET("/api/v2/assets/:id", a.getAsset)
	r.DELETE("/api/v2/assets/:id", a.deleteAsset)
	r.GET("/api/v2/assets/:id/content", a.content)
	r.HEAD("/api/v2/assets/:id/content", a.content)
}

// Owns says whether a request that matched no route is still this API's
// to answer (with a 404): everything under /api/v2/.
func Owns(path string) bool { return strings.HasPrefix(path, "/api/v2/") || path == "/api/v2" }

// ContentPath says whether path is an asset content URL, which a signed
// query authorises on its own.
func ContentPath(path string) bool {
	rest, ok := strings.CutPrefix(path, "/api/v2/assets/")
	if !ok {
		return false
	}
	id, ok := strings.CutSuffix(rest, "/content")
	return ok && id != "" && !strings.Contains(id, "/")
}

// Error codes of the v2 ErrorEnvelope.
const (
	codeInvalidRequest      = "invalid_request"
	codeInvalidWorkflow     = "invalid_workflow"
	codeWorkflowFormatUI    = "workflow_format_ui"
	codeMissingAsset        = "missing_asset"
	codeHashMismatch        = "hash_mismatch"
	codeBlobNotFound        = "blob_not_found"
	codeKeyReuse            = "idempotency_key_reuse"
	codeIdempotencyConflict = "idempotency_conflict"
	codeQueueFull           = "queue_full"
	codeNotFound            = "not_found"
	codeTooManyStreams      = "too_many_streams"
	codeUpstream            = "upstream_error"
)

type envelope struct {
	Error errorBody `json:"error"`
}

type errorBody struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details"`
}

// fail answers with the v2 ErrorEnvelope.
func fail(c *gin.Context, status int, code, msg string, details map[string]any) {
	if details == nil {
		details = map[string]any{}
	}
	c.Header("X-Content-Type-Options", "nosniff")
	c.Header("Cache-Control", "no-store")
	c.JSON(status, envelope{errorBody{Code: code, Message: msg, Details: details}})
	c.Abort()
}

// upstreamError answers 500 upstream_error: a generic message (as the
// contract asks), the cause in the log.
func (a *API) upstreamError(c *gin.Context, err error) {
	a.log.Warn("v2 request failed reaching ComfyUI", "path", c.Request.URL.Path, "err", err)
	fail(c, http.StatusInternalServerError, codeUpstream, "ComfyUI could not be reached or did not answer as expected", nil)
}

func retryAfter(c *gin.Context, seconds int) { c.Header("Retry-After", strconv.Itoa(seconds)) }

// openStream counts a new event stream of owner, or refuses it past
// either limit; close releases it.
func (a *API) openStream(owner string) (close func(), ok bool) {
	a.ownerMu.Lock()
	defer a.ownerMu.Unlock()
	if a.owned[owner] >= a.opts.MaxStreamsPerOwner || a.streams.Load() >= int64(a.opts.MaxStreams) {
		return nil, false
	}
	a.owned[owner]++
	a.streams.Add(1)
	return func() {
		a.ownerMu.Lock()
		defer a.ownerMu.Unlock()
		if a.owned[owner]--; a.owned[owner] == 0 {
			delete(a.owned, owner)
		}
		a.streams.Add(-1)
	}, true
}

// lockJob serialises the record updates of one job.
func (a *API) lockJob(id string) func() {
	m, _ := a.jobMu.LoadOrStore(id, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// queue returns ComfyUI's queue as read at most a second ago, and not
// before notBefore: many polls and streams share one read.
func (a *API) queue(ctx context.Context, notBefore time.Time) ([]jobs.Job, error) {
	a.queueMu.Lock()
	defer a.queueMu.Unlock()
	now := time.Now()
	if !a.queueAt.IsZero() && now.Sub(a.queueAt) < time.Second && !a.queueAt.Before(notBefore) {
		return a.queueJobs, nil
	}
	// Everyone waits for this read: bound it.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	q, err := a.src.Queue(ctx)
	if err != nil {
		return nil, err
	}
	a.queueAt, a.queueJobs = now, q
	return q, nil
}

// queueChanged drops the shared read of the queue after comfyshim changed
// it, so the next answer shows the change.
func (a *API) queueChanged() {
	a.queueMu.Lock()
	a.queueAt = time.Time{}
	a.queueMu.Unlock()
}

func writeJSON(c *gin.Context, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		fail(c, http.StatusInternalServerError, codeUpstream, "the answer could not be encoded", nil)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.Data(status, "application/json; charset=utf-8", data)
}

func itoa(n int) string { return strconv.Itoa(n) }

// rfc3339 formats t as the contract's date-time (UTC, as Zod's default
// datetime check wants it).
func rfc3339(t time.Time) string { return stamp.Millis(t) }

func timePtr(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := rfc3339(t)
	return &s
}
