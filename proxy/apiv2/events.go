package apiv2

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// Event stream pacing: progress and previews at most every throttle (about
// 2 per second, as the contract says); idle streams get a comment every
// Options.KeepAlive.
const throttle = 500 * time.Millisecond

// events is GET /api/v2/jobs/{id}/events: Server-Sent Events. On connect the
// job's status, its latest progress and preview; then status changes
// (queue position included), progress, previews, outputs as they are
// written, log lines; the stream ends after the terminal status. A stream
// holds no queue of its own: woken by a change, it reads the job's current
// state, so a slow client skips progress instead of piling it up.
func (a *API) events(c *gin.Context) {
	rec, ok := a.lookup(c)
	if !ok {
		return
	}
	release, ok := a.openStream(rec.Owner)
	if !ok {
		retryAfter(c, 5)
		fail(c, http.StatusTooManyRequests, codeTooManyStreams, "too many event streams are open; close one, poll GET /api/v2/jobs/{id}, or retry later", nil)
		return
	}
	defer release()
	ctx := c.Request.Context()
	wake, unsubscribe := a.live.subscribe(rec.ID, rec.Nodes)
	var lastStatus string
	defer func() {
		unsubscribe()
		if terminal(lastStatus) {
			a.live.forget(rec.ID) // nothing more will happen to it
		}
	}()
	st, err := a.state(ctx, rec)
	if err != nil {
		a.refuse(c, err)
		return
	}
	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	c.Status(http.StatusOK)
	s := &sseWriter{w: c.Writer, rc: http.NewResponseController(c.Writer)}

	lv := a.live.view(rec.ID)
	s.event("status", statusEvent{st.status, st.position})
	if st.progress != nil {
		s.event("progress", st.progress)
	}
	var lastPreview uint64
	if lv.preview != nil {
		s.event("preview", previewEvent(lv.preview))
		lastPreview = lv.preview.seq
	}
	lastLog := 0
	if n := len(lv.logs); n > 0 {
		lastLog = lv.logs[n-1].seq
	}
	sentOutputs := len(st.outputs)
	lastStatus = st.status
	lastPos := st.position
	lastVersion := lv.version
	if s.flush() != nil || terminal(st.status) {
		return
	}

	poll := time.NewTicker(a.opts.PollInterval)
	defer poll.Stop()
	idle := time.NewTicker(a.opts.KeepAlive)
	defer idle.Stop()
	var paced <-chan time.Time // fires when a throttled update is due
	var lastPaced time.Time
	for {
		polled := false
		select {
		case <-ctx.Done():
			return
		case <-a.stop:
			return
		case <-idle.C:
			s.comment("keep-alive")
			if s.flush() != nil {
				return
			}
			continue
		case <-wake:
		case <-paced:
			paced = nil
		case <-poll.C:
			polled = true
		}
		lv := a.live.view(rec.ID)
		for _, l := range lv.logs {
			if l.seq > lastLog {
				s.event("log", logEvent{l.level, l.message})
				lastLog = l.seq
			}
		}
		for ; sentOutputs < len(lv.outputs); sentOutputs++ {
			s.event("output", a.outputView(c.Request, rec.ID, lv.outputs[sentOutputs]))
		}
		if (lv.version != lastVersion && lv.progress != nil) || (lv.preview != nil && lv.preview.seq != lastPreview) {
			if wait := throttle - time.Since(lastPaced); wait > 0 {
				if paced == nil {
					paced = time.After(wait)
				}
			} else {
				if lv.version != lastVersion && lv.progress != nil {
					s.event("progress", lv.progress)
					lastVersion = lv.version
				}
				if lv.preview != nil && lv.preview.seq != lastPreview {
					s.event("preview", previewEvent(lv.preview))
					lastPreview = lv.preview.seq
				}
				lastPaced = time.Now()
			}
		}
		// The status is ComfyUI's word: re-read when the messages say the
		// job started or ended, and on every poll (queue position, a job
		// removed from the queue or lost).
		if polled || !lv.settledAt.IsZero() || (lastStatus == statusQueued && !lv.started.IsZero()) {
			cur, ok := a.records.get(rec.ID)
			if !ok {
				return
			}
			rec = cur
			st, err := a.state(ctx, rec)
			if err != nil {
				a.log.Debug("event stream could not read the job's state", "job", rec.ID, "err", err)
			} else {
				if terminal(st.status) {
					// The job may have run its course while the state was
					// read: what the messages told meanwhile, and what the
					// pacing held back, goes out before the end.
					lv := a.live.view(rec.ID)
					for _, l := range lv.logs {
						if l.seq > lastLog {
							s.event("log", logEvent{l.level, l.message})
							lastLog = l.seq
						}
					}
					if lv.preview != nil && lv.preview.seq != lastPreview {
						s.event("preview", previewEvent(lv.preview))
						lastPreview = lv.preview.seq
					}
					for ; sentOutputs < len(st.outputs); sentOutputs++ {
						s.event("output", a.outputView(c.Request, rec.ID, st.outputs[sentOutputs]))
					}
					if st.progress != nil && st.progress.Value == 1 {
						s.event("progress", st.progress)
					}
					// Every transition is told, even one seen late: a job
					// that started ran.
					if lastStatus == statusQueued && (!lv.started.IsZero() || !st.started.IsZero()) {
						s.event("status", statusEvent{Status: statusRunning})
						lastStatus, lastPos = statusRunning, nil
					}
				}
				if st.status != lastStatus || !samePos(st.position, lastPos) {
					s.event("status", statusEvent{st.status, st.position})
					lastStatus, lastPos = st.status, st.position
				}
			}
		}
		if s.flush() != nil || terminal(lastStatus) {
			return
		}
	}
}

func samePos(a, b *int) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

type statusEvent struct {
	Status        string `json:"status"`
	QueuePosition *int   `json:"queue_position"`
}

type previewJSON struct {
	NodeID      string `json:"node_id"`
	ContentType string `json:"content_type"`
	DataBase64  string `json:"data_base64"`
}

func previewEvent(p *preview) previewJSON {
	return previewJSON{NodeID: p.node, ContentType: p.contentType, DataBase64: base64.StdEncoding.EncodeToString(p.data)}
}

type logEvent struct {
	Level   string `json:"level"`
	Message string `json:"message"`
}

// sseWriter writes event frames; the first write error sticks.
type sseWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
}

func (s *sseWriter) event(name string, v any) {
	if s.err != nil {
		return
	}
	data, err := json.Marshal(v)
	if err != nil {
		s.err = err
		return
	}
	buf := make([]byte, 0, len(data)+len(name)+16)
	buf = append(buf, "event: "...)
	buf = append(buf, name...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, data...)
	buf = append(buf, "\n\n"...)
	_, s.err = s.w.Write(buf)
}

func (s *sseWriter) comment(text string) {
	if s.err == nil {
		_, s.err = s.w.Write([]byte(": " + text + "\n\n"))
	}
}

func (s *sseWriter) flush() error {
	if s.err == nil {
		s.err = s.rc.Flush()
	}
	return s.err
}
