package watch

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

func next(t *testing.T, w *Watcher) Batch {
	t.Helper()
	select {
	case b := <-w.Batches():
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no batch")
	}
	return Batch{}
}

// A burst of events on several files arrives as one batch naming each.
func TestBurstsArriveAsOneBatch(t *testing.T) {
	dir := t.TempDir()
	w, err := New(50*time.Millisecond, func(ev fsnotify.Event) bool { return ev.Op == fsnotify.Chmod }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		os.WriteFile(filepath.Join(dir, "a"), []byte{byte(i)}, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "b"), nil, 0o644)
	b := next(t, w)
	if _, ok := b.Paths[filepath.Join(dir, "a")]; !ok {
		t.Fatalf("batch %v lacks a", b.Paths)
	}
	// b may land in the same burst or the next one.
	if _, ok := b.Paths[filepath.Join(dir, "b")]; !ok {
		if b2 := next(t, w); len(b2.Paths) == 0 {
			t.Fatal("b never reported")
		}
	}
	os.Chmod(filepath.Join(dir, "a"), 0o600) // ignored
	os.WriteFile(filepath.Join(dir, "c"), nil, 0o644)
	if b := next(t, w); len(b.Paths) != 1 {
		t.Fatalf("chmod not ignored: %v", b.Paths)
	}
}

// A slow consumer gets the bursts it missed merged, not dropped.
func TestSlowConsumerGetsMergedBatches(t *testing.T) {
	dir := t.TempDir()
	w, err := New(10*time.Millisecond, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Add(dir)
	for _, name := range []string{"x", "y", "z"} {
		os.WriteFile(filepath.Join(dir, name), nil, 0o644)
		time.Sleep(40 * time.Millisecond) // separate bursts
	}
	seen := map[string]bool{}
	for len(seen) < 3 {
		for p := range next(t, w).Paths {
			seen[filepath.Base(p)] = true
		}
	}
}
