// Package watch turns fsnotify events into debounced batches of changed
// paths. Editors and copies fire bursts of events; consumers want one
// reaction per burst, and a full look when events were lost.
package watch

import (
	"log/slog"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Batch is what changed during one burst.
type Batch struct {
	Paths map[string]struct{} // paths named by events (the entry, not its folder)
	Lost  bool                // events were lost (queue overflow): look at everything
}

// Watcher watches folders (not recursively) and delivers a Batch once no
// event has arrived for the debounce interval.
type Watcher struct {
	fs       *fsnotify.Watcher
	debounce time.Duration
	ignore   func(fsnotify.Event) bool
	log      *slog.Logger
	out      chan Batch
	quit     chan struct{}
	done     chan struct{}
}

// New starts a watcher. ignore, if not nil, drops events that concern no one
// (for example chmod-only events).
func New(debounce time.Duration, ignore func(fsnotify.Event) bool, log *slog.Logger) (*Watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	w := &Watcher{fs: fw, debounce: debounce, ignore: ignore, log: log,
		out: make(chan Batch, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go w.loop()
	return w, nil
}

// Add watches a folder; adding one twice is harmless.
func (w *Watcher) Add(dir string) error { return w.fs.Add(dir) }

// Remove stops watching a folder.
func (w *Watcher) Remove(dir string) { _ = w.fs.Remove(dir) }

// Batches delivers the bursts. A consumer slower than the events gets them
// merged into fewer, larger batches; none is dropped.
func (w *Watcher) Batches() <-chan Batch { return w.out }

// Close stops the watcher; Batches is closed.
func (w *Watcher) Close() error {
	select {
	case <-w.quit:
		return nil
	default:
	}
	close(w.quit)
	err := w.fs.Close()
	<-w.done
	return err
}

func (w *Watcher) loop() {
	defer close(w.done)
	defer close(w.out)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	pending := Batch{Paths: map[string]struct{}{}}
	var ready *Batch // a batch waiting for the consumer
	for {
		var out chan Batch
		if ready != nil {
			out = w.out
		}
		select {
		case ev, ok := <-w.fs.Events:
			if !ok {
				return
			}
			if w.ignore != nil && w.ignore(ev) {
				continue
			}
			pending.Paths[ev.Name] = struct{}{}
			timer.Reset(w.debounce)
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			w.log.Warn("watching files", "err", err)
			pending.Lost = true // on overflow events were lost
			timer.Reset(w.debounce)
		case <-timer.C:
			if ready == nil {
				ready = &Batch{Paths: map[string]struct{}{}}
			}
			for p := range pending.Paths {
				ready.Paths[p] = struct{}{}
			}
			ready.Lost = ready.Lost || pending.Lost
			pending = Batch{Paths: map[string]struct{}{}}
		case out <- deref(ready):
			ready = nil
		case <-w.quit:
			timer.Stop()
			return
		}
	}
}

func deref(b *Batch) Batch {
	if b == nil {
		return Batch{}
	}
	return *b
}
