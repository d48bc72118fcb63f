package apiv2

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/comfyshim/comfyshim/tagstore"
	"github.com/comfyshim/comfyshim/tagstore/assets"
)

// record is what comfyshim keeps of one v2 job until it expires: enough to
// answer for it once ComfyUI has forgotten it (a restart, a trimmed
// history) and to replay its submission. One small JSON file per job
// (<id>.json), its workflow beside it (<id>.workflow.json).
type record struct {
	ID      string    `json:"id"`
	Owner   string    `json:"owner,omitempty"`
	Created time.Time `json:"created_at"`
	Expires time.Time `json:"expires_at"`
	// Key and Fingerprint are the submission's Idempotency-Key and the
	// SHA-256 of its workflow as sent.
	Key         string `json:"idempotency_key,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	// Accepted is false from just before the prompt is sent to ComfyUI
	// until ComfyUI accepts it: a crash in between leaves a record whose
	// fate the next retry settles by asking ComfyUI (the prompt id is
	// chosen here), so a retried submission never runs twice.
	Accepted bool `json:"accepted"`
	// Nodes maps the workflow's node ids to their class_type.
	Nodes           map[string]string `json:"nodes,omitempty"`
	CancelRequested bool              `json:"cancel_requested,omitempty"`
	// Final is the job's terminal state, kept once it is reached.
	Final *snapshot `json:"final,omitempty"`
	// Response is the 201 body a replayed submission answers with.
	Response json.RawMessage `json:"response,omitempty"`
}

// snapshot is a job's state as comfyshim last established it.
type snapshot struct {
	Status    string      `json:"status"`
	Started   time.Time   `json:"started_at,omitzero"`
	Completed time.Time   `json:"completed_at,omitzero"`
	Outputs   []outputRef `json:"outputs,omitempty"`
	Error     *jobError   `json:"error,omitempty"`
}

// outputRef is one file a job produced, as ComfyUI named it.
type outputRef struct {
	NodeID string `json:"node_id"`
	Root   string `json:"root"` // ComfyUI's folder type: output, temp or input
	Rel    string `json:"rel"`  // subfolder/filename, slash-separated
	Kind   string `json:"kind"` // the key ComfyUI listed it under: images, gifs, audio...
}

type jobError struct {
	Code      string  `json:"code"`
	Message   string  `json:"message"`
	NodeID    *string `json:"node_id"`
	ClassType *string `json:"class_type"`
	Traceback *string `json:"traceback"`
}

// records holds every unexpired job record in memory (they are small; the
// workflows stay on disk) and on disk.
type records struct {
	dir string
	log *slog.Logger

	mu    sync.Mutex
	byID  map[string]*record
	byKey map[string]string // owner + "\x00" + key -> job id
	// byOutput finds finished jobs' outputs by asset id.
	byOutput map[string]outputLoc
}

// outputLoc is where an output asset came from.
type outputLoc struct {
	job     string
	ref     outputRef
	created time.Time
}

// keyLifetime is how long an Idempotency-Key is honoured (the spec's 24 h).
const keyLifetime = 24 * time.Hour

// expiredGrace is how long a job past expires_at still answers "expired"
// before its record is removed.
const expiredGrace = 24 * time.Hour

func openRecords(dir string, log *slog.Logger) (*records, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("job records folder: %w", err)
	}
	r := &records{dir: dir, log: log, byID: map[string]*record{}, byKey: map[string]string{}, byOutput: map[string]outputLoc{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("job records folder: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-") {
			_ = os.Remove(filepath.Join(dir, name)) // a write a crash interrupted
			continue
		}
		if !strings.HasSuffix(name, ".json") || strings.HasSuffix(name, ".workflow.json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("job record %s: %w", name, err)
		}
		var rec record
		if err := json.Unmarshal(data, &rec); err != nil || rec.ID+".json" != name {
			// Written whole or not at all, so this is not ours to mend.
			log.Warn("job record ignored: not a record comfyshim wrote", "file", name)
			continue
		}
		r.index(&rec)
	}
	return r, nil
}

func (r *records) index(rec *record) {
	r.byID[rec.ID] = rec
	if rec.Key != "" {
		r.byKey[rec.Owner+"\x00"+rec.Key] = rec.ID
	}
	if rec.Final != nil {
		for _, o := range rec.Final.Outputs {
			r.byOutput[assets.IDOf(o.Root, o.Rel)] = outputLoc{job: rec.ID, ref: o, created: rec.Final.Completed}
		}
	}
}

// output finds a finished job's output by its asset id.
func (r *records) output(id string) (outputLoc, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	loc, ok := r.byOutput[id]
	return loc, ok
}

func (r *records) path(id string) string { return filepath.Join(r.dir, id+".json") }

// get returns a copy of the record of id.
func (r *records) get(id string) (record, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.byID[id]
	if !ok {
		return record{}, false
	}
	return *rec, true
}

// byIdempotencyKey returns the record a live key of owner names.
func (r *records) byIdempotencyKey(owner, key string, now time.Time) (record, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id, ok := r.byKey[owner+"\x00"+key]
	if !ok {
		return record{}, false
	}
	rec, ok := r.byID[id]
	if !ok || now.Sub(rec.Created) > keyLifetime {
		return record{}, false
	}
	return *rec, true
}

// put writes rec durably, then makes it current.
func (r *records) put(rec record) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := tagstore.WriteFile(r.path(rec.ID), data); err != nil {
		return err
	}
	r.mu.Lock()
	r.index(&rec)
	r.mu.Unlock()
	return nil
}

// update applies f to the current record of id and writes the result.
// Updates of one record are serialised by the caller (the job's lock).
func (r *records) update(id string, f func(*record)) (record, error) {
	rec, ok := r.get(id)
	if !ok {
		return record{}, errors.New("no such job record")
	}
	f(&rec)
	return rec, r.put(rec)
}

// drop removes a record that never became a job.
func (r *records) drop(id string) {
	r.mu.Lock()
	rec := r.byID[id]
	delete(r.byID, id)
	if rec != nil && rec.Key != "" && r.byKey[rec.Owner+"\x00"+rec.Key] == id {
		delete(r.byKey, rec.Owner+"\x00"+rec.Key)
	}
	if rec != nil && rec.Final != nil {
		for _, o := range rec.Final.Outputs {
			if oid := assets.IDOf(o.Root, o.Rel); r.byOutput[oid].job == id {
				delete(r.byOutput, oid)
			}
		}
	}
	r.mu.Unlock()
	_ = os.Remove(r.path(id))
	_ = os.Remove(r.workflowPath(id))
}

func (r *records) workflowPath(id string) string { return filepath.Join(r.dir, id+".workflow.json") }

func (r *records) putWorkflow(id string, wf []byte) error {
	return tagstore.WriteFile(r.workflowPath(id), wf)
}

func (r *records) workflow(id string) ([]byte, error) { return os.ReadFile(r.workflowPath(id)) }

// prune removes the records that expired more than expiredGrace ago.
func (r *records) prune(now time.Time) int {
	r.mu.Lock()
	var gone []string
	for id, rec := range r.byID {
		if now.Sub(rec.Expires) > expiredGrace {
			gone = append(gone, id)
		}
	}
	r.mu.Unlock()
	for _, id := range gone {
		r.drop(id)
	}
	return len(gone)
}

// ids lists the records (for the output index rebuilt at start).
func (r *records) all() []record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]record, 0, len(r.byID))
	for _, rec := range r.byID {
		out = append(out, *rec)
	}
	return out
}
