// Package assets joins ComfyUI's files (catalog) with their tags (the
// sidecar store): each file is an asset carrying the sidecar's tags if it
// has an entry, else its default tags. A background goroutine keeps the
// joined index current; requests only read it.
package assets

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/comfyshim/comfyshim/tagstore"
	"github.com/comfyshim/comfyshim/tagstore/catalog"
)

// Errors of tag changes, as the store reports them.
var (
	ErrInvalidTags    = tagstore.ErrInvalidTags
	ErrSidecarInvalid = tagstore.ErrSidecarInvalid
)

// Change is the outcome of adding or removing tags.
type Change = tagstore.Change

// MaxTagsPerRequest bounds the tags one request may name.
const MaxTagsPerRequest = tagstore.MaxTagsPerRequest

// NormalizeTags prepares tags from a request (see tagstore.NormalizeTags).
func NormalizeTags(in []string) ([]string, error) { return tagstore.NormalizeTags(in) }

// IDOf is the id of the file at rel inside root (input, output, temp or
// models, where rel starts with the category).
func IDOf(root, rel string) string { return catalog.ID(root, rel) }

// CanonicalID checks an asset id and returns its canonical form.
func CanonicalID(id string) (string, error) { return tagstore.CanonicalID(id) }

// Library is the asset collection: ComfyUI's files joined with their tags.
type Library struct {
	roots     []Root
	hashes    *hashIndex
	hashRoots []string
	hashRate  int64
	hashDone  chan struct{}
	files     *catalog.Catalog
	tags      *tagstore.Store
	log       *slog.Logger

	index   atomic.Pointer[Index]
	kick    chan struct{} // the files or the tags changed
	quit    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	updated *sync.Cond // broadcast after each published index
}

// Root is one folder whose files are assets.
type Root = catalog.Root

// ExtraModelPaths reads ComfyUI's extra_model_paths.yaml (see catalog).
func ExtraModelPaths(file string) ([]Root, error) { return catalog.ExtraModelPaths(file) }

// CheckTagsFile reports what would stop Open with this tags file.
func CheckTagsFile(path string) error { return tagstore.Check(path) }

// Options tune a Library; the zero value is fine.
type Options struct {
	Logger *slog.Logger
	// TagsDebounce: how long a hand edit of the tags file settles before
	// it is reloaded (100 ms). FilesDebounce: the same for the asset
	// folders (200 ms). RescanEvery: full rescans of the folders (5 min).
	TagsDebounce, FilesDebounce, RescanEvery time.Duration
	// OnReload, OnWrite and OnCompact report reloads of the tags file,
	// durable writes of changes (journal appends) and compactions.
	OnReload  func(error)
	OnWrite   func(time.Duration, error)
	OnCompact func(time.Duration, error)
	// HashRoots names the roots whose files are hashed in the background
	// for lookups by hash ("models", say); uploads are always hashed.
	HashRoots []string
	// HashRate bounds the background hashing's reads, in bytes per second
	// (0: unbounded).
	HashRate int64
}

// Open loads the tags file, scans the folders, and starts keeping their
// join current.
func Open(roots []Root, tagsFile string, opts Options) (*Library, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	l := &Library{roots: roots, hashes: openHashes(tagsFile), hashRoots: opts.HashRoots, hashRate: opts.HashRate, hashDone: make(chan struct{}), log: opts.Logger, kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	l.updated = sync.NewCond(&l.mu)
	// Reading the tags file and walking the folders take about as long as
	// each other at 100k assets: do both at once.
	type scan struct {
		files *catalog.Catalog
		err   error
	}
	scanned := make(chan scan, 1)
	go func() {
		files, err := catalog.New(roots, catalog.Options{Logger: opts.Logger, OnChange: l.filesChanged,
			Debounce: opts.FilesDebounce, RescanEvery: opts.RescanEvery})
		scanned <- scan{files, err}
	}()
	var err error
	l.tags, err = tagstore.Open(tagsFile, tagstore.Options{Logger: opts.Logger, OnReload: opts.OnReload, OnWrite: opts.OnWrite, OnCompact: opts.OnCompact,
		OnChange: l.Changed, Debounce: opts.TagsDebounce})
	sc := <-scanned
	if err != nil {
		if sc.files != nil {
			_ = sc.files.Close()
		}
		return nil, err
	}
	if sc.err != nil {
		_ = l.tags.Close()
		return nil, fmt.Errorf("asset folders: %w", sc.err)
	}
	l.files = sc.files
	x := BuildIndex(l.files.Snapshot(), l.tags)
	l.index.Store(x)
	go x.Warm() // ready to answer now; the default order follows
	go l.loop()
	go l.hashLoop()
	return l, nil
}

// Flush writes every acknowledged tag change into the tags file now (they
// are durable in its journal already; the file catches up within about a
// second by itself).
func (l *Library) Flush() error { return l.tags.Compact() }

// Err is nil while the tags file is valid, else why it was rejected.
func (l *Library) Err() error { return l.tags.Err() }

// Changed tells the library that the files or the tags changed. It never
// blocks: use it as the catalog's and the store's OnChange.
func (l *Library) Changed() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// filesChanged is the catalog's news: the index and the background hashing
// both have work. (Tag changes wake only the index: a pass of the hasher
// over every file per tag change would cost a core at 100k assets.)
func (l *Library) filesChanged() {
	l.Changed()
	select {
	case l.hashes.wake <- struct{}{}:
	default:
	}
}

// Close stops watching and joining. Acknowledged tag changes are on disk.
func (l *Library) Close() error {
	select {
	case <-l.quit:
		return nil
	default:
	}
	close(l.quit)
	<-l.done
	<-l.hashDone
	l.mu.Lock()
	l.updated.Broadcast() // release waiters
	l.mu.Unlock()
	return errors.Join(l.files.Close(), l.tags.Close())
}

func (l *Library) loop() {
	defer close(l.done)
	for {
		select {
		case <-l.kick:
			l.refresh()
		case <-l.quit:
			return
		}
	}
}

// refresh brings the index up to date: a patch of the assets whose tags
// changed, or a rebuild when the files changed or the tags were reloaded.
func (l *Library) refresh() {
	snap := l.files.Snapshot()
	gen := l.tags.Generation()
	x := l.index.Load()
	switch {
	case x.FileGen == snap.Gen && x.TagGen == gen:
		return
	case x.FileGen == snap.Gen:
		if ids, ok := l.tags.ChangedSince(x.TagGen); ok {
			x = x.Update(ids, l.tags, gen)
			break
		}
		x = BuildIndex(snap, l.tags)
	default:
		x = BuildIndex(snap, l.tags)
	}
	x.Warm() // before it is published: the index it replaces serves meanwhile
	l.mu.Lock()
	l.index.Store(x)
	l.updated.Broadcast()
	l.mu.Unlock()
}

// Current is the latest joined index. It never rebuilds anything.
func (l *Library) Current() *Index { return l.index.Load() }

// waitTags waits until the index reflects tag generation gen, so a client
// that changed tags sees the change in its next listing.
func (l *Library) waitTags(gen uint64) {
	l.Changed()
	l.waitIndex(func(x *Index) bool { return x.TagGen >= gen }, 0)
}

// waitIndex waits until the published index satisfies done, the library
// closes, or d passes (d = 0: no limit).
func (l *Library) waitIndex(done func(*Index) bool, d time.Duration) {
	var deadline time.Time
	if d > 0 {
		deadline = time.Now().Add(d)
		// Wake the waiter at the deadline even if nothing is published.
		stop := time.AfterFunc(d, func() { l.mu.Lock(); l.updated.Broadcast(); l.mu.Unlock() })
		defer stop.Stop()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for !done(l.index.Load()) && (deadline.IsZero() || time.Now().Before(deadline)) {
		select {
		case <-l.quit:
			return
		default:
		}
		l.updated.Wait()
	}
}

// Get returns one asset as it is now, from the files and the tags
// directly: single-asset requests never wait for the index.
//
// An asset the tags file knows whose file is gone is still found, tagged
// "missing" (as OSS ComfyUI does), so a client holding its id learns what
// became of it; listings never show it, and its tags come back with the file.
func (l *Library) Get(id string) (Asset, bool) {
	if f, ok := l.files.Snapshot().Get(id); ok {
		return AssetOf(f, l.tags), true
	}
	e, ok := l.tags.Get(id)
	if !ok {
		return Asset{}, false
	}
	root, rel, _ := strings.Cut(e.Path, "/")
	f := &catalog.File{ID: id, Root: root, Rel: rel, Name: path.Base(rel), MIME: catalog.MIMEType(rel),
		CreatedNS: e.UpdatedAt.UnixNano(), ModifiedNS: e.UpdatedAt.UnixNano(), AccessedNS: e.UpdatedAt.UnixNano()}
	if root == "models" {
		if _, inside, ok := strings.Cut(rel, "/"); ok {
			f.LoaderPath = inside
		}
	}
	tags := append([]string{MissingTag}, e.Tags...)
	slices.Sort(tags)
	return Asset{File: f, Tags: slices.Compact(tags), Missing: true}, true
}

// MissingTag marks an asset whose file is gone.
const MissingTag = "missing"

// AddTags adds tags to an asset; RemoveTags removes them. An asset whose
// tags were never edited starts from its default tags, so removing a
// default tag sticks. They return once the change is durable and visible
// in listings.
func (l *Library) AddTags(a Asset, tags []string) (Change, error) { return l.change(a, tags, false) }

// RemoveTags: see AddTags.
func (l *Library) RemoveTags(a Asset, tags []string) (Change, error) { return l.change(a, tags, true) }

func (l *Library) change(a Asset, tags []string, remove bool) (Change, error) {
	seed := tagstore.Entry{Path: a.Path(), Tags: DefaultTags(a.File)}
	op := l.tags.Add
	if remove {
		op = l.tags.Remove
	}
	ch, err := op(a.ID, seed, tags)
	if err == nil {
		l.waitTags(l.tags.Generation())
	}
	return ch, err
}

// Extra returns what the API set on an asset beside its tags: its name
// ("" when not renamed) and user_metadata (nil when none).
func (l *Library) Extra(id string) (name string, meta json.RawMessage) {
	e, _ := l.tags.Get(id)
	return e.Name, e.Meta
}

// Update names what to change of an asset: its complete tag list, its name,
// its user_metadata; nil fields stay.
type Update = tagstore.Update

// Update changes an asset's tags, name and user_metadata and returns once
// the change is durable and listed.
func (l *Library) Update(a Asset, u Update) (tagstore.Entry, error) {
	seed := tagstore.Entry{Path: a.Path(), Tags: DefaultTags(a.File)}
	e, err := l.tags.Set(a.ID, seed, u)
	if err == nil {
		l.waitTags(l.tags.Generation())
	}
	return e, err
}

// MatchMeta returns the assets whose user_metadata has every key of want
// with an equal value; a list in want also matches any one of its values.
func (l *Library) MatchMeta(want map[string]any) map[string]bool {
	out := map[string]bool{}
	l.tags.WithMeta(func(id string, raw json.RawMessage) {
		var have map[string]any
		if json.Unmarshal(raw, &have) != nil {
			return
		}
		for k, v := range want {
			hv, ok := have[k]
			if !ok || !metaEqual(hv, v) {
				return
			}
		}
		out[id] = true
	})
	return out
}

func metaEqual(have, want any) bool {
	if list, ok := want.([]any); ok {
		if reflect.DeepEqual(have, want) {
			return true
		}
		for _, w := range list {
			if reflect.DeepEqual(have, w) {
				return true
			}
		}
		return false
	}
	return reflect.DeepEqual(have, want)
}

// Open opens an asset's file for reading.
func (l *Library) Open(a Asset) (*os.File, error) {
	if a.Missing {
		return nil, os.ErrNotExist
	}
	return l.files.Open(a.File)
}

// SidecarTagCounts are the tags of every sidecar entry, listed or not.
func (l *Library) SidecarTagCounts() map[string]int { return l.tags.TagCounts() }

// Stats are sizes for metrics: assets listed, distinct tags on them, and
// entries in the tags file.
func (l *Library) Stats() (assets, tags, sidecar int) {
	x := l.Current()
	return x.Len(), len(x.Counts), l.tags.Len()
}
