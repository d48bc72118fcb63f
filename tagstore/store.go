// Package tagstore keeps asset tags in a JSON sidecar file: durable atomic
// writes with group commit, an in-memory index for reads, and a watch on the
// file so a person can edit it by hand while the server runs.
package tagstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/patrickmn/go-cache"

	"github.com/comfyshim/comfyshim/tagstore/internal/watch"
)

var (
	// ErrSidecarInvalid is returned by mutations while the file on disk does
	// not parse: writing would overwrite a person's unfinished edit.
	ErrSidecarInvalid = errors.New("tags file on disk is invalid")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("tag store closed")
)

// Change is the outcome of one Add or Remove.
type Change struct {
	Changed   []string // tags added (Add) or removed (Remove), sorted
	Unchanged []string // tags already present (Add) or not present (Remove), sorted
	Tags      []string // the asset's tags afterwards, sorted
}

// maxBatch bounds how many mutations one file write carries.
const maxBatch = 4096

// defaultDebounce is how long the watcher waits after the last event on the
// file before reloading it: editors save in bursts of events.
const defaultDebounce = 100 * time.Millisecond

// Store is the tag sidecar. Reads are served from memory and never touch the
// disk; mutations are serialised through one committer goroutine that batches
// those arriving together into a single durable write.
type Store struct {
	path string
	log  *slog.Logger

	view      atomic.Pointer[view] // what readers see; replaced whole on reload
	gen       atomic.Uint64        // bumped on every change readers can see
	logMu     sync.Mutex
	changeLog []change // recent writes, oldest first
	logFloor  uint64   // ChangedSince knows nothing before this generation
	invalid   atomic.Pointer[error]

	ops      chan *op
	reloads  chan struct{}
	quit     chan struct{}
	loopDone chan struct{} // closed when the committer has stopped
	wg       sync.WaitGroup
	closed   atomic.Bool
	watcher  *watch.Watcher

	// Owned by the committer goroutine.
	doc  map[string]Entry
	ids  []string // sorted keys of doc
	raws [][]byte // ids[i] as rendered in the file; nil until first needed
	disk fileSig  // the file as last read or written
	mode os.FileMode
	buf  []byte

	onReload func(error)
	onWrite  func(time.Duration, error)
	onChange func()
}

// view is the readers' state. index maps id -> Entry; aggregates holds
// values derived from all entries ("tag_counts": map[string]int). Both hold
// immutable values: an entry is replaced, never modified.
type view struct {
	index      *cache.Cache
	aggregates *cache.Cache
}

const aggTagCounts = "tag_counts"

type op struct {
	id     string
	seed   Entry
	tags   []string
	remove bool
	reply  chan opResult
}

type opResult struct {
	change Change
	err    error
}

// Options tune a Store; the zero value is fine.
type Options struct {
	Logger *slog.Logger
	// OnReload is called after each reload caused by an external edit, with
	// nil or the reason the file was rejected.
	OnReload func(error)
	// OnWrite is called after each write of the file with its duration.
	OnWrite func(time.Duration, error)
	// OnChange is called (from the committer; it must not block) whenever
	// what readers see changed: a write or a reload.
	OnChange func()
	// Debounce is how long an edit must settle before it is reloaded (100 ms).
	Debounce time.Duration
}

// Open loads the sidecar at path (a missing file is an empty store, created
// on the first write) and starts watching it. A file or folder that cannot be
// read, or a file that does not parse, is an error naming the path.
func Open(path string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("tags file %s: %w", path, err)
	}
	dir := filepath.Dir(abs)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("tags file folder %s: %w", dir, err)
	}
	if err := probeWritable(dir); err != nil {
		return nil, fmt.Errorf("tags file folder %s is not writable: %w", dir, err)
	}
	s := &Store{
		path:     abs,
		log:      log.With("tags_file", abs),
		ops:      make(chan *op, maxBatch),
		reloads:  make(chan struct{}, 1),
		quit:     make(chan struct{}),
		loopDone: make(chan struct{}),
		doc:      map[string]Entry{},
		mode:     0o644,
		onReload: opts.OnReload,
		onWrite:  opts.OnWrite,
		onChange: opts.OnChange,
	}
	if opts.Debounce <= 0 {
		opts.Debounce = defaultDebounce
	}
	s.view.Store(newView(nil))
	if err := s.syncFromDisk(); err != nil {
		return nil, fmt.Errorf("tags file %s: %w", abs, err)
	}
	if s.watcher, err = watch.New(opts.Debounce, nil, log); err != nil {
		return nil, fmt.Errorf("watching %s: %w", dir, err)
	}
	if err := s.watcher.Add(dir); err != nil {
		_ = s.watcher.Close()
		return nil, fmt.Errorf("watching %s: %w", dir, err)
	}
	s.wg.Add(2)
	go s.commitLoop()
	go s.watchLoop()
	return s, nil
}

// Check reports what would stop Open at path, without creating or starting
// anything: a folder that cannot be created or written, a file that cannot be
// read or does not parse.
func Check(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("tags file %s: %w", path, err)
	}
	dir := filepath.Dir(abs)
	existing := dir
	for {
		fi, err := os.Stat(existing)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("tags file folder %s: %s is not a folder", dir, existing)
			}
			break
		}
		if !errors.Is(err, os.ErrNotExist) || filepath.Dir(existing) == existing {
			return fmt.Errorf("tags file folder %s: %w", dir, err)
		}
		existing = filepath.Dir(existing)
	}
	if err := probeWritable(existing); err != nil {
		return fmt.Errorf("tags file folder %s is not writable: %w", existing, err)
	}
	data, err := os.ReadFile(abs)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tags file %s: %w", abs, err)
	}
	if _, err := Parse(data); err != nil {
		return fmt.Errorf("tags file %s: %w", abs, err)
	}
	return nil
}

// Close stops watching and committing. Mutations already acknowledged are on
// disk; later calls fail with ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.quit)
	err := s.watcher.Close()
	s.wg.Wait()
	return err
}

// Get returns an asset's entry; ok is false when the sidecar has none.
func (s *Store) Get(id string) (Entry, bool) {
	v, ok := s.view.Load().index.Get(id)
	if !ok {
		return Entry{}, false
	}
	return v.(Entry), true
}

// TagCounts returns how many sidecar entries carry each tag. The map is
// shared: do not modify it.
func (s *Store) TagCounts() map[string]int {
	v, _ := s.view.Load().aggregates.Get(aggTagCounts)
	return v.(map[string]int)
}

// Len is the number of assets in the sidecar.
func (s *Store) Len() int { return s.view.Load().index.ItemCount() }

// Generation changes whenever what readers see changes, so callers can cache
// values derived from the store.
func (s *Store) Generation() uint64 { return s.gen.Load() }

// Err is nil while the sidecar on disk is valid, else why it was rejected
// (wrapping ErrSidecarInvalid and a *ParseError with line and column).
func (s *Store) Err() error {
	if e := s.invalid.Load(); e != nil {
		return *e
	}
	return nil
}

// Add adds tags to asset id. seed gives the asset's path and tags to start
// from when the sidecar has no entry for it yet (its default tags). Tags are
// normalised with NormalizeTags. It returns once the change is durable.
func (s *Store) Add(id string, seed Entry, tags []string) (Change, error) {
	return s.mutate(id, seed, tags, false)
}

// Remove removes tags from asset id; see Add. Removing every tag leaves an
// entry with no tags, so the asset's default tags do not come back.
func (s *Store) Remove(id string, seed Entry, tags []string) (Change, error) {
	return s.mutate(id, seed, tags, true)
}

func (s *Store) mutate(id string, seed Entry, tags []string, remove bool) (Change, error) {
	cid, err := CanonicalID(id)
	if err != nil {
		return Change{}, err
	}
	norm, err := NormalizeTags(tags)
	if err != nil {
		return Change{}, err
	}
	if s.closed.Load() {
		return Change{}, ErrClosed
	}
	o := &op{id: cid, seed: seed, tags: norm, remove: remove, reply: make(chan opResult, 1)}
	select {
	case s.ops <- o:
	case <-s.quit:
		return Change{}, ErrClosed
	}
	select {
	case r := <-o.reply:
		return r.change, r.err
	case <-s.quit:
		// The committer answers every op it took before it stops; one queued
		// after its last look was never taken.
		<-s.loopDone
		select {
		case r := <-o.reply:
			return r.change, r.err
		default:
			return Change{}, ErrClosed
		}
	}
}

func newView(entries map[string]Entry) *view {
	items := make(map[string]cache.Item, len(entries))
	counts := map[string]int{}
	for id, e := range entries {
		items[id] = cache.Item{Object: e}
		for _, t := range e.Tags {
			counts[t]++
		}
	}
	// No expiry and no janitor: entries live until replaced.
	agg := cache.New(cache.NoExpiration, 0)
	agg.Set(aggTagCounts, counts, cache.NoExpiration)
	return &view{index: cache.NewFrom(cache.NoExpiration, 0, items), aggregates: agg}
}

func (s *Store) commitLoop() {
	defer s.wg.Done()
	defer close(s.loopDone)
	for {
		select {
		case o := <-s.ops:
			batch := []*op{o}
		drain:
			for len(batch) < maxBatch {
				select {
				case o := <-s.ops:
					batch = append(batch, o)
				default:
					break drain
				}
			}
			s.commit(batch)
		case <-s.reloads:
			err := s.syncFromDisk()
			if err != nil {
				s.log.Error("tags file rejected; serving the last good state and refusing changes until it is fixed", "err", err)
			}
			if s.onReload != nil {
				s.onReload(err)
			}
		case <-s.quit:
			// Answer whatever was queued before Close.
			for {
				select {
				case o := <-s.ops:
					o.reply <- opResult{err: ErrClosed}
				default:
					return
				}
			}
		}
	}
}

// maxStaleRetries bounds how often one batch is re-applied on top of hand
// saves that keep landing during its write.
const maxStaleRetries = 8

// ErrBusy is returned when the file kept changing on disk under a write.
var ErrBusy = errors.New("tags file keeps changing on disk; try again")

// commit applies a batch of mutations on top of the file as it is on disk
// now, writes the result durably, and only then publishes and acknowledges.
// A hand save that lands during the write is never overwritten: the batch
// is applied again on top of it.
func (s *Store) commit(batch []*op) {
	reply := func(results []opResult, err error) {
		for i, o := range batch {
			if err != nil {
				o.reply <- opResult{err: err}
			} else {
				o.reply <- results[i]
			}
		}
	}
	for attempt := 0; ; attempt++ {
		// A person may have saved the file since it was last read, faster
		// than the watcher's debounce: pick their edit up first.
		if err := s.syncFromDisk(); err != nil {
			reply(nil, err)
			return
		}
		if err := s.Err(); err != nil {
			reply(nil, err)
			return
		}
		overlay, results := s.apply(batch)
		if len(overlay) == 0 {
			reply(results, nil)
			return
		}
		err := s.write(overlay)
		switch {
		case err == nil:
			reply(results, nil)
			return
		case errors.Is(err, errStale) && attempt < maxStaleRetries:
			continue
		case errors.Is(err, errStale):
			reply(nil, ErrBusy)
			return
		default:
			// ErrNotDurable included: the change is in the file and in
			// memory alike, and the reply says it may not survive a crash.
			s.log.Error("writing tags file", "err", err)
			reply(nil, fmt.Errorf("writing tags file: %w", err))
			return
		}
	}
}

// apply computes the batch's effect on the current document.
func (s *Store) apply(batch []*op) (map[string]Entry, []opResult) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	overlay := map[string]Entry{}
	results := make([]opResult, len(batch))
	for i, o := range batch {
		cur, ok := overlay[o.id]
		if !ok {
			if cur, ok = s.doc[o.id]; !ok {
				cur = Entry{Path: o.seed.Path, Tags: sortedUnique(o.seed.Tags)}
			}
		}
		tags, changed, unchanged := applyTags(cur.Tags, o.tags, o.remove)
		if len(tags) > MaxTagsPerAsset {
			results[i].err = fmt.Errorf("%w: the asset would carry %d tags; at most %d per asset", ErrInvalidTags, len(tags), MaxTagsPerAsset)
			continue
		}
		results[i].change = Change{Changed: changed, Unchanged: unchanged, Tags: tags}
		if len(changed) > 0 {
			if cur.Path == "" {
				cur.Path = o.seed.Path
			}
			overlay[o.id] = Entry{Path: cur.Path, Tags: tags, UpdatedAt: now}
		}
	}
	return overlay, results
}

// applyTags returns the sorted tag list after adding or removing req, with
// the sorted lists of tags that changed and that did not.
func applyTags(cur, req []string, remove bool) (tags, changed, unchanged []string) {
	changed, unchanged = []string{}, []string{}
	for _, t := range req {
		_, present := slices.BinarySearch(cur, t)
		if present != remove {
			unchanged = append(unchanged, t)
		} else {
			changed = append(changed, t)
		}
	}
	slices.Sort(changed)
	slices.Sort(unchanged)
	if len(changed) == 0 {
		return cur, changed, unchanged
	}
	if remove {
		tags = make([]string, 0, len(cur))
		for _, t := range cur {
			if _, gone := slices.BinarySearch(changed, t); !gone {
				tags = append(tags, t)
			}
		}
		return tags, changed, unchanged
	}
	tags = append(slices.Clone(cur), changed...)
	slices.Sort(tags)
	return tags, changed, unchanged
}

// write renders the document with overlay applied, replaces the file
// atomically, and publishes the new entries to readers. Unchanged entries
// are copied from their rendering of the last write.
func (s *Store) write(overlay map[string]Entry) error {
	var added []string
	for id := range overlay {
		if _, ok := s.doc[id]; !ok {
			added = append(added, id)
		}
	}
	var ids []string
	var raws [][]byte
	if len(added) > 0 {
		slices.Sort(added)
		ids, raws = mergeSorted(s.ids, s.raws, added)
	} else {
		ids, raws = s.ids, slices.Clone(s.raws) // s.raws stays as it was if the write fails
	}
	for id, e := range overlay {
		i, _ := slices.BinarySearch(ids, id)
		raws[i] = encodeEntry(id, e)
	}

	buf := append(s.buf[:0], fileHeader...)
	for i, r := range raws {
		if r == nil { // loaded from disk and not rendered yet
			r = encodeEntry(ids[i], s.doc[ids[i]])
			raws[i] = r
		}
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, r...)
	}
	buf = append(buf, fileFooter...)
	s.buf = buf

	start := time.Now()
	sig, err := writeAtomic(s.path, buf, s.mode, s.disk)
	if s.onWrite != nil && !errors.Is(err, errStale) {
		s.onWrite(time.Since(start), err)
	}
	if err != nil && !errors.Is(err, ErrNotDurable) {
		return err
	}
	s.disk = sig
	defer s.publish(overlay, ids, raws)
	return err
}

// publish makes a written overlay what readers see.
func (s *Store) publish(overlay map[string]Entry, ids []string, raws [][]byte) {
	v := s.view.Load()
	counts := cloneCounts(v.aggregates)
	for id, e := range overlay {
		if old, ok := s.doc[id]; ok {
			for _, t := range old.Tags {
				if counts[t]--; counts[t] == 0 {
					delete(counts, t)
				}
			}
		}
		for _, t := range e.Tags {
			counts[t]++
		}
		s.doc[id] = e
		v.index.Set(id, e, cache.NoExpiration)
	}
	v.aggregates.Set(aggTagCounts, counts, cache.NoExpiration)
	s.ids, s.raws = ids, raws
	changed := make([]string, 0, len(overlay))
	for id := range overlay {
		changed = append(changed, id)
	}
	s.recordChange(changed)
}

// changeLogSize bounds how many recent writes ChangedSince can describe.
const changeLogSize = 1024

type change struct {
	gen uint64
	ids []string
}

// recordChange bumps the generation and remembers which ids it changed.
func (s *Store) recordChange(ids []string) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if s.onChange != nil {
		defer s.onChange()
	}
	gen := s.gen.Add(1)
	if ids == nil { // a reload: everything may have changed
		s.changeLog = s.changeLog[:0]
		s.logFloor = gen
		return
	}
	if len(s.changeLog) == changeLogSize {
		s.logFloor = s.changeLog[0].gen
		s.changeLog = append(s.changeLog[:0], s.changeLog[1:]...)
	}
	s.changeLog = append(s.changeLog, change{gen, ids})
}

// ChangedSince returns the ids whose tags changed after generation gen, so
// callers can update what they derived from the store instead of
// recomputing it. ok is false when that is not known (a reload, or too long
// ago): then everything must be considered changed.
func (s *Store) ChangedSince(gen uint64) (ids []string, ok bool) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if gen < s.logFloor {
		return nil, false
	}
	for _, c := range s.changeLog {
		if c.gen > gen {
			ids = append(ids, c.ids...)
		}
	}
	return ids, true
}

func cloneCounts(agg *cache.Cache) map[string]int {
	v, _ := agg.Get(aggTagCounts)
	old := v.(map[string]int)
	m := make(map[string]int, len(old)+4)
	for k, n := range old {
		m[k] = n
	}
	return m
}

// mergeSorted merges the sorted ids b into the sorted ids a, carrying a's
// renderings along; b's are nil.
func mergeSorted(a []string, ra [][]byte, b []string) ([]string, [][]byte) {
	ids := make([]string, 0, len(a)+len(b))
	raws := make([][]byte, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		if j == len(b) || (i < len(a) && a[i] < b[j]) {
			ids, raws = append(ids, a[i]), append(raws, ra[i])
			i++
		} else {
			ids, raws = append(ids, b[j]), append(raws, nil)
			j++
		}
	}
	return ids, raws
}

// syncFromDisk makes memory match the file if the file changed since it was
// last read or written. A file that does not parse marks the store invalid
// and keeps the last good state; a removed file keeps the state in memory,
// to be written again on the next change.
func (s *Store) syncFromDisk() error {
	sig, data, err := readIfChanged(s.path, s.disk)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if s.disk.exists {
			s.log.Warn("tags file removed; keeping tags in memory, the file is written again on the next change")
		}
		s.disk = fileSig{}
		s.invalid.Store(nil)
		return nil
	case err != nil:
		return err
	case data == nil:
		return nil // unchanged
	}
	s.mode = sig.mode
	if sig.sameContent(s.disk) {
		s.disk = sig
		return nil
	}
	s.disk = sig
	entries, perr := Parse(data)
	if perr != nil {
		err := fmt.Errorf("%w: %s: %w", ErrSidecarInvalid, s.path, perr)
		s.invalid.Store(&err)
		return err
	}
	s.replaceAll(entries)
	if s.invalid.Swap(nil) != nil {
		s.log.Info("tags file valid again; changes accepted")
	}
	return nil
}

// replaceAll swaps in a freshly loaded document.
func (s *Store) replaceAll(entries map[string]Entry) {
	ids := make([]string, 0, len(entries))
	for id := range entries {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	// Entries are rendered on the first write.
	s.doc, s.ids, s.raws = entries, ids, make([][]byte, len(ids))
	s.view.Store(newView(entries))
	s.recordChange(nil)
}

// watchLoop turns bursts of events on the sidecar into reloads. The folder
// is watched, not the file: editors that save by rename replace its inode.
func (s *Store) watchLoop() {
	defer s.wg.Done()
	for b := range s.watcher.Batches() {
		if _, ok := b.Paths[s.path]; !ok && !b.Lost {
			continue
		}
		select {
		case s.reloads <- struct{}{}:
		default: // a reload is already pending
		}
	}
}
