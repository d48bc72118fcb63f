package comfytest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
)

// The fake's prompt queue behaves as ComfyUI's: one worker runs prompts in
// order, execution messages go only to the socket named by the prompt's
// client_id (none when it has none), queue changes are broadcast as
// "status", and finished prompts land in /history. Node classes:
//
//   - SaveImage writes an image (a distinct PNG per prompt) as an output;
//   - Wait holds the prompt running until Proceed or an interrupt;
//   - Fail raises an execution error;
//   - any other class fails validation (400), as an unknown node does.
type queue struct {
	cond    *sync.Cond // on Upstream.mu; signalled when pending grows
	started bool
	number  int
	pending []*job
	running *job
	order   []string // history ids, oldest first
	history map[string]*job
	gates   map[string]chan struct{} // Wait nodes' release, by prompt id
	outputs map[string][]byte        // images written, by file name
}

type job struct {
	number    int
	id        string
	clientID  string
	prompt    map[string]node
	raw       json.RawMessage
	extra     map[string]any
	outputs   map[string]any
	messages  [][2]any
	statusStr string
	meta      map[string]any

	interrupted bool
}

type node struct {
	ClassType string         `json:"class_type"`
	Inputs    map[string]any `json:"inputs"`
}

var knownNodes = []string{"SaveImage", "Wait", "Fail", "LoadImage", "CheckpointLoaderSimple"}

func (u *Upstream) prompt(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Prompt    json.RawMessage `json:"prompt"`
		PromptID  string          `json:"prompt_id"`
		ClientID  string          `json:"client_id"`
		ExtraData map[string]any  `json:"extra_data"`
	}
	body, _ := io.ReadAll(r.Body)
	u.locked(func() { u.lastPrompt = body })
	if err := json.Unmarshal(body, &req); err != nil {
		// ComfyUI answers a body that is not JSON with a 500.
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	var nodes map[string]node
	if len(req.Prompt) == 0 || json.Unmarshal(req.Prompt, &nodes) != nil {
		w.WriteHeader(http.StatusBadRequest)
		writeJSON(w, map[string]any{"error": map[string]any{"type": "invalid_prompt", "message": "Invalid prompt: no prompt", "details": "", "extra_info": map[string]any{}}, "node_errors": map[string]any{}})
		return
	}
	if len(nodes) == 0 {
		w.WriteHeader(http.StatusBadRequest)
		writeJSON(w, map[string]any{"error": map[string]any{"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": map[string]any{}}, "node_errors": map[string]any{}})
		return
	}
	for _, id := range sortedIDs(nodes) {
		if !slices.Contains(knownNodes, nodes[id].ClassType) {
			w.WriteHeader(http.StatusBadRequest)
			writeJSON(w, map[string]any{
				"error": map[string]any{"type": "invalid_prompt", "message": fmt.Sprintf("Cannot execute because node %s does not exist.", nodes[id].ClassType),
					"details": "Node ID '#" + id + "'", "extra_info": map[string]any{}},
				"node_errors": map[string]any{}})
			return
		}
	}
	if errs := u.validateInputs(nodes); len(errs) > 0 {
		w.WriteHeader(http.StatusBadRequest)
		writeJSON(w, map[string]any{"error": map[string]any{"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": map[string]any{}},
			"node_errors": errs})
		return
	}
	extra := req.ExtraData
	if extra == nil {
		extra = map[string]any{}
	}
	if req.ClientID != "" {
		extra["client_id"] = req.ClientID
	}
	extra["create_time"] = time.Now().UnixMilli()
	u.mu.Lock()
	q := &u.q
	q.number++
	id := req.PromptID // ComfyUI takes the client's prompt_id when it names one
	if id == "" {
		id = uuid.NewString()
	}
	j := &job{number: q.number, id: id, clientID: req.ClientID, prompt: nodes, raw: req.Prompt, extra: extra}
	q.pending = append(q.pending, j)
	if !q.started {
		q.started = true
		q.cond = sync.NewCond(&u.mu)
		go u.worker()
	}
	q.cond.Signal()
	u.mu.Unlock()
	writeJSON(w, map[string]any{"prompt_id": j.id, "number": j.number, "node_errors": map[string]any{}})
	u.broadcastStatus()
}

// validateInputs checks LoadImage's image against the files of InputDir as
// ComfyUI checks a combo input, answering in its node_errors shape.
func (u *Upstream) validateInputs(nodes map[string]node) map[string]any {
	errs := map[string]any{}
	if u.InputDir == "" {
		return errs
	}
	for id, n := range nodes {
		if n.ClassType != "LoadImage" {
			continue
		}
		name, _ := n.Inputs["image"].(string)
		if fi, err := os.Stat(filepath.Join(u.InputDir, filepath.FromSlash(name))); name != "" && err == nil && fi.Mode().IsRegular() {
			continue
		}
		errs[id] = map[string]any{"class_type": n.ClassType, "dependent_outputs": []string{},
			"errors": []map[string]any{{"type": "value_not_in_list", "message": "Value not in list",
				"details":    fmt.Sprintf("image: '%v' not in the input folder", n.Inputs["image"]),
				"extra_info": map[string]any{"input_name": "image", "received_value": n.Inputs["image"]}}}}
	}
	return errs
}

func sortedIDs(nodes map[string]node) []string {
	ids := make([]string, 0, len(nodes))
	for id := range nodes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool {
		x, ex := strconv.Atoi(ids[a])
		y, ey := strconv.Atoi(ids[b])
		if ex == nil && ey == nil {
			return x < y
		}
		return ids[a] < ids[b]
	})
	return ids
}

// Proceed releases the Wait node of a running or queued prompt.
func (u *Upstream) Proceed(promptID string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.gate(promptID)
	select {
	case <-u.q.gates[promptID]:
	default:
		close(u.q.gates[promptID])
	}
}

func (u *Upstream) gate(id string) chan struct{} {
	g := u.q.gates[id]
	if g == nil {
		g = make(chan struct{})
		u.q.gates[id] = g
	}
	return g
}

// Running returns the id of the prompt being executed, or "".
func (u *Upstream) Running() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.q.running == nil {
		return ""
	}
	return u.q.running.id
}

// Output returns the bytes of an image a prompt wrote.
func (u *Upstream) Output(name string) ([]byte, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	b, ok := u.q.outputs[name]
	return b, ok
}

func (u *Upstream) worker() {
	for {
		u.mu.Lock()
		for len(u.q.pending) == 0 {
			u.q.cond.Wait()
		}
		j := u.q.pending[0]
		u.q.pending = u.q.pending[1:]
		u.q.running = j
		u.mu.Unlock()
		u.broadcastStatus()
		u.execute(j)
		u.mu.Lock()
		u.q.running = nil
		u.q.history[j.id] = j
		u.q.order = append(u.q.order, j.id)
		u.mu.Unlock()
		// As ComfyUI's prompt worker: once the history has the prompt,
		// "executing" with no node tells its socket it is done, whatever
		// the outcome.
		u.toClient(j.clientID, websocket.TextMessage, mustJSON(map[string]any{"type": "executing", "data": map[string]any{"node": nil, "prompt_id": j.id}}))
		u.broadcastStatus()
	}
}

// execute runs j's nodes in id order, sending what ComfyUI sends.
func (u *Upstream) execute(j *job) {
	now := func() int64 { return time.Now().UnixMilli() }
	send := func(typ string, data map[string]any) {
		data["prompt_id"] = j.id
		u.toClient(j.clientID, websocket.TextMessage, mustJSON(map[string]any{"type": typ, "data": data}))
	}
	record := func(typ string, data map[string]any) {
		data["prompt_id"] = j.id
		data["timestamp"] = now()
		u.locked(func() { j.messages = append(j.messages, [2]any{typ, data}) })
		u.toClient(j.clientID, websocket.TextMessage, mustJSON(map[string]any{"type": typ, "data": data}))
	}
	u.locked(func() { j.outputs, j.meta = map[string]any{}, map[string]any{} })
	record("execution_start", map[string]any{})
	record("execution_cached", map[string]any{"nodes": []string{}})
	var executed []string
	for _, id := range sortedIDs(j.prompt) {
		n := j.prompt[id]
		send("executing", map[string]any{"node": id, "display_node": id})
		switch n.ClassType {
		case "Wait":
			u.mu.Lock()
			g := u.gate(j.id)
			u.mu.Unlock()
			<-g
		case "Fail":
			record("execution_error", map[string]any{"node_id": id, "node_type": n.ClassType, "executed": executed,
				"exception_message": "Fail node failed on purpose", "exception_type": "RuntimeError",
				"traceback":      []string{"Traceback (most recent call last):\n", "RuntimeError: Fail node failed on purpose\n"},
				"current_inputs": map[string]any{}, "current_outputs": map[string]any{}})
			u.locked(func() { j.statusStr = "error" })
			return
		case "SaveImage":
			send("progress", map[string]any{"value": 1, "max": 2, "node": id})
			frame := make([]byte, 8, 8+len(PreviewPNG))
			binary.BigEndian.PutUint32(frame[0:], 1)
			binary.BigEndian.PutUint32(frame[4:], 2)
			u.toClient(j.clientID, websocket.BinaryMessage, append(frame, PreviewPNG...))
			send("progress", map[string]any{"value": 2, "max": 2, "node": id})
			file := fmt.Sprintf("ComfyUI_%05d_.png", j.number)
			u.writeOutput(file, j.number)
			out := map[string]any{"images": []map[string]string{{"filename": file, "subfolder": "", "type": "output"}}}
			u.locked(func() {
				j.outputs[id] = out
				j.meta[id] = map[string]any{"node_id": id, "display_node": id, "parent_node": nil, "real_node_id": id}
			})
			send("executed", map[string]any{"node": id, "display_node": id, "output": out})
		}
		u.mu.Lock()
		interrupted := j.interrupted
		u.mu.Unlock()
		if interrupted {
			record("execution_interrupted", map[string]any{"node_id": id, "node_type": n.ClassType, "executed": executed})
			u.locked(func() { j.statusStr = "error" })
			return
		}
		executed = append(executed, id)
	}
	record("execution_success", map[string]any{})
	u.locked(func() { j.statusStr = "success" })
}

func (u *Upstream) locked(f func()) {
	u.mu.Lock()
	defer u.mu.Unlock()
	f()
}

func (u *Upstream) writeOutput(file string, n int) {
	img := image.NewNRGBA(image.Rect(0, 0, 2, 1))
	img.Set(0, 0, color.NRGBA{R: uint8(n), G: uint8(n >> 8), B: 7, A: 255})
	img.Set(1, 0, color.NRGBA{R: 1, G: 2, B: uint8(n >> 16), A: 255})
	var b bytes.Buffer
	_ = png.Encode(&b, img)
	u.mu.Lock()
	if u.q.outputs == nil {
		u.q.outputs = map[string][]byte{}
	}
	u.q.outputs[file] = b.Bytes()
	dir := u.OutputDir
	u.mu.Unlock()
	if dir != "" {
		_ = os.WriteFile(filepath.Join(dir, file), b.Bytes(), 0o644)
	}
}

func (u *Upstream) toClient(clientID string, kind int, data []byte) {
	if clientID == "" {
		return
	}
	u.mu.Lock()
	c := u.sockets[clientID]
	u.mu.Unlock()
	if c != nil {
		_ = c.write(kind, data)
	}
}

// broadcastStatus sends the queue size to every socket, as ComfyUI does on
// every queue change.
func (u *Upstream) broadcastStatus() {
	u.mu.Lock()
	remaining := len(u.q.pending)
	if u.q.running != nil {
		remaining++
	}
	clients := make([]*wsClient, 0, len(u.sockets))
	for _, c := range u.sockets {
		clients = append(clients, c)
	}
	u.mu.Unlock()
	msg := mustJSON(map[string]any{"type": "status", "data": map[string]any{"status": map[string]any{"exec_info": map[string]any{"queue_remaining": remaining}}}})
	for _, c := range clients {
		_ = c.write(websocket.TextMessage, msg)
	}
}

// tuple is a queue or history prompt as ComfyUI lists it (sensitive extra
// data removed): number, id, prompt, extra_data, outputs to execute.
func (j *job) tuple() []any {
	var outs []string
	for _, id := range sortedIDs(j.prompt) {
		if j.prompt[id].ClassType == "SaveImage" {
			outs = append(outs, id)
		}
	}
	return []any{j.number, j.id, j.raw, j.extra, outs}
}

func (j *job) historyEntry() map[string]any {
	msgs := make([]any, len(j.messages))
	for i, m := range j.messages {
		msgs[i] = []any{m[0], m[1]}
	}
	return map[string]any{
		"prompt":  j.tuple(),
		"outputs": j.outputs,
		"status":  map[string]any{"status_str": j.statusStr, "completed": j.statusStr == "success", "messages": msgs},
		"meta":    j.meta,
	}
}

func (u *Upstream) queueInfo(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	running, pending := []any{}, []any{}
	if u.q.running != nil {
		running = append(running, u.q.running.tuple())
	}
	for _, j := range u.q.pending {
		pending = append(pending, j.tuple())
	}
	u.mu.Unlock()
	writeJSON(w, map[string]any{"queue_running": running, "queue_pending": pending})
}

func (u *Upstream) queueManage(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Clear  bool     `json:"clear"`
		Delete []string `json:"delete"`
	}
	_ = json.NewDecoder(r.Body).Decode(&req)
	u.mu.Lock()
	u.q.pending = slices.DeleteFunc(u.q.pending, func(j *job) bool { return req.Clear || slices.Contains(req.Delete, j.id) })
	u.mu.Unlock()
	w.WriteHeader(http.StatusOK)
	u.broadcastStatus()
}

// interrupt stops the running prompt (or, with a prompt_id, only if that
// one is running) at its next node boundary.
func (u *Upstream) interrupt(w http.ResponseWriter, r *http.Request) {
	var req struct {
		PromptID string `json:"prompt_id"`
	}
	_ = json.NewDecoder(r.Body).Decode(&req)
	u.mu.Lock()
	if j := u.q.running; j != nil && (req.PromptID == "" || req.PromptID == j.id) {
		j.interrupted = true
		g := u.gate(j.id)
		select {
		case <-g:
		default:
			close(g)
		}
	}
	u.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (u *Upstream) historyAll(w http.ResponseWriter, r *http.Request) {
	max, _ := strconv.Atoi(r.URL.Query().Get("max_items"))
	u.mu.Lock()
	ids := u.q.order
	if max > 0 && len(ids) > max {
		ids = ids[len(ids)-max:]
	}
	out := map[string]any{}
	for _, id := range ids {
		out[id] = u.q.history[id].historyEntry()
	}
	u.mu.Unlock()
	writeJSON(w, out)
}

// historyManage is POST /history: {"clear": true} or {"delete": [ids]}, as
// ComfyUI's (a restart loses the history the same way).
func (u *Upstream) historyManage(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Clear  bool     `json:"clear"`
		Delete []string `json:"delete"`
	}
	_ = json.NewDecoder(r.Body).Decode(&req)
	u.mu.Lock()
	u.q.order = slices.DeleteFunc(u.q.order, func(id string) bool {
		if req.Clear || slices.Contains(req.Delete, id) {
			delete(u.q.history, id)
			return true
		}
		return false
	})
	u.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (u *Upstream) historyOne(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	u.mu.Lock()
	defer u.mu.Unlock()
	j, ok := u.q.history[id]
	if !ok {
		writeJSON(w, map[string]any{})
		return
	}
	writeJSON(w, map[string]any{id: j.historyEntry()})
}

// objectInfo lists the node classes; the loaders' options are the files
// of their model folder under ModelsDir, as folder_paths lists them: paths
// inside the category, "/"-separated, extensions the category accepts.
func (u *Upstream) objectInfo(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{}
	for _, n := range knownNodes {
		out[n] = map[string]any{"name": n, "display_name": n, "input": map[string]any{"required": map[string]any{}}, "output": []string{}, "output_node": n == "SaveImage"}
	}
	loaders := map[string][2]string{"CheckpointLoaderSimple": {"checkpoints", "ckpt_name"}, "LoraLoader": {"loras", "lora_name"}}
	for node, l := range loaders {
		var names []string
		if u.ModelsDir != "" {
			root := filepath.Join(u.ModelsDir, l[0])
			_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() && strings.HasSuffix(p, ".safetensors") {
					rel, _ := filepath.Rel(root, p)
					names = append(names, filepath.ToSlash(rel))
				}
				return nil
			})
		}
		out[node] = map[string]any{"name": node, "input": map[string]any{"required": map[string]any{l[1]: []any{names}}}, "output": []string{}}
	}
	writeJSON(w, out)
}

// The /api/jobs routes, as ComfyUI 0.33+ serves them (comfy_execution/jobs.py).

func (j *job) jobStatus() string {
	switch {
	case j.statusStr == "success":
		return "completed"
	case j.interrupted:
		return "cancelled"
	default:
		return "failed"
	}
}

func (j *job) jobJSON(status string, full bool) map[string]any {
	m := map[string]any{"id": j.id, "status": status, "priority": j.number, "create_time": j.extra["create_time"], "outputs_count": 0}
	if wf, ok := j.extra["extra_pnginfo"].(map[string]any); ok {
		if w, ok := wf["workflow"].(map[string]any); ok && w["id"] != nil {
			m["workflow_id"] = w["id"]
		}
	}
	if j.statusStr == "" {
		return m
	}
	count := 0
	for _, id := range sortedIDs(j.prompt) {
		if o, ok := j.outputs[id].(map[string]any); ok {
			for _, items := range o {
				list, _ := items.([]map[string]string)
				for _, it := range list {
					if count == 0 {
						m["preview_output"] = map[string]any{"filename": it["filename"], "subfolder": it["subfolder"], "type": it["type"], "nodeId": id, "mediaType": "images"}
					}
					count++
				}
			}
		}
	}
	m["outputs_count"] = count
	for _, msg := range j.messages {
		data := msg[1].(map[string]any)
		switch msg[0] {
		case "execution_start":
			m["execution_start_time"] = data["timestamp"]
		case "execution_success", "execution_interrupted", "execution_error":
			m["execution_end_time"] = data["timestamp"]
			if msg[0] == "execution_error" {
				m["execution_error"] = data
			}
		}
	}
	if full {
		h := j.historyEntry()
		m["outputs"] = j.outputs
		m["execution_status"] = h["status"]
		m["workflow"] = map[string]any{"prompt": j.raw, "extra_data": j.extra}
	}
	return m
}

func (u *Upstream) jobsList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	want := map[string]bool{}
	for _, s := range strings.Split(q.Get("status"), ",") {
		if s != "" {
			want[s] = true
		}
	}
	u.mu.Lock()
	var jobs []map[string]any
	add := func(m map[string]any) {
		if len(want) == 0 || want[m["status"].(string)] {
			jobs = append(jobs, m)
		}
	}
	if u.q.running != nil {
		add(u.q.running.jobJSON("in_progress", false))
	}
	for _, j := range u.q.pending {
		add(j.jobJSON("pending", false))
	}
	for _, id := range u.q.order {
		j := u.q.history[id]
		add(j.jobJSON(j.jobStatus(), false))
	}
	u.mu.Unlock()
	asc := q.Get("sort_order") == "asc"
	sort.SliceStable(jobs, func(a, b int) bool {
		x, y := jobs[a]["create_time"].(int64), jobs[b]["create_time"].(int64)
		if asc {
			return x < y
		}
		return x > y
	})
	total := len(jobs)
	offset, _ := strconv.Atoi(q.Get("offset"))
	limit, err := strconv.Atoi(q.Get("limit"))
	if offset > len(jobs) {
		offset = len(jobs)
	}
	jobs = jobs[offset:]
	if err == nil && limit >= 0 && limit < len(jobs) {
		jobs = jobs[:limit]
	}
	if jobs == nil {
		jobs = []map[string]any{}
	}
	var lim any
	if err == nil {
		lim = limit
	}
	writeJSON(w, map[string]any{"jobs": jobs, "pagination": map[string]any{"offset": offset, "limit": lim, "total": total, "has_more": offset+len(jobs) < total}})
}

func (u *Upstream) jobsOne(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	u.mu.Lock()
	defer u.mu.Unlock()
	if j, ok := u.q.history[id]; ok {
		writeJSON(w, j.jobJSON(j.jobStatus(), true))
		return
	}
	if j := u.q.running; j != nil && j.id == id {
		writeJSON(w, j.jobJSON("in_progress", true))
		return
	}
	for _, j := range u.q.pending {
		if j.id == id {
			writeJSON(w, j.jobJSON("pending", true))
			return
		}
	}
	w.WriteHeader(http.StatusNotFound)
	writeJSON(w, map[string]string{"error": "Job not found"})
}

func (u *Upstream) jobsCancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	u.mu.Lock()
	if j := u.q.running; j != nil && j.id == id {
		j.interrupted = true
		g := u.gate(id)
		select {
		case <-g:
		default:
			close(g)
		}
	}
	u.q.pending = slices.DeleteFunc(u.q.pending, func(j *job) bool { return j.id == id })
	u.mu.Unlock()
	writeJSON(w, map[string]any{"cancelled": true})
}
