package jobs

import (
	"sync"
	"time"
)

// Registry remembers the prompts submitted through comfyshim: when, and by
// whom. ComfyUI forgets a prompt deleted from its queue; the registry lets
// its status say "cancelled" instead of "not found". It is bounded: the
// oldest entries go first.
type Registry struct {
	mu    sync.Mutex
	max   int
	byID  map[string]Submission
	order []string // insertion order, for eviction
	head  int
}

// Submission is one prompt comfyshim saw accepted.
type Submission struct {
	Owner   string    // who submitted it ("" without keys)
	Created time.Time // when ComfyUI accepted it
}

// NewRegistry keeps up to max submissions (at least 1).
func NewRegistry(max int) *Registry {
	if max < 1 {
		max = 1
	}
	return &Registry{max: max, byID: map[string]Submission{}}
}

// Add records a submission, evicting the oldest beyond the bound.
func (r *Registry) Add(id string, s Submission) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.byID[id]; ok {
		r.byID[id] = s
		return
	}
	if len(r.byID) >= r.max {
		old := r.order[r.head]
		delete(r.byID, old)
		r.order[r.head] = id
		r.head = (r.head + 1) % len(r.order)
	} else {
		r.order = append(r.order, id)
	}
	r.byID[id] = s
}

// Get returns the submission of id, if remembered.
func (r *Registry) Get(id string) (Submission, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.byID[id]
	return s, ok
}
