package catalog

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/comfyshim/comfyshim/tagstore"
)

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDefaultTagsAndIDs(t *testing.T) {
	cases := []struct {
		root, rel string
		tags      []string
	}{
		{"input", "a.png", []string{"input"}},
		{"output", "sub/dir/b.png", []string{"output"}},
		{"models", "checkpoints/sd.safetensors", []string{"model_type:checkpoints", "models"}},
		{"models", "loras/x/y.safetensors", []string{"model_type:loras", "models"}},
		{"models", "loose.bin", []string{"models"}},
	}
	for _, tc := range cases {
		if got := DefaultTags(tc.root, tc.rel); !reflect.DeepEqual(got, tc.tags) {
			t.Errorf("DefaultTags(%s, %s) = %q", tc.root, tc.rel, got)
		}
	}
	first, again := ID("input", "a.png"), ID("input", "a.png")
	if first != again || first == ID("output", "a.png") {
		t.Fatal("ids must depend on root and path only")
	}
	if _, err := tagstore.CanonicalID(ID("input", "a.png")); err != nil {
		t.Fatal(err)
	}
}

func TestScanSkipsWhatIsNotAnAsset(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "output", "ok.png"), "x")
	write(t, filepath.Join(dir, "output", ".hidden.png"), "x")
	write(t, filepath.Join(dir, "output", ".cache", "in-hidden-dir.png"), "x")
	write(t, filepath.Join(dir, "models", "checkpoints", "put_checkpoints_here"), "")
	write(t, filepath.Join(dir, "secret.txt"), "secret")
	if err := os.Symlink(filepath.Join(dir, "secret.txt"), filepath.Join(dir, "output", "link.txt")); err != nil {
		t.Fatal(err)
	}
	c, err := New([]Root{{Name: "output", Dir: filepath.Join(dir, "output")}, {Name: "models", Dir: filepath.Join(dir, "models")}, {Name: "input", Dir: filepath.Join(dir, "missing")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	snap := c.Snapshot()
	if len(snap.Files) != 1 || snap.Files[0].Rel != "ok.png" {
		for _, f := range snap.Files {
			t.Log(f.Root, f.Rel)
		}
		t.Fatalf("want only output/ok.png, got %d files", len(snap.Files))
	}
}

func TestNewFilesAppearWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "output")
	os.MkdirAll(out, 0o755)
	c, err := New([]Root{{Name: "output", Dir: out}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	gen := c.Snapshot().Gen
	write(t, filepath.Join(out, "new", "deep", "ComfyUI_00001_.png"), "img")
	id := ID("output", "new/deep/ComfyUI_00001_.png")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if f, ok := c.Snapshot().Get(id); ok {
			if f.Size != 3 || f.MIME != "image/png" || c.Snapshot().Gen == gen {
				t.Fatalf("%+v", f)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new file in a new subfolder never listed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	os.Remove(filepath.Join(out, "new", "deep", "ComfyUI_00001_.png"))
	for {
		if _, ok := c.Snapshot().Get(id); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("removed file still listed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type fakeTags map[string][]string

func (f fakeTags) Get(id string) (tagstore.Entry, bool) {
	t, ok := f[id]
	return tagstore.Entry{Tags: t}, ok
}
func (f fakeTags) TagCounts() map[string]int { return nil }
func (f fakeTags) Generation() uint64        { return 7 }

func TestIndexUsesSidecarTagsOverDefaults(t *testing.T) {
	a := &File{ID: ID("output", "a.png"), Root: "output", Rel: "a.png", Name: "a.png", Defaults: []string{"output"}}
	b := &File{ID: ID("output", "b.png"), Root: "output", Rel: "b.png", Name: "B.png", Defaults: []string{"output"}}
	snap := &Snapshot{Files: []*File{a, b}, Gen: 3}
	idx := BuildIndex(snap, fakeTags{a.ID: {"x"}, ID("output", "gone.png"): {"y"}})
	if got, _ := idx.Get(a.ID); !reflect.DeepEqual(got.Tags, []string{"x"}) {
		t.Fatalf("sidecar tags not used: %q", got.Tags)
	}
	if !reflect.DeepEqual(idx.Counts, map[string]int{"x": 1, "output": 1}) {
		t.Fatalf("counts %v", idx.Counts)
	}
	if idx.FileGen != 3 || idx.TagGen != 7 {
		t.Fatal("generations not recorded")
	}
	page, total := idx.List(Filter{NameContains: "b."}, "name", false, 0, 10)
	if total != 1 || page[0].ID != b.ID {
		t.Fatalf("name filter: %d", total)
	}
}

// TestUpdateMatchesRebuild applies random tag changes through a real store
// and checks that patching the index gives what a full rebuild gives,
// including the cached per-tag sets behind the filters.
func TestUpdateMatchesRebuild(t *testing.T) {
	store, err := tagstore.Open(filepath.Join(t.TempDir(), "tags.json"), tagstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var files []*File
	for i := 0; i < 300; i++ {
		rel := fmt.Sprintf("f%03d.png", i)
		files = append(files, &File{ID: ID("output", rel), Root: "output", Rel: rel, Name: rel, Size: int64(i % 7), Defaults: []string{"output"}})
	}
	slices.SortFunc(files, func(a, b *File) int { return strings.Compare(a.ID, b.ID) })
	snap := &Snapshot{Files: files, Gen: 1}
	idx := BuildIndex(snap, store)
	filters := []Filter{{All: []string{"a"}}, {None: []string{"b", "output"}}, {Any: []string{"a", "c"}, None: []string{"b"}}, {All: []string{"output"}, NameContains: "F01"}}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 40; round++ {
		for _, f := range filters { // warm the per-tag sets so Update must patch them
			idx.List(f, "size", round%2 == 0, 0, 5)
		}
		for k := 0; k < 10; k++ {
			f := files[rng.IntN(len(files))]
			tag := []string{"a", "b", "c", "output"}[rng.IntN(4)]
			seed := tagstore.Entry{Path: f.Path(), Tags: f.Defaults}
			if rng.IntN(2) == 0 {
				store.Add(f.ID, seed, []string{tag})
			} else {
				store.Remove(f.ID, seed, []string{tag})
			}
		}
		gen := store.Generation()
		ids, ok := store.ChangedSince(idx.TagGen)
		if !ok {
			t.Fatal("change log lost recent writes")
		}
		idx = idx.Update(ids, store, gen)
		fresh := BuildIndex(snap, store)
		if !reflect.DeepEqual(idx.Counts, fresh.Counts) {
			t.Fatalf("round %d: counts %v, rebuild %v", round, idx.Counts, fresh.Counts)
		}
		for _, f := range filters {
			for _, desc := range []bool{false, true} {
				p1, n1 := idx.List(f, "size", desc, 3, 20)
				p2, n2 := fresh.List(f, "size", desc, 3, 20)
				if n1 != n2 || !reflect.DeepEqual(p1, p2) {
					t.Fatalf("round %d filter %+v: %d vs %d assets", round, f, n1, n2)
				}
			}
			if !reflect.DeepEqual(idx.Histogram(f), fresh.Histogram(f)) {
				t.Fatalf("round %d: histogram differs for %+v", round, f)
			}
		}
	}
}
