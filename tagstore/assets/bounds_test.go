package assets

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/comfyshim/comfyshim/tagstore/catalog"
)

// Filters naming tags of a client's choosing cannot grow the index's
// memory without bound: sets of unknown tags are not cached, and known
// ones only within the budget.
func TestFilterCachesAreBounded(t *testing.T) {
	const n = 20_000
	files := make([]*catalog.File, n)
	tags := fakeTags{}
	for i := range files {
		rel := fmt.Sprintf("f%05d.png", i)
		files[i] = &catalog.File{ID: catalog.ID("output", rel), Root: "output", Rel: rel, Name: rel}
		tags[files[i].ID] = []string{"output", fmt.Sprint("own-", i)} // one tag per asset: 20k distinct tags
	}
	slices.SortFunc(files, func(a, b *catalog.File) int { return strings.Compare(a.ID, b.ID) })
	idx := BuildIndex(&catalog.Snapshot{Files: files, Gen: 1}, tags)
	setSize := 8*len(newBitset(n)) + 64

	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	// Eight hostile queries naming 100 new unknown tags each, then 2,000
	// distinct known tags.
	for q := 0; q < 8; q++ {
		var f Filter
		for k := 0; k < 100; k++ {
			f.None = append(f.None, fmt.Sprintf("nope-%d-%d", q, k))
		}
		if _, total := idx.List(f, "name", false, 0, 1); total != n {
			t.Fatalf("unknown excluded tags changed the result: %d", total)
		}
		if _, total := idx.List(Filter{All: f.None[:1]}, "name", false, 0, 1); total != 0 {
			t.Fatalf("unknown required tag matched %d", total)
		}
	}
	if len(idx.bits) != 0 {
		t.Fatalf("%d sets cached for tags nobody carries", len(idx.bits))
	}
	for i := 0; i < 2000; i++ {
		if _, total := idx.List(Filter{All: []string{fmt.Sprint("own-", i)}}, "name", false, 0, 1); total != 1 {
			t.Fatalf("own-%d matched %d", i, total)
		}
	}
	if got := len(idx.bits) * setSize; got > bitsetBudget {
		t.Fatalf("cached sets take %d bytes, budget %d", got, bitsetBudget)
	}
	grown := int64(heap()) - int64(before)
	t.Logf("20k assets: 800 unknown and 2,000 known filter tags grew the heap by %.1f MiB (%d sets cached, budget %d MiB)",
		float64(grown)/(1<<20), len(idx.bits), bitsetBudget>>20)
	if grown > int64(bitsetBudget)+(8<<20) {
		t.Fatalf("heap grew by %d bytes", grown)
	}

	// A small budget still gives right answers, evicting as it goes.
	old := bitsetBudget
	bitsetBudget = 10 * setSize
	t.Cleanup(func() { bitsetBudget = old })
	idx = BuildIndex(&catalog.Snapshot{Files: files, Gen: 1}, tags)
	for i := 0; i < 50; i++ {
		if _, total := idx.List(Filter{Any: []string{fmt.Sprint("own-", i), fmt.Sprint("own-", i+1)}}, "name", false, 0, 1); total != 2 {
			t.Fatalf("own-%d: %d", i, total)
		}
		if len(idx.bits) > 10 {
			t.Fatalf("%d sets cached over a budget of 10", len(idx.bits))
		}
	}
}
