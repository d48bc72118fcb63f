package catalog

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/comfyshim/comfyshim/tagstore"
)

// Tags is where an Index reads edited tags from; *tagstore.Store is one.
type Tags interface {
	Get(id string) (tagstore.Entry, bool)
	TagCounts() map[string]int
	Generation() uint64
}

// Asset is a listed file with its effective tags.
type Asset struct {
	*File
	Tags []string // sorted
}

// Index joins one catalog snapshot with one generation of the tag store:
// every listed asset with its tags, and tag usage counts. Immutable once
// built; orderings are computed on first use.
type Index struct {
	Assets  []Asset // sorted by id
	byID    map[string]int
	Counts  map[string]int // tag -> listed assets carrying it
	FileGen uint64
	TagGen  uint64

	mu     sync.Mutex
	orders map[string][]int32 // sort key -> asset positions, ascending
}

// BuildIndex joins snap and tags. A sidecar entry replaces the file's
// default tags; sidecar entries without a file are not listed.
func BuildIndex(snap *Snapshot, tags Tags) *Index {
	tagGen := tags.Generation() // read first: a later change then forces a rebuild
	idx := &Index{
		Assets:  make([]Asset, len(snap.Files)),
		byID:    make(map[string]int, len(snap.Files)),
		Counts:  map[string]int{},
		FileGen: snap.Gen,
		TagGen:  tagGen,
		orders:  map[string][]int32{},
	}
	for i, f := range snap.Files {
		a := AssetOf(f, tags)
		idx.Assets[i] = a
		idx.byID[f.ID] = i
		for _, tag := range a.Tags {
			idx.Counts[tag]++
		}
	}
	return idx
}

// AssetOf gives a file its effective tags: the sidecar's entry if it has
// one, else the defaults.
func AssetOf(f *File, tags Tags) Asset {
	if e, ok := tags.Get(f.ID); ok {
		return Asset{File: f, Tags: e.Tags}
	}
	return Asset{File: f, Tags: f.Defaults}
}

// Get returns the listed asset with id.
func (x *Index) Get(id string) (Asset, bool) {
	i, ok := x.byID[id]
	if !ok {
		return Asset{}, false
	}
	return x.Assets[i], true
}

// Filter selects assets as the Cloud listing does.
type Filter struct {
	All          []string // must carry every one (include_tags, tags_all)
	Any          []string // must carry at least one, when set (tags_any)
	None         []string // must carry none (exclude_tags, tags_none)
	NameContains string   // case-insensitive substring of the name
	Nothing      bool     // match no asset
}

// Match reports whether a passes f.
func (f *Filter) Match(a *Asset) bool {
	if f.Nothing {
		return false
	}
	for _, t := range f.All {
		if !has(a.Tags, t) {
			return false
		}
	}
	for _, t := range f.None {
		if has(a.Tags, t) {
			return false
		}
	}
	if len(f.Any) > 0 && !slices.ContainsFunc(f.Any, func(t string) bool { return has(a.Tags, t) }) {
		return false
	}
	if f.NameContains != "" && !containsFold(a.Name, f.NameContains) {
		return false
	}
	return true
}

func has(sorted []string, t string) bool {
	_, ok := slices.BinarySearch(sorted, t)
	return ok
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// Sort keys accepted by List.
var SortKeys = []string{"name", "created_at", "updated_at", "size", "last_access_time"}

// List returns the page [offset, offset+limit) of assets matching f in the
// given order (ties broken by id), and how many match in all.
func (x *Index) List(f Filter, sortKey string, desc bool, offset, limit int) (page []Asset, total int) {
	order := x.order(sortKey)
	n := len(order)
	for k := 0; k < n; k++ {
		i := order[k]
		if desc {
			i = order[n-1-k]
		}
		a := &x.Assets[i]
		if !f.Match(a) {
			continue
		}
		if total >= offset && len(page) < limit {
			page = append(page, *a)
		}
		total++
	}
	return page, total
}

// Histogram counts the tags of the assets matching f.
func (x *Index) Histogram(f Filter) map[string]int {
	out := map[string]int{}
	for i := range x.Assets {
		a := &x.Assets[i]
		if f.Match(a) {
			for _, t := range a.Tags {
				out[t]++
			}
		}
	}
	return out
}

func (x *Index) order(key string) []int32 {
	x.mu.Lock()
	defer x.mu.Unlock()
	if o, ok := x.orders[key]; ok {
		return o
	}
	o := make([]int32, len(x.Assets))
	for i := range o {
		o[i] = int32(i)
	}
	cmpTime := func(a, b time.Time) int { return a.Compare(b) }
	slices.SortStableFunc(o, func(i, j int32) int {
		a, b := &x.Assets[i], &x.Assets[j]
		var c int
		switch key {
		case "name":
			c = strings.Compare(a.Name, b.Name)
		case "created_at":
			c = cmpTime(a.Created, b.Created)
		case "updated_at":
			c = cmpTime(a.Modified, b.Modified)
		case "size":
			c = cmp.Compare(a.Size, b.Size)
		case "last_access_time":
			c = cmpTime(a.Accessed, b.Accessed)
		}
		return c // Assets are in id order and the sort is stable: ties stay by id
	})
	x.orders[key] = o
	return o
}

// TagCount is one row of a tag listing.
type TagCount struct {
	Name  string
	Count int
}

// TagList returns tag counts filtered by a literal prefix, ordered by count
// (descending, ties by name) or by name. With includeZero, tags known to
// the sidecar but carried by no listed asset are included with count 0.
func (x *Index) TagList(prefix string, byName, includeZero bool, sidecar map[string]int) []TagCount {
	out := make([]TagCount, 0, len(x.Counts))
	for t, n := range x.Counts {
		if strings.HasPrefix(t, prefix) {
			out = append(out, TagCount{t, n})
		}
	}
	if includeZero {
		for t := range sidecar {
			if _, listed := x.Counts[t]; !listed && strings.HasPrefix(t, prefix) {
				out = append(out, TagCount{t, 0})
			}
		}
	}
	slices.SortFunc(out, func(a, b TagCount) int {
		if !byName {
			if c := cmp.Compare(b.Count, a.Count); c != 0 {
				return c
			}
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}
