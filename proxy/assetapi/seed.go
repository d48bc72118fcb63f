package assetapi

import (
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// seeder runs OSS ComfyUI's "seed" (a full rescan of the asset folders) in
// the background, one at a time, and announces it on the websocket with
// the events the web app waits for: assets.seed.started, .completed or
// .cancelled. A rescan cannot stop midway: a cancel makes it end as
// cancelled once the walk finishes.
type seeder struct {
	mu        sync.Mutex
	running   bool
	cancelled bool
	progress  map[string]int // scanned, total, created, skipped
	errors    []string
	done      chan struct{}
}

func (a *api) emit(typ string, data map[string]any) {
	if a.opts.Events != nil {
		a.opts.Events(typ, data)
	}
}

func (a *api) seed(c *gin.Context) {
	roots := []string{"models", "input", "output"}
	if body, ok := a.readBody(c); !ok {
		return
	} else if len(body) > 0 {
		var req struct {
			Roots []string `json:"roots"`
		}
		if json.Unmarshal(body, &req) == nil && req.Roots != nil {
			roots = slices.DeleteFunc(slices.Clone(req.Roots), func(r string) bool { return r != "models" && r != "input" && r != "output" })
			if len(roots) == 0 {
				fail(c, &Error{http.StatusBadRequest, "INVALID_BODY", "No valid roots specified"})
				return
			}
		}
	}
	s := &a.seeding
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		c.JSON(http.StatusConflict, gin.H{"status": "already_running"})
		return
	}
	s.running, s.cancelled, s.errors = true, false, []string{}
	s.progress = map[string]int{"scanned": 0, "total": 0, "created": 0, "skipped": 0}
	s.done = make(chan struct{})
	done := s.done
	s.mu.Unlock()
	go a.runSeed(roots, done)
	if b, _ := boolParam(c.Request.URL.Query(), "wait", false); b {
		<-done
		st := a.seedStatus()
		c.JSON(http.StatusOK, gin.H{"status": "completed", "progress": st["progress"], "errors": st["errors"]})
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"status": "started"})
}

func (a *api) runSeed(roots []string, done chan struct{}) {
	start := time.Now()
	before := a.lib.Current().Len()
	a.emit("assets.seed.started", map[string]any{"roots": roots, "total": before})
	_, after := a.lib.Rescan()
	s := &a.seeding
	s.mu.Lock()
	created := max(after-before, 0)
	s.progress = map[string]int{"scanned": after, "total": after, "created": created, "skipped": after - created}
	cancelled := s.cancelled
	s.running = false
	s.mu.Unlock()
	if cancelled {
		a.emit("assets.seed.cancelled", map[string]any{"scanned": after, "total": after, "created": created})
	} else {
		a.emit("assets.seed.completed", map[string]any{"scanned": after, "total": after, "created": created,
			"skipped": after - created, "elapsed": time.Since(start).Round(time.Millisecond).Seconds()})
	}
	close(done)
}

func (a *api) seedStatus() gin.H {
	s := &a.seeding
	s.mu.Lock()
	defer s.mu.Unlock()
	state := "IDLE"
	if s.running {
		state = "RUNNING"
		if s.cancelled {
			state = "CANCELLING"
		}
	}
	var progress any
	if s.progress != nil {
		progress = s.progress
	}
	errs := s.errors
	if errs == nil {
		errs = []string{}
	}
	return gin.H{"state": state, "progress": progress, "errors": errs}
}

func (a *api) getSeedStatus(c *gin.Context) { c.JSON(http.StatusOK, a.seedStatus()) }

func (a *api) cancelSeed(c *gin.Context) {
	s := &a.seeding
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		s.cancelled = true
		c.JSON(http.StatusOK, gin.H{"status": "cancelling"})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "idle"})
}

// prune is OSS's "mark missing": here assets whose file is gone are already
// missing (found by id, never listed); it reports how many there are.
func (a *api) prune(c *gin.Context) {
	s := &a.seeding
	s.mu.Lock()
	running := s.running
	s.mu.Unlock()
	if running {
		c.JSON(http.StatusConflict, gin.H{"status": "scan_running", "marked": 0})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "completed", "marked": a.lib.Missing()})
}
