package assets

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
	"github.com/comfyshim/comfyshim/tagstore/catalog"
)

func TestDefaultTags(t *testing.T) {
	cases := []struct {
		root, rel string
		tags      []string
	}{
		{"input", "a.png", []string{"input"}},
		{"output", "sub/dir/b.png", []string{"output"}},
		{"models", "checkpoints/sd.safetensors", []string{"model_type:checkpoints", "models"}},
		{"models", "loras/x/y.safetensors", []string{"model_type:loras", "models"}},
		{"models", "loose.bin", []string{"models"}},
		{"input", "pasted/image.png", []string{"input", "pasted"}},
		{"input", "3d/mesh.glb", []string{"3d", "input"}},
		{"input", "webcam/a/b.png", []string{"input", "webcam"}},
		{"input", "painter.png", []string{"input"}},
		{"output", "pasted/x.png", []string{"output"}},
	}
	for _, tc := range cases {
		f := &catalog.File{Root: tc.root, Rel: tc.rel}
		if tc.root == "models" {
			f.Category, _, _ = strings.Cut(tc.rel, "/")
			if !strings.Contains(tc.rel, "/") {
				f.Category = ""
			}
		}
		if got := DefaultTags(f); !reflect.DeepEqual(got, tc.tags) {
			t.Errorf("DefaultTags(%s, %s) = %q", tc.root, tc.rel, got)
		}
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
	a := &catalog.File{ID: catalog.ID("output", "a.png"), Root: "output", Rel: "a.png", Name: "a.png"}
	b := &catalog.File{ID: catalog.ID("output", "b.png"), Root: "output", Rel: "b.png", Name: "B.png"}
	snap := &catalog.Snapshot{Files: []*catalog.File{a, b}, Gen: 3}
	idx := BuildIndex(snap, fakeTags{a.ID: {"x"}, catalog.ID("output", "gone.png"): {"y"}})
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
	var files []*catalog.File
	for i := 0; i < 300; i++ {
		rel := fmt.Sprintf("f%03d.png", i)
		files = append(files, &catalog.File{ID: catalog.ID("output", rel), Root: "output", Rel: rel, Name: rel, Size: int64(i % 7)})
	}
	slices.SortFunc(files, func(a, b *catalog.File) int { return strings.Compare(a.ID, b.ID) })
	snap := &catalog.Snapshot{Files: files, Gen: 1}
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
			seed := tagstore.Entry{Path: f.Path(), Tags: DefaultTags(f)}
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

// An update copies only what it changes: the index it came from stays as
// it was, whichever chunk the change falls in.
func TestUpdateLeavesTheOldIndexAlone(t *testing.T) {
	var files []*catalog.File
	for i := 0; i < 2500; i++ { // three chunks
		rel := fmt.Sprintf("f%04d.png", i)
		files = append(files, &catalog.File{ID: catalog.ID("output", rel), Root: "output", Rel: rel, Name: rel})
	}
	slices.SortFunc(files, func(a, b *catalog.File) int { return strings.Compare(a.ID, b.ID) })
	before := fakeTags{}
	old := BuildIndex(&catalog.Snapshot{Files: files, Gen: 1}, before)
	after := fakeTags{}
	changed := []string{files[0].ID, files[1500].ID, files[2499].ID}
	for _, id := range changed {
		after[id] = []string{"new"}
	}
	nx := old.Update(changed, after, 8)
	for i := range files {
		if got := old.at(i).Tags; !reflect.DeepEqual(got, []string{"output"}) {
			t.Fatalf("old index changed at %d: %v", i, got)
		}
		want := []string{"output"}
		if slices.Contains(changed, files[i].ID) {
			want = []string{"new"}
		}
		if got := nx.at(i).Tags; !reflect.DeepEqual(got, want) {
			t.Fatalf("new index at %d: %v, want %v", i, got, want)
		}
	}
	if old.Counts["new"] != 0 || nx.Counts["new"] != 3 || nx.Counts["output"] != 2497 {
		t.Fatalf("counts old %v new %v", old.Counts, nx.Counts)
	}
}

// TestHashCacheSurvivesRestart: background hashes are cached beside the
// tags file by size and modification time, known at once after a restart,
// and recomputed when the file changes.
func TestHashCacheSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	models := filepath.Join(dir, "models")
	p := filepath.Join(models, "checkpoints", "m.safetensors")
	os.MkdirAll(filepath.Dir(p), 0o755)
	os.WriteFile(p, []byte("weights"), 0o644)
	tags := filepath.Join(dir, "tags.json")
	open := func() *Library {
		l, err := Open([]Root{{Name: "models", Dir: models}}, tags, Options{HashRoots: []string{"models"}, FilesDebounce: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := open()
	if !l.WaitHashed(10 * time.Second) {
		t.Fatal("not hashed")
	}
	a := l.Current().at(0)
	h1, _ := l.Hash(a)
	l.Close()
	if _, err := os.Stat(tags + ".hashes"); err != nil {
		t.Fatal(err)
	}
	l = open()
	defer l.Close()
	if h, ok := l.Hash(l.Current().at(0)); !ok || h != h1 {
		t.Fatalf("after a restart: %q %v, want %q", h, ok, h1)
	}
	os.WriteFile(p, []byte("new weights!"), 0o644)
	eventually(t, func() bool {
		x := l.Current()
		if x.Len() != 1 {
			return false
		}
		h, ok := l.Hash(x.at(0))
		return ok && h != h1
	})
}

// eventually polls cond until it holds, failing the test after 10 s.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPace(t *testing.T) {
	for _, c := range []struct {
		done    int64
		elapsed time.Duration
		rate    int64
		want    time.Duration
	}{
		{64 << 20, 0, 64 << 20, time.Second},
		{64 << 20, 400 * time.Millisecond, 64 << 20, 600 * time.Millisecond},
		{64 << 20, 2 * time.Second, 64 << 20, -time.Second},
		{1 << 30, 0, 0, 0},
	} {
		if got := pace(c.done, c.elapsed, c.rate); got != c.want {
			t.Errorf("pace(%d, %v, %d) = %v, want %v", c.done, c.elapsed, c.rate, got, c.want)
		}
	}
}
