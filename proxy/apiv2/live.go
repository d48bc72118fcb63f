package apiv2

import (
	"encoding/binary"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"
)

// live is what comfyshim sees of its v2 jobs while they run, from ComfyUI's
// websocket messages (the owner's collector socket, whose clientId the
// submission carried): the progress snapshot, the latest preview, outputs
// as they are written, a few log lines. Event streams subscribe to a job
// and are woken on every change; they read the current state, so a slow
// stream skips intermediate progress instead of queueing it.
type live struct {
	mu      sync.Mutex
	jobs    map[string]*liveJob
	running string // the prompt executing now: binary previews name none
}

type liveJob struct {
	nodes    map[string]string // node id -> class_type
	started  time.Time
	ended    string    // "succeeded", "failed", "canceled" once the messages say so
	settled  time.Time // when ComfyUI said it is done with the prompt: its history has it
	err      *jobError
	done     map[string]bool // nodes executed or cached
	current  string
	step     int
	steps    int
	preview  *preview
	outputs  []outputRef
	logs     []logLine
	logSeq   int
	progress uint64 // bumped when the progress snapshot changes
	subs     map[chan struct{}]struct{}
	touched  time.Time
}

type preview struct {
	seq         uint64
	node        string
	contentType string
	data        []byte
}

type logLine struct {
	seq     int
	level   string
	message string
}

// maxLogLines bounds the log lines kept per job; maxPreview a preview image.
const (
	maxLogLines = 64
	maxPreview  = 8 << 20
)

func newLive() *live { return &live{jobs: map[string]*liveJob{}} }

// register starts following a submitted job.
func (l *live) register(id string, nodes map[string]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.jobs[id]; !ok {
		l.jobs[id] = &liveJob{nodes: nodes, done: map[string]bool{}, subs: map[chan struct{}]struct{}{}, touched: time.Now()}
	}
}

// forget stops following id (its final state is on record).
func (l *live) forget(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if j := l.jobs[id]; j != nil && len(j.subs) == 0 {
		delete(l.jobs, id)
	}
}

// subscribe returns a channel woken (coalesced) on every change of id.
func (l *live) subscribe(id string, nodes map[string]string) (chan struct{}, func()) {
	l.register(id, nodes)
	ch := make(chan struct{}, 1)
	l.mu.Lock()
	l.jobs[id].subs[ch] = struct{}{}
	l.mu.Unlock()
	return ch, func() {
		l.mu.Lock()
		if j := l.jobs[id]; j != nil {
			delete(j.subs, ch)
		}
		l.mu.Unlock()
	}
}

// poke wakes id's streams (after a cancel, to re-read its status).
func (l *live) poke(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if j := l.jobs[id]; j != nil {
		j.notify()
	}
}

func (j *liveJob) notify() {
	j.touched = time.Now()
	for ch := range j.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (j *liveJob) log(level, msg string) {
	j.logSeq++
	j.logs = append(j.logs, logLine{seq: j.logSeq, level: level, message: msg})
	if len(j.logs) > maxLogLines {
		j.logs = slices.Delete(j.logs, 0, len(j.logs)-maxLogLines)
	}
}

// observeText takes one of ComfyUI's JSON messages. It returns the id of a
// followed job ComfyUI has just finished with (its history has it).
func (l *live) observeText(msg []byte) (settled string) {
	var m struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if json.Unmarshal(msg, &m) != nil {
		return ""
	}
	var d struct {
		PromptID string          `json:"prompt_id"`
		Node     *string         `json:"node"`
		Nodes    []string        `json:"nodes"`
		Value    float64         `json:"value"`
		Max      float64         `json:"max"`
		Output   json.RawMessage `json:"output"`
	}
	if json.Unmarshal(m.Data, &d) != nil || d.PromptID == "" {
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	j := l.jobs[d.PromptID]
	if j == nil {
		return ""
	}
	switch m.Type {
	case "execution_start":
		j.started = time.Now()
		l.running = d.PromptID
		j.log("info", "execution started")
		j.progress++
	case "execution_cached":
		for _, n := range d.Nodes {
			j.done[n] = true
		}
		if len(d.Nodes) > 0 {
			j.log("info", strings.Join(d.Nodes, ", ")+": cached, not run again")
		}
		j.progress++
	case "executing":
		if j.current != "" {
			j.done[j.current] = true
		}
		j.current, j.step, j.steps = "", 0, 0
		if d.Node == nil {
			// Sent after the prompt is in the history, whatever its end.
			j.settled = time.Now()
			settled = d.PromptID
			if l.running == d.PromptID {
				l.running = ""
			}
			break
		}
		j.current = *d.Node
		l.running = d.PromptID
		j.progress++
	case "progress":
		if d.Node != nil {
			j.current = *d.Node
		}
		j.step, j.steps = int(d.Value), int(d.Max)
		j.progress++
	case "executed":
		if d.Node != nil {
			j.done[*d.Node] = true
			j.outputs = append(j.outputs, parseOutputs(*d.Node, d.Output)...)
		}
		j.progress++
	case "execution_success":
		j.ended = statusSucceeded
		j.current = ""
		j.log("info", "execution finished")
	case "execution_error":
		j.ended = statusFailed
		j.err = executionError(m.Data)
		j.log("error", j.err.Message)
	case "execution_interrupted":
		j.ended = statusCanceled
		j.log("warning", "execution interrupted")
	default:
		return ""
	}
	if j.ended != "" && l.running == d.PromptID {
		l.running = ""
	}
	j.notify()
	return settled
}

// observeBinary takes one of ComfyUI's binary frames: previews of the
// running prompt. Type 1 is [type][image type 1=JPEG 2=PNG][image]; type 4
// carries JSON metadata (prompt and node ids, MIME type) before the image.
func (l *live) observeBinary(frame []byte) {
	if len(frame) < 8 {
		return
	}
	p := &preview{}
	promptID := ""
	switch binary.BigEndian.Uint32(frame) {
	case 1:
		p.contentType = "image/jpeg"
		if binary.BigEndian.Uint32(frame[4:]) == 2 {
			p.contentType = "image/png"
		}
		p.data = frame[8:]
	case 4:
		n := int(binary.BigEndian.Uint32(frame[4:]))
		if n < 0 || 8+n > len(frame) {
			return
		}
		var meta struct {
			PromptID  string `json:"prompt_id"`
			NodeID    string `json:"node_id"`
			ImageType string `json:"image_type"`
		}
		if json.Unmarshal(frame[8:8+n], &meta) != nil {
			return
		}
		promptID, p.node, p.contentType, p.data = meta.PromptID, meta.NodeID, meta.ImageType, frame[8+n:]
		if p.contentType == "" {
			p.contentType = "image/jpeg"
		}
	default:
		return
	}
	if len(p.data) == 0 || len(p.data) > maxPreview {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if promptID == "" {
		promptID = l.running
	}
	j := l.jobs[promptID]
	if j == nil {
		return
	}
	if p.node == "" {
		p.node = j.current
	}
	// The frame's buffer is the reader's; keep a copy.
	p.data = slices.Clone(p.data)
	p.seq = 1
	if j.preview != nil {
		p.seq = j.preview.seq + 1
	}
	j.preview = p
	j.notify()
}

// view is a copy of what a stream or a poll needs of a live job.
type liveView struct {
	known     bool
	started   time.Time
	ended     string
	settledAt time.Time
	err       *jobError
	progress  *progressJSON
	version   uint64
	preview   *preview
	outputs   []outputRef
	logs      []logLine
}

func (l *live) view(id string) liveView {
	l.mu.Lock()
	defer l.mu.Unlock()
	j := l.jobs[id]
	if j == nil {
		return liveView{}
	}
	v := liveView{known: true, started: j.started, ended: j.ended, settledAt: j.settled, err: j.err, version: j.progress,
		preview: j.preview, outputs: slices.Clone(j.outputs), logs: slices.Clone(j.logs)}
	if !j.started.IsZero() {
		v.progress = j.snapshot()
	}
	return v
}

// snapshot is the progress: finished nodes plus the running node's share
// of its sampler steps, over the workflow's nodes.
func (j *liveJob) snapshot() *progressJSON {
	total := len(j.nodes)
	done := 0
	for n := range j.nodes {
		if j.done[n] {
			done++
		}
	}
	p := &progressJSON{NodesDone: done, NodesTotal: total}
	frac := 0.0
	if j.current != "" && !j.done[j.current] {
		cur := j.current
		p.CurrentNode = &cur
		if c, ok := j.nodes[cur]; ok {
			p.CurrentNodeClass = &c
		}
		if j.steps > 0 {
			step, steps := j.step, j.steps
			p.Step, p.Steps = &step, &steps
			frac = min(1, float64(step)/float64(steps))
			msg := ""
			if p.CurrentNodeClass != nil {
				msg = *p.CurrentNodeClass + " "
			}
			msg += itoa(step) + "/" + itoa(steps)
			p.Message = &msg
		}
	}
	switch {
	case j.ended == statusSucceeded:
		p.Value, p.NodesDone = 1, total
	case total > 0:
		p.Value = min(1, (float64(done)+frac)/float64(total))
	}
	return p
}

// sweep forgets jobs nobody watches that ended, or that went quiet longer
// than maxAge (a job ComfyUI lost).
func (l *live) sweep(now time.Time, maxAge time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, j := range l.jobs {
		if len(j.subs) == 0 && ((j.ended != "" && now.Sub(j.touched) > time.Minute) || now.Sub(j.touched) > maxAge) {
			delete(l.jobs, id)
		}
	}
}

// parseOutputs reads the files of one node's output as ComfyUI reports it
// ({"images": [{"filename", "subfolder", "type"}], "gifs": [...], ...}).
func parseOutputs(node string, raw json.RawMessage) []outputRef {
	var out map[string]json.RawMessage
	if json.Unmarshal(raw, &out) != nil {
		return nil
	}
	keys := make([]string, 0, len(out))
	for k := range out {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var refs []outputRef
	for _, k := range keys {
		var items []struct {
			Filename  string `json:"filename"`
			Subfolder string `json:"subfolder"`
			Type      string `json:"type"`
		}
		if json.Unmarshal(out[k], &items) != nil {
			continue // text outputs and the like: lists of strings
		}
		for _, it := range items {
			root := it.Type
			if root == "" {
				root = "output"
			}
			if it.Filename == "" || (root != "output" && root != "temp" && root != "input") {
				continue
			}
			rel := it.Filename
			if sub := strings.Trim(strings.ReplaceAll(it.Subfolder, `\`, "/"), "/"); sub != "" {
				rel = sub + "/" + it.Filename
			}
			refs = append(refs, outputRef{NodeID: node, Root: root, Rel: rel, Kind: k})
		}
	}
	return refs
}

// executionError reads ComfyUI's execution_error message.
func executionError(raw json.RawMessage) *jobError {
	var d struct {
		NodeID    any      `json:"node_id"`
		NodeType  string   `json:"node_type"`
		Type      string   `json:"exception_type"`
		Message   string   `json:"exception_message"`
		Traceback []string `json:"traceback"`
	}
	_ = json.Unmarshal(raw, &d)
	e := &jobError{Code: "node_execution_error", Message: strings.TrimSpace(d.Message)}
	if d.Type != "" {
		e.Message = d.Type + ": " + e.Message
	}
	if e.Message == "" {
		e.Message = "the workflow failed"
	}
	if id := anyString(d.NodeID); id != "" {
		e.NodeID = &id
	}
	if d.NodeType != "" {
		e.ClassType = &d.NodeType
	}
	if len(d.Traceback) > 0 {
		tb := strings.Join(d.Traceback, "")
		e.Traceback = &tb
	}
	return e
}

func anyString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return itoa(int(x))
	}
	return ""
}
