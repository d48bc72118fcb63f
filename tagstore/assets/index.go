package assets

import (
	"cmp"
	"math/bits"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/comfyshim/comfyshim/tagstore"
	"github.com/comfyshim/comfyshim/tagstore/catalog"
)

// Tags is where an Index reads edited tags from; *tagstore.Store is one.
type Tags interface {
	Get(id string) (tagstore.Entry, bool)
	TagCounts() map[string]int
	Generation() uint64
}

// Asset is a listed file with its effective tags.
type Asset struct {
	*catalog.File
	Tags    []string // sorted
	Missing bool     // tagged, but its file is gone: addressable by id, never listed
}

// Index joins one catalog snapshot with one generation of the tag store:
// every listed asset with its tags, and tag usage counts. Immutable once
// built; orderings and per-tag sets are computed on first use and cached.
type Index struct {
	files   []*catalog.File // sorted by id; the snapshot's, shared by updated indexes
	tags    tagChunks       // tags[i]: the tags of files[i]
	Counts  map[string]int  // tag -> listed assets carrying it
	FileGen uint64
	TagGen  uint64

	orders *orderCache // depends on the files only: shared by updated indexes

	bitsMu    sync.Mutex          // guards bits and tagOrders
	bits      map[string]bitset   // tag -> assets carrying it, bounded by bitsetBudget
	empty     bitset              // the set of a tag nobody carries
	tagOrders map[bool][]TagCount // by name (true) or by count (false)
}

type orderCache struct {
	mu sync.Mutex
	m  map[string][]int32 // sort key -> asset positions, ascending
}

// chunkBits sizes the copy-on-write chunks of an index's per-asset tags: an
// update copies the chunks it touches (1,024 entries each), not every
// asset, so a tag change costs the same at 1M assets as at 1k.
const chunkBits = 10

// tagChunks holds one tag list per asset in chunks. Chunks are shared
// between an index and its updates; a chunk is copied before it is written.
type tagChunks [][][]string

func newTagChunks(n int) tagChunks {
	c := make(tagChunks, (n+1<<chunkBits-1)>>chunkBits)
	for k := range c {
		c[k] = make([][]string, min(1<<chunkBits, n-k<<chunkBits))
	}
	return c
}

func (c tagChunks) at(i int) []string { return c[i>>chunkBits][i&(1<<chunkBits-1)] }

// set writes tag list i, copying its chunk first unless copied says this
// index owns it already.
func (c tagChunks) set(i int, t []string, copied map[int]bool) {
	k := i >> chunkBits
	if !copied[k] {
		c[k] = slices.Clone(c[k])
		copied[k] = true
	}
	c[k][i&(1<<chunkBits-1)] = t
}

// Len is the number of listed assets.
func (x *Index) Len() int { return len(x.files) }

// at is the asset at position i.
func (x *Index) at(i int) Asset { return Asset{File: x.files[i], Tags: x.tags.at(i)} }

// bitset has bit i set when asset i carries the tag. Never modified once
// stored in an Index.
type bitset []uint64

func newBitset(n int) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) has(i int) bool { return b[i>>6]&(1<<(uint(i)&63)) != 0 }
func (b bitset) set(i int)      { b[i>>6] |= 1 << (uint(i) & 63) }
func (b bitset) clear(i int)    { b[i>>6] &^= 1 << (uint(i) & 63) }

// BuildIndex joins snap and tags. A sidecar entry replaces the file's
// default tags; sidecar entries without a file are not listed.
func BuildIndex(snap *catalog.Snapshot, tags Tags) *Index {
	tagGen := tags.Generation() // read first: a later change then forces an update
	idx := &Index{
		files:     snap.Files,
		tags:      newTagChunks(len(snap.Files)),
		Counts:    map[string]int{},
		FileGen:   snap.Gen,
		TagGen:    tagGen,
		orders:    &orderCache{m: map[string][]int32{}},
		bits:      map[string]bitset{},
		tagOrders: map[bool][]TagCount{},
	}
	for i, f := range snap.Files {
		a := AssetOf(f, tags)
		idx.tags[i>>chunkBits][i&(1<<chunkBits-1)] = a.Tags // fresh chunks: no copy
		for _, tag := range a.Tags {
			idx.Counts[tag]++
		}
	}
	return idx
}

// Update returns an index for the same files in which the assets with the
// given ids carry their current tags, at tag generation gen. It copies only
// the chunks of tag lists and the per-tag sets it touches, instead of
// rebuilding everything.
func (x *Index) Update(ids []string, tags Tags, gen uint64) *Index {
	nx := &Index{
		files:     x.files,
		tags:      slices.Clone(x.tags),
		Counts:    make(map[string]int, len(x.Counts)),
		FileGen:   x.FileGen,
		TagGen:    gen,
		orders:    x.orders,
		tagOrders: map[bool][]TagCount{},
	}
	for t, n := range x.Counts {
		nx.Counts[t] = n
	}
	x.bitsMu.Lock()
	nx.bits = make(map[string]bitset, len(x.bits))
	for t, b := range x.bits {
		nx.bits[t] = b
	}
	x.bitsMu.Unlock()
	copied := map[string]bool{}
	chunks := map[int]bool{}
	touch := func(t string) bitset {
		b, ok := nx.bits[t]
		if ok && !copied[t] {
			b = slices.Clone(b)
			nx.bits[t], copied[t] = b, true
		}
		return b
	}
	for _, id := range ids {
		i, ok := nx.position(id)
		if !ok {
			continue // a sidecar entry whose file is not listed
		}
		old := nx.tags.at(i)
		a := AssetOf(nx.files[i], tags)
		nx.tags.set(i, a.Tags, chunks)
		for _, t := range old {
			if !has(a.Tags, t) {
				if nx.Counts[t]--; nx.Counts[t] == 0 {
					delete(nx.Counts, t)
				}
				if b := touch(t); b != nil {
					b.clear(i)
				}
			}
		}
		for _, t := range a.Tags {
			if !has(old, t) {
				nx.Counts[t]++
				if b := touch(t); b != nil {
					b.set(i)
				}
			}
		}
	}
	return nx
}

// bitsetBudget bounds the memory of one index's cached per-tag sets. A
// filter names tags of the client's choosing: unbounded, a few queries
// naming new tags would grow the heap without end.
var bitsetBudget = 32 << 20

// tagBits returns the set of assets carrying t. Sets of tags that some
// listed asset carries are cached within bitsetBudget (an arbitrary one is
// dropped when it is full); a tag nobody carries gets a shared empty set.
func (x *Index) tagBits(t string) bitset {
	x.bitsMu.Lock()
	defer x.bitsMu.Unlock()
	if b, ok := x.bits[t]; ok {
		return b
	}
	if x.Counts[t] == 0 {
		if x.empty == nil {
			x.empty = newBitset(x.Len())
		}
		return x.empty
	}
	b := newBitset(x.Len())
	for i := range x.files {
		if has(x.tags.at(i), t) {
			b.set(i)
		}
	}
	size := 8*len(b) + 64
	for t := range x.bits {
		if (len(x.bits)+1)*size <= bitsetBudget {
			break
		}
		delete(x.bits, t)
	}
	if size <= bitsetBudget {
		x.bits[t] = b
	}
	return b
}

// position finds an asset by id (Assets are sorted by id).
func (x *Index) position(id string) (int, bool) {
	return slices.BinarySearchFunc(x.files, id, func(f *catalog.File, id string) int { return strings.Compare(f.ID, id) })
}

// AssetOf gives a file its effective tags: the sidecar's entry if it has
// one, else its default tags (an unedited asset keeps them).
func AssetOf(f *catalog.File, tags Tags) Asset {
	if e, ok := tags.Get(f.ID); ok {
		return Asset{File: f, Tags: e.Tags}
	}
	return Asset{File: f, Tags: DefaultTags(f)}
}

// Get returns the listed asset with id.
func (x *Index) Get(id string) (Asset, bool) {
	i, ok := x.position(id)
	if !ok {
		return Asset{}, false
	}
	return x.at(i), true
}

// Filter selects assets as the Cloud listing does.
type Filter struct {
	All          []string // must carry every one (include_tags, tags_all)
	Any          []string // must carry at least one, when set (tags_any)
	None         []string // must carry none (exclude_tags, tags_none)
	NameContains string   // case-insensitive substring of the name
	Nothing      bool     // match no asset
	// IDs, when not nil, restricts the match to these assets (the ones a
	// metadata_filter selected).
	IDs map[string]bool
}

func has(sorted []string, t string) bool {
	_, ok := slices.BinarySearch(sorted, t)
	return ok
}

// Sort keys accepted by List.
var SortKeys = []string{"name", "created_at", "updated_at", "size", "last_access_time"}

// scratch reuses the per-request sets of filters: at 1M assets each is
// 125 KiB, and a fresh one per request is garbage the collector must chase.
var scratch sync.Pool

func scratchBitset(n int) bitset {
	words := (n + 63) / 64
	if p, ok := scratch.Get().(*bitset); ok && cap(*p) >= words {
		b := (*p)[:words]
		clear(b)
		return b
	}
	return make(bitset, words)
}

func releaseBitset(b bitset) {
	if b != nil {
		scratch.Put(&b)
	}
}

// matching returns the set of assets f selects, or nil when f has no
// tag filter (every asset, before the name filter). The caller releases it.
func (x *Index) matching(f *Filter) bitset {
	if len(f.All) == 0 && len(f.Any) == 0 && len(f.None) == 0 && !f.Nothing && f.IDs == nil {
		return nil
	}
	m := scratchBitset(x.Len())
	if f.Nothing {
		return m
	}
	if f.IDs != nil {
		for id := range f.IDs {
			if i, ok := x.position(id); ok {
				m.set(i)
			}
		}
	} else {
		for w := range m {
			m[w] = ^uint64(0)
		}
		if tail := x.Len() % 64; tail != 0 {
			m[len(m)-1] = 1<<uint(tail) - 1
		}
	}
	for _, t := range f.All {
		b := x.tagBits(t)
		for w := range m {
			m[w] &= b[w]
		}
	}
	if len(f.Any) > 0 {
		anyOf := scratchBitset(x.Len())
		for _, t := range f.Any {
			b := x.tagBits(t)
			for w := range anyOf {
				anyOf[w] |= b[w]
			}
		}
		for w := range m {
			m[w] &= anyOf[w]
		}
		releaseBitset(anyOf)
	}
	for _, t := range f.None {
		b := x.tagBits(t)
		for w := range m {
			m[w] &^= b[w]
		}
	}
	return m
}

// selector returns a predicate on asset positions implementing f, the
// number of assets it selects when that is known without a scan (-1 if
// not), and a release to call once the predicate is no longer used.
func (x *Index) selector(f Filter) (func(i int) bool, int, func()) {
	m := x.matching(&f)
	release := func() { releaseBitset(m) }
	switch {
	case f.NameContains != "":
		sub := strings.ToLower(f.NameContains)
		return func(i int) bool {
			return (m == nil || m.has(i)) && strings.Contains(strings.ToLower(x.files[i].Name), sub)
		}, -1, release
	case m == nil:
		return func(int) bool { return true }, x.Len(), release
	default:
		n := 0
		for _, w := range m {
			n += bits.OnesCount64(w)
		}
		return m.has, n, release
	}
}

// List returns the page [offset, offset+limit) of assets matching f in the
// given order (ties broken by id), and how many match in all.
func (x *Index) List(f Filter, sortKey string, desc bool, offset, limit int) (page []Asset, total int) {
	match, known, release := x.selector(f)
	defer release()
	order := x.order(sortKey)
	n := len(order)
	seen := 0
	for k := 0; k < n; k++ {
		i := order[k]
		if desc {
			i = order[n-1-k]
		}
		if !match(int(i)) {
			continue
		}
		if seen >= offset {
			if len(page) == limit {
				if known >= 0 {
					break // the total is already known: stop at the page's end
				}
				seen++
				continue
			}
			page = append(page, x.at(int(i)))
		}
		seen++
	}
	if known >= 0 {
		return page, known
	}
	return page, seen
}

// Histogram counts the tags of the assets matching f.
func (x *Index) Histogram(f Filter) map[string]int {
	match, _, release := x.selector(f)
	defer release()
	out := map[string]int{}
	for i := range x.files {
		if match(i) {
			for _, t := range x.tags.at(i) {
				out[t]++
			}
		}
	}
	return out
}

func (x *Index) order(key string) []int32 {
	x.orders.mu.Lock()
	defer x.orders.mu.Unlock()
	if o, ok := x.orders.m[key]; ok {
		return o
	}
	o := sortedBy(x.files, key)
	x.orders.m[key] = o
	return o
}

// sortedBy returns the positions of files in the order of key, ties by
// position (files are in id order). Numeric keys are copied next to their
// positions first: a sort that chased a pointer per comparison took more
// than a second at 1M assets.
func sortedBy(files []*catalog.File, key string) []int32 {
	o := make([]int32, len(files))
	if key == "name" {
		for i := range o {
			o[i] = int32(i)
		}
		slices.SortFunc(o, func(i, j int32) int {
			if c := strings.Compare(files[i].Name, files[j].Name); c != 0 {
				return c
			}
			return cmp.Compare(i, j)
		})
		return o
	}
	type keyed struct {
		k int64
		i int32
	}
	ks := make([]keyed, len(files))
	for i, f := range files {
		var k int64
		switch key {
		case "created_at":
			k = f.CreatedNS
		case "updated_at":
			k = f.ModifiedNS
		case "size":
			k = f.Size
		case "last_access_time":
			k = f.AccessedNS
		}
		ks[i] = keyed{k, int32(i)}
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		if c := cmp.Compare(a.k, b.k); c != 0 {
			return c
		}
		return cmp.Compare(a.i, b.i)
	})
	for n, kv := range ks {
		o[n] = kv.i
	}
	return o
}

// Warm computes what the first listing in the default order would
// otherwise compute inline: the order by creation time.
func (x *Index) Warm() { x.order("created_at") }

// TagCount is one row of a tag listing.
type TagCount struct {
	Name  string
	Count int
}

// TagList returns tag counts filtered by a literal prefix, ordered by count
// (descending, ties by name) or by name. With includeZero, tags known to
// the sidecar but carried by no listed asset are included with count 0.
func (x *Index) TagList(prefix string, byName, includeZero bool, sidecar map[string]int) []TagCount {
	all := x.sortedTags(byName)
	if includeZero {
		all = slices.Clone(all)
		for t := range sidecar {
			if _, listed := x.Counts[t]; !listed {
				all = append(all, TagCount{t, 0})
			}
		}
		sortTags(all, byName)
	}
	if prefix == "" {
		return all
	}
	out := make([]TagCount, 0, 16)
	for _, tc := range all {
		if strings.HasPrefix(tc.Name, prefix) {
			out = append(out, tc)
		}
	}
	return out
}

// sortedTags returns the index's tag counts in the given order, sorted once
// per index. Shared: read only.
func (x *Index) sortedTags(byName bool) []TagCount {
	x.bitsMu.Lock()
	defer x.bitsMu.Unlock()
	if x.tagOrders[byName] == nil {
		out := make([]TagCount, 0, len(x.Counts))
		for t, n := range x.Counts {
			out = append(out, TagCount{t, n})
		}
		sortTags(out, byName)
		x.tagOrders[byName] = out
	}
	return x.tagOrders[byName]
}

func sortTags(tags []TagCount, byName bool) {
	slices.SortFunc(tags, func(a, b TagCount) int {
		if !byName {
			if c := cmp.Compare(b.Count, a.Count); c != 0 {
				return c
			}
		}
		return strings.Compare(a.Name, b.Name)
	})
}

// Mark is where a keyset page ends: the sort it was taken under and the
// last asset's sort value and id. Paging by mark stays in place while
// assets are added or removed before it, which offsets do not.
type Mark struct {
	Key  string // sort key
	Desc bool
	Str  string // the name, for Key "name"
	Num  int64  // the size, or a time in Unix nanoseconds
	ID   string
}

// MarkOf is the mark just after a in the order key, desc.
func MarkOf(a Asset, key string, desc bool) Mark {
	m := Mark{Key: key, Desc: desc, ID: a.ID}
	switch key {
	case "name":
		m.Str = a.Name
	case "size":
		m.Num = a.Size
	case "created_at":
		m.Num = a.CreatedNS
	case "updated_at":
		m.Num = a.ModifiedNS
	case "last_access_time":
		m.Num = a.AccessedNS
	}
	return m
}

// cmpMark compares the asset at position i with m in m's order (ascending).
func (x *Index) cmpMark(i int32, m Mark) int {
	f := x.files[i]
	var c int
	switch m.Key {
	case "name":
		c = strings.Compare(f.Name, m.Str)
	case "size":
		c = cmp.Compare(f.Size, m.Num)
	case "created_at":
		c = cmp.Compare(f.CreatedNS, m.Num)
	case "updated_at":
		c = cmp.Compare(f.ModifiedNS, m.Num)
	case "last_access_time":
		c = cmp.Compare(f.AccessedNS, m.Num)
	}
	if c == 0 {
		c = strings.Compare(f.ID, m.ID)
	}
	return c
}

// ListAfter returns up to limit assets matching f that follow m in m's
// order, how many match in all, and whether more follow the page.
func (x *Index) ListAfter(f Filter, m Mark, limit int) (page []Asset, total int, more bool) {
	match, known, release := x.selector(f)
	defer release()
	order := x.order(m.Key)
	n := len(order)
	// order is ascending by (value, id): find where m falls in it.
	next := func(yield func(i int32) bool) {
		if m.Desc {
			for k := sort.Search(n, func(k int) bool { return x.cmpMark(order[k], m) >= 0 }) - 1; k >= 0; k-- {
				if !yield(order[k]) {
					return
				}
			}
			return
		}
		for k := sort.Search(n, func(k int) bool { return x.cmpMark(order[k], m) > 0 }); k < n; k++ {
			if !yield(order[k]) {
				return
			}
		}
	}
	for i := range next {
		if !match(int(i)) {
			continue
		}
		if len(page) == limit {
			more = true
			break
		}
		page = append(page, x.at(int(i)))
	}
	total = known
	if total < 0 {
		total = 0
		for i := range x.files {
			if match(i) {
				total++
			}
		}
	}
	return page, total, more
}
