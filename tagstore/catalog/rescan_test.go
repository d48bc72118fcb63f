package catalog

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// watched starts a catalog over dir/output that reports each new snapshot.
func watched(t testing.TB, dir string) (*Catalog, chan struct{}) {
	t.Helper()
	changed := make(chan struct{}, 64)
	c, err := New([]Root{{Name: "output", Dir: filepath.Join(dir, "output")}}, Options{
		Debounce: 10 * time.Millisecond,
		OnChange: func() { changed <- struct{}{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, changed
}

func rels(c *Catalog) []string {
	var out []string
	for _, f := range c.Snapshot().Files {
		out = append(out, f.Rel)
	}
	sort.Strings(out)
	return out
}

func waitSnapshot(t *testing.T, changed chan struct{}, c *Catalog, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for fmt.Sprint(rels(c)) != want {
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("listed %v, want %s", rels(c), want)
		}
	}
}

// A file event rescans the folder it touched, not the tree; folders that
// appear, vanish or move are picked up with everything in them.
func TestFileEventsRescanOnlyTheirFolder(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"a", "b", "c"} {
		write(t, filepath.Join(dir, "output", d, "1.png"), "x")
	}
	c, changed := watched(t, dir)
	if got := fmt.Sprint(rels(c)); got != "[a/1.png b/1.png c/1.png]" {
		t.Fatalf("first scan %s", got)
	}

	before := c.reads.Load()
	write(t, filepath.Join(dir, "output", "b", "2.png"), "y")
	waitSnapshot(t, changed, c, "[a/1.png b/1.png b/2.png c/1.png]")
	if n := c.reads.Load() - before; n != 1 {
		t.Fatalf("a new file read %d folders, want 1", n)
	}

	// A changed file keeps its id and gets a new record.
	old, _ := c.Snapshot().Get(ID("output", "b/2.png"))
	write(t, filepath.Join(dir, "output", "b", "2.png"), "longer")
	deadline := time.After(10 * time.Second)
	for f, _ := c.Snapshot().Get(ID("output", "b/2.png")); f.Size == old.Size; f, _ = c.Snapshot().Get(ID("output", "b/2.png")) {
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("size change not seen")
		}
	}

	// A new folder with files in it, copied in at once.
	os.MkdirAll(filepath.Join(dir, "tmp", "d", "deep"), 0o755)
	os.WriteFile(filepath.Join(dir, "tmp", "d", "deep", "3.png"), nil, 0o644)
	os.Rename(filepath.Join(dir, "tmp", "d"), filepath.Join(dir, "output", "d"))
	waitSnapshot(t, changed, c, "[a/1.png b/1.png b/2.png c/1.png d/deep/3.png]")

	// A folder renamed: its files move; one removed: they go.
	os.Rename(filepath.Join(dir, "output", "a"), filepath.Join(dir, "output", "z"))
	os.RemoveAll(filepath.Join(dir, "output", "c"))
	waitSnapshot(t, changed, c, "[b/1.png b/2.png d/deep/3.png z/1.png]")

	// A full rescan finds the same.
	c.Rescan()
	if got := fmt.Sprint(rels(c)); got != "[b/1.png b/2.png d/deep/3.png z/1.png]" {
		t.Fatalf("full rescan %s", got)
	}
}

// BenchmarkFileEvent100k is the work one file event costs in a catalog of
// 100,000 files in 100 folders: a rescan of its folder; full-rescan is what
// every event cost before.
func BenchmarkFileEvent100k(b *testing.B) {
	dir := b.TempDir()
	for d := 0; d < 100; d++ {
		sub := filepath.Join(dir, "output", fmt.Sprintf("d%03d", d))
		os.MkdirAll(sub, 0o755)
		for i := 0; i < 1000; i++ {
			os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%04d.png", i)), nil, 0o644)
		}
	}
	c, err := New([]Root{{Name: "output", Dir: filepath.Join(dir, "output")}}, Options{Debounce: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	touched := filepath.Join(dir, "output", "d050", "f0001.png")
	b.Run("folder-rescan", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			os.WriteFile(touched, []byte(fmt.Sprint(i)), 0o644)
			b.StartTimer()
			c.rescanPaths(map[string]struct{}{touched: {}})
		}
	})
	b.Run("full-rescan", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			os.WriteFile(touched, []byte(fmt.Sprint(i)), 0o644)
			b.StartTimer()
			c.Rescan()
		}
	})
}

func TestMerge(t *testing.T) {
	mk := func(ids ...string) []*File {
		var out []*File
		for _, id := range ids {
			out = append(out, &File{ID: id})
		}
		return out
	}
	ids := func(fs []*File) string {
		var s []string
		for _, f := range fs {
			s = append(s, f.ID)
		}
		return fmt.Sprint(s)
	}
	files := mk("b", "d", "f", "h")
	cases := []struct {
		removed []string
		added   []*File
		want    string
	}{
		{nil, nil, "[b d f h]"},
		{[]string{"b", "h"}, nil, "[d f]"},
		{nil, mk("a", "e", "z"), "[a b d e f h z]"},
		{[]string{"d"}, mk("d"), "[b d f h]"},   // changed: replaced
		{[]string{"x"}, mk("c"), "[b c d f h]"}, // removing what is not there
		{[]string{"b", "d", "f", "h"}, mk("g"), "[g]"},
	}
	for _, tc := range cases {
		rm := map[string]bool{}
		for _, id := range tc.removed {
			rm[id] = true
		}
		if got := ids(merge(files, rm, tc.added)); got != tc.want {
			t.Errorf("merge(-%v +%v) = %s, want %s", tc.removed, ids(tc.added), got, tc.want)
		}
	}
}
