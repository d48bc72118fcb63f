package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// source reads jobs from ComfyUI: from its /api/jobs routes when it has them
// (0.33+), else from /history and /queue, which every release has. Either
// way the result is the same Job values.
type source struct {
	base   *url.URL
	client *http.Client
	// noJobsAPI holds the time (unix ns) ComfyUI last answered /api/jobs
	// with its empty "no such route" 404; it is asked again a minute later,
	// so an upgrade is noticed without a restart.
	noJobsAPI atomic.Int64
}

// maxUpstreamBody bounds what one upstream answer may cost in memory.
// ComfyUI keeps at most 10,000 history entries.
const maxUpstreamBody = 256 << 20

var errUpstream = errors.New("ComfyUI did not answer as expected")

// get fetches path from ComfyUI and returns its status and body.
func (s *source) get(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	u := *s.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawPath = ""
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %v", errUpstream, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody+1))
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %v", errUpstream, err)
	}
	if len(data) > maxUpstreamBody {
		return 0, nil, fmt.Errorf("%w: answer larger than %d bytes", errUpstream, maxUpstreamBody)
	}
	return resp.StatusCode, data, nil
}

func (s *source) getJSON(ctx context.Context, path string, v any) error {
	status, data, err := s.get(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("%w: GET %s: status %d", errUpstream, path, status)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: GET %s: %v", errUpstream, path, err)
	}
	return nil
}

// hasJobsAPI says whether to try ComfyUI's /api/jobs.
func (s *source) hasJobsAPI() bool {
	t := s.noJobsAPI.Load()
	return t == 0 || time.Since(time.Unix(0, t)) > time.Minute
}

// absent says whether a 404 is aiohttp's "no such route" (an empty body)
// rather than a JSON "no such job".
func absent(status int, body []byte) bool {
	return status == http.StatusNotFound && len(bytes.TrimSpace(body)) == 0
}

// job returns one job, or ok=false when ComfyUI knows no such id.
func (s *source) job(ctx context.Context, id string) (Job, bool, error) {
	if s.hasJobsAPI() {
		status, data, err := s.get(ctx, http.MethodGet, "/api/jobs/"+id, nil)
		switch {
		case err != nil:
			return Job{}, false, err
		case status == http.StatusOK:
			var raw map[string]any
			if err := json.Unmarshal(data, &raw); err != nil {
				return Job{}, false, fmt.Errorf("%w: /api/jobs/{id}: %v", errUpstream, err)
			}
			return fromJobsAPI(raw), true, nil
		case absent(status, data):
			s.noJobsAPI.Store(time.Now().UnixNano())
		case status == http.StatusNotFound:
			return Job{}, false, nil
		default:
			return Job{}, false, fmt.Errorf("%w: /api/jobs/{id}: status %d", errUpstream, status)
		}
	}
	fromHist := func() (Job, bool, error) {
		var hist map[string]historyItem
		if err := s.getJSON(ctx, "/history/"+id, &hist); err != nil {
			return Job{}, false, err
		}
		h, ok := hist[id]
		if !ok {
			return Job{}, false, nil
		}
		return fromHistory(id, h, true), true, nil
	}
	if j, ok, err := fromHist(); err != nil || ok {
		return j, ok, err
	}
	q, err := s.queue(ctx)
	if err != nil {
		return Job{}, false, err
	}
	for _, j := range q {
		if j.ID == id {
			return j, true, nil
		}
	}
	// Two reads are not one: a prompt that finished between them left the
	// queue after the history was read. A prompt only moves from the queue
	// to the history, so a second look at the history settles it.
	return fromHist()
}

// all returns every job ComfyUI knows: running, queued and in its history.
func (s *source) all(ctx context.Context) ([]Job, error) {
	if s.hasJobsAPI() {
		status, data, err := s.get(ctx, http.MethodGet, "/api/jobs", nil)
		switch {
		case err != nil:
			return nil, err
		case status == http.StatusOK:
			var page struct {
				Jobs []map[string]any `json:"jobs"`
			}
			if err := json.Unmarshal(data, &page); err != nil {
				return nil, fmt.Errorf("%w: /api/jobs: %v", errUpstream, err)
			}
			out := make([]Job, 0, len(page.Jobs))
			for _, raw := range page.Jobs {
				out = append(out, fromJobsAPI(raw))
			}
			return out, nil
		case absent(status, data):
			s.noJobsAPI.Store(time.Now().UnixNano())
		default:
			return nil, fmt.Errorf("%w: /api/jobs: status %d", errUpstream, status)
		}
	}
	out, err := s.queue(ctx)
	if err != nil {
		return nil, err
	}
	hist, err := s.history(ctx)
	if err != nil {
		return nil, err
	}
	for id, h := range hist {
		out = append(out, fromHistory(id, h, false))
	}
	return out, nil
}

func (s *source) history(ctx context.Context) (map[string]historyItem, error) {
	var hist map[string]historyItem
	err := s.getJSON(ctx, "/history", &hist)
	return hist, err
}

func (s *source) queue(ctx context.Context) ([]Job, error) {
	var q struct {
		Running [][]json.RawMessage `json:"queue_running"`
		Pending [][]json.RawMessage `json:"queue_pending"`
	}
	if err := s.getJSON(ctx, "/queue", &q); err != nil {
		return nil, err
	}
	var out []Job
	for _, t := range q.Running {
		if j, ok := fromQueueTuple(t, StatusInProgress); ok {
			out = append(out, j)
		}
	}
	for _, t := range q.Pending {
		if j, ok := fromQueueTuple(t, StatusPending); ok {
			out = append(out, j)
		}
	}
	return out, nil
}

// Source reads jobs from one ComfyUI for another face of the job API (Comfy
// API v2): the same routes, fallbacks and Job values as this package's.
type Source struct{ s *source }

// NewSource reads from the ComfyUI at base through rt.
func NewSource(base *url.URL, rt http.RoundTripper) *Source {
	return &Source{&source{base: base, client: &http.Client{Transport: rt}}}
}

// Job returns one job with its details (outputs, execution error), or
// ok=false when ComfyUI knows no such id.
func (s *Source) Job(ctx context.Context, id string) (Job, bool, error) { return s.s.job(ctx, id) }

// Queue returns the running prompts, then the pending ones in the order
// ComfyUI will run them.
func (s *Source) Queue(ctx context.Context) ([]Job, error) {
	q, err := s.s.queue(ctx)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(q, func(a, b int) bool {
		if (q[a].Status == StatusInProgress) != (q[b].Status == StatusInProgress) {
			return q[a].Status == StatusInProgress
		}
		return priority(q[a]) < priority(q[b])
	})
	return q, nil
}

// Post sends a JSON body to one of ComfyUI's routes and returns its answer.
func (s *Source) Post(ctx context.Context, path string, body []byte) (int, []byte, error) {
	return s.s.get(ctx, http.MethodPost, path, body)
}

// priority is a queued prompt's number: ComfyUI runs the lowest first.
func priority(j Job) float64 {
	switch v := j.Priority.(type) {
	case float64:
		return v
	case json.Number:
		f, _ := v.Float64()
		return f
	}
	return 0
}
