// Package tagstore keeps asset tags in a JSON sidecar file that a person
// can read and edit: changes are made durable in an append-only journal
// beside it (group commit), compacted into the JSON file in the background,
// served from memory, and a hand save of the file is merged while the
// server runs.
package tagstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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
// those arriving together into a single journal append, and compacts the
// journal into the JSON file about a second later.
type Store struct {
	path string
	log  *slog.Logger

	docMu     sync.RWMutex                   // readers' lock on doc; only the committer writes it
	counts    atomic.Pointer[map[string]int] // tag -> entries carrying it; replaced, never modified
	gen       atomic.Uint64                  // bumped on every change readers can see
	logMu     sync.Mutex
	changeLog []change // recent writes, oldest first
	logFloor  uint64   // ChangedSince knows nothing before this generation
	invalid   atomic.Pointer[error]

	ops      chan *op
	reloads  chan struct{}
	flushes  chan chan error
	quit     chan struct{}
	loopDone chan struct{} // closed when the committer has stopped
	wg       sync.WaitGroup
	closed   atomic.Bool
	watcher  *watch.Watcher

	// Owned by the committer goroutine.
	doc            map[string]Entry
	disk           fileSig // the JSON file as last read or written
	diskCanonical  bool    // and it is in Encode's layout: a compaction can merge into it
	mode           os.FileMode
	journal        *journal
	baseOld        map[string]baseEntry // the JSON file's entries of assets changed since it was written or read
	stamp          time.Time            // last updated_at given: stamps never go back
	compact        *time.Timer          // armed while changes wait to be compacted
	compactPending bool
	delay          time.Duration // how long after a change its compaction starts

	// A compaction writes the JSON file off the committer, which goes on
	// committing meanwhile (at 100k assets the write takes a tenth of a
	// second; at 1M, more than a second).
	compacting bool                 // a compaction's write is in flight
	compactRes chan compactResult   // the outcome of each of its two steps
	cmark      int64                // the journal's size after its marker: what the new file holds
	cbase      map[string]baseEntry // baseOld when it started: the entries of the file still on disk
	cexpected  fileSig              // the file on disk it replaces
	cstart     time.Time
	cattempt   int          // writes redone over hand saves
	flushWait  []chan error // Compact calls waiting for the file to hold every change
	reloadWait bool         // an edit seen during the write, merged once it is done

	onReload  func(error)
	onWrite   func(time.Duration, error)
	onCompact func(time.Duration, error)
	onChange  func()
}

type op struct {
	id     string
	seed   Entry
	tags   []string
	remove bool
	update *Update // set: replace what it names instead of adding or removing tags
	del    bool    // delete the entry
	reply  chan opResult
}

// Update changes what it names of an asset's entry; nil fields stay.
type Update struct {
	Tags *[]string       // the complete new tag list
	Name *string         // the asset's name ("" = the file's again)
	Meta json.RawMessage // user_metadata, a JSON object ("null" or {} clears it)
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
	// OnWrite is called after each durable write of changes (a journal
	// append, what a mutation waits for) with its duration.
	OnWrite func(time.Duration, error)
	// OnCompact is called after each compaction of the journal into the
	// JSON file with its duration.
	OnCompact func(time.Duration, error)
	// OnChange is called (from the committer; it must not block) whenever
	// what readers see changed: a write or a reload.
	OnChange func()
	// Debounce is how long an edit must settle before it is reloaded (100 ms).
	Debounce time.Duration
	// CompactDelay is how long after a change the journal is compacted
	// into the JSON file (1 s).
	CompactDelay time.Duration
}

// Open loads the sidecar at path (a missing file is an empty store, created
// by the first compaction) with its journal replayed, and starts watching
// it. A file or folder that cannot be read, or a file that does not parse,
// is an error naming the path.
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
		path:       abs,
		log:        log.With("tags_file", abs),
		ops:        make(chan *op, maxBatch),
		reloads:    make(chan struct{}, 1),
		flushes:    make(chan chan error),
		quit:       make(chan struct{}),
		loopDone:   make(chan struct{}),
		doc:        map[string]Entry{},
		mode:       0o644,
		onReload:   opts.OnReload,
		onWrite:    opts.OnWrite,
		onCompact:  opts.OnCompact,
		onChange:   opts.OnChange,
		baseOld:    map[string]baseEntry{},
		delay:      opts.CompactDelay,
		compactRes: make(chan compactResult, 1),
	}
	if opts.Debounce <= 0 {
		opts.Debounce = defaultDebounce
	}
	if s.delay <= 0 {
		s.delay = time.Second
	}
	s.compact = time.NewTimer(time.Hour)
	s.compact.Stop()
	s.counts.Store(&map[string]int{})
	if err := s.syncFromDisk(); err != nil {
		return nil, fmt.Errorf("tags file %s: %w", abs, err)
	}
	if err := s.openJournal(); err != nil {
		return nil, fmt.Errorf("tags journal %s: %w", s.journalPath(), err)
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

// Close stops watching and committing, compacting the journal into the JSON
// file first. Mutations already acknowledged are on disk; later calls fail
// with ErrClosed.
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
	s.docMu.RLock()
	e, ok := s.doc[id]
	s.docMu.RUnlock()
	return e, ok
}

// Each calls fn with the id of every entry.
func (s *Store) Each(fn func(id string)) {
	s.docMu.RLock()
	defer s.docMu.RUnlock()
	for id := range s.doc {
		fn(id)
	}
}

// WithMeta calls fn for every entry that has user_metadata.
func (s *Store) WithMeta(fn func(id string, meta json.RawMessage)) {
	s.docMu.RLock()
	defer s.docMu.RUnlock()
	for id, e := range s.doc {
		if e.Meta != nil {
			fn(id, e.Meta)
		}
	}
}

// TagCounts returns how many sidecar entries carry each tag. The map is
// shared: do not modify it.
func (s *Store) TagCounts() map[string]int { return *s.counts.Load() }

// Len is the number of assets in the sidecar.
func (s *Store) Len() int {
	s.docMu.RLock()
	defer s.docMu.RUnlock()
	return len(s.doc)
}

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

// Set applies an Update to asset id (seeded as Add seeds it) and returns
// the entry afterwards, once the change is durable.
func (s *Store) Set(id string, seed Entry, u Update) (Entry, error) {
	if u.Tags != nil {
		norm, err := NormalizeTags(*u.Tags)
		if err != nil {
			return Entry{}, err
		}
		norm = sortedUnique(norm)
		u.Tags = &norm
	}
	if u.Name != nil {
		if err := checkName(*u.Name); err != nil {
			return Entry{}, fmt.Errorf("%w: %v", ErrInvalidTags, err)
		}
	}
	if u.Meta != nil {
		m, err := checkMeta(u.Meta)
		if err != nil {
			return Entry{}, fmt.Errorf("%w: %v", ErrInvalidTags, err)
		}
		if m == nil {
			m = json.RawMessage{} // clear: non-nil, empty
		}
		u.Meta = m
	}
	ch, err := s.submit(id, seed, nil, false, &u)
	if err != nil {
		return Entry{}, err
	}
	e, _ := s.Get(id)
	e.Tags = ch.Tags
	return e, nil
}

// Delete removes asset id's entry (its tags, name and user_metadata), once
// durably; deleting an entry that does not exist changes nothing.
func (s *Store) Delete(id string) error {
	_, err := s.submitOp(&op{id: id, del: true})
	return err
}

func (s *Store) mutate(id string, seed Entry, tags []string, remove bool) (Change, error) {
	norm, err := NormalizeTags(tags)
	if err != nil {
		return Change{}, err
	}
	return s.submit(id, seed, norm, remove, nil)
}

func (s *Store) submit(id string, seed Entry, norm []string, remove bool, u *Update) (Change, error) {
	return s.submitOp(&op{id: id, seed: seed, tags: norm, remove: remove, update: u})
}

func (s *Store) submitOp(o *op) (Change, error) {
	cid, err := CanonicalID(o.id)
	if err != nil {
		return Change{}, err
	}
	if s.closed.Load() {
		return Change{}, ErrClosed
	}
	o.id, o.reply = cid, make(chan opResult, 1)
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

// countTags counts the entries carrying each tag.
func countTags(entries map[string]Entry) map[string]int {
	counts := map[string]int{}
	for _, e := range entries {
		for _, t := range e.Tags {
			counts[t]++
		}
	}
	return counts
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
		case <-s.compact.C:
			s.compactPending = false
			if !s.compacting { // else the end of the write schedules the next
				s.startCompaction()
			}
		case reply := <-s.flushes:
			s.flushWait = append(s.flushWait, reply)
			if !s.compacting {
				s.compact.Stop()
				s.startCompaction()
			}
		case r := <-s.compactRes:
			s.finishCompaction(r)
		case <-s.reloads:
			if s.compacting {
				s.reloadWait = true // the file is ours to replace just now
				continue
			}
			s.reload()
		case <-s.quit:
			// Answer whatever was queued before Close, then bring the JSON
			// file up to date.
			for {
				select {
				case o := <-s.ops:
					o.reply <- opResult{err: ErrClosed}
				default:
					s.compact.Stop()
					for s.compacting {
						s.finishCompaction(<-s.compactRes)
					}
					s.startCompaction()
					for s.compacting {
						s.finishCompaction(<-s.compactRes)
					}
					_ = s.journal.close()
					return
				}
			}
		}
	}
}

// maxStaleRetries bounds how often a compaction is redone on top of hand
// saves that keep landing during its write.
const maxStaleRetries = 8

// commit applies a batch of mutations on top of the current state, appends
// the result to the journal as one durable record (group commit), and only
// then publishes and acknowledges. The JSON file catches up in the
// background (compaction).
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
	// A person may have saved the file since it was last read, faster than
	// the watcher's debounce: merge their edit first. (While a compaction
	// replaces the file, its end merges a save that raced it.)
	if !s.compacting {
		if err := s.syncFromDisk(); err != nil {
			reply(nil, err)
			return
		}
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
	before := make(map[string]baseEntry, len(overlay))
	for id := range overlay {
		before[id] = s.fileEntry(id)
	}
	start := time.Now()
	err := s.journal.append(overlay, before)
	if s.onWrite != nil {
		s.onWrite(time.Since(start), err)
	}
	if err != nil {
		s.log.Error("appending to the tags journal", "err", err)
		reply(nil, fmt.Errorf("writing tags journal: %w", err))
		return
	}
	s.publish(overlay)
	s.scheduleCompaction()
	reply(results, nil)
}

// apply computes the batch's effect on the current document.
func (s *Store) apply(batch []*op) (map[string]Entry, []opResult) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	if !now.After(s.stamp) {
		now = s.stamp.Add(time.Millisecond) // a clock stepping back must not make a change look older
	}
	overlay := map[string]Entry{}
	results := make([]opResult, len(batch))
	for i, o := range batch {
		cur, exists := s.current(overlay, o.id)
		if o.del {
			if exists {
				overlay[o.id] = Entry{gone: true, UpdatedAt: now}
				s.stamp = now
			}
			continue
		}
		if !exists {
			cur = Entry{Path: o.seed.Path, Tags: sortedUnique(o.seed.Tags)}
		}
		next := cur
		var changed, unchanged []string
		if o.update != nil {
			if o.update.Tags != nil {
				next.Tags = *o.update.Tags
			}
			if o.update.Name != nil {
				next.Name = *o.update.Name
			}
			if o.update.Meta != nil {
				next.Meta = o.update.Meta
				if len(next.Meta) == 0 {
					next.Meta = nil
				}
			}
		} else {
			next.Tags, changed, unchanged = applyTags(cur.Tags, o.tags, o.remove)
		}
		if len(next.Tags) > MaxTagsPerAsset {
			results[i].err = fmt.Errorf("%w: the asset would carry %d tags; at most %d per asset", ErrInvalidTags, len(next.Tags), MaxTagsPerAsset)
			continue
		}
		results[i].change = Change{Changed: changed, Unchanged: unchanged, Tags: next.Tags}
		// An update makes an entry even when it matches the defaults.
		if !sameContent(next, cur) || (o.update != nil && !exists) {
			if next.Path == "" {
				next.Path = o.seed.Path
			}
			next.UpdatedAt = now
			overlay[o.id] = next
			s.stamp = now
		}
	}
	return overlay, results
}

// current is an asset's entry as the batch so far leaves it: the batch's
// own change if it has one (a deletion: none), else the document's.
func (s *Store) current(overlay map[string]Entry, id string) (Entry, bool) {
	if e, ok := overlay[id]; ok {
		return e, !e.gone
	}
	e, ok := s.doc[id]
	return e, ok
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

// fileEntry is an asset's entry in the JSON file as last written or read.
func (s *Store) fileEntry(id string) baseEntry {
	if b, ok := s.baseOld[id]; ok {
		return b
	}
	e, ok := s.doc[id]
	return baseEntry{e, ok}
}

// publish makes changed entries what readers see. The JSON file's version
// of each is remembered (baseOld) until the next compaction, for merging a
// hand save.
func (s *Store) publish(overlay map[string]Entry) {
	for id := range overlay {
		if _, noted := s.baseOld[id]; !noted {
			old, had := s.doc[id]
			s.baseOld[id] = baseEntry{old, had}
		}
	}
	old := *s.counts.Load()
	counts := make(map[string]int, len(old)+4)
	for k, n := range old {
		counts[k] = n
	}
	changed := make([]string, 0, len(overlay))
	s.docMu.Lock()
	for id, e := range overlay {
		if old, ok := s.doc[id]; ok {
			for _, t := range old.Tags {
				if counts[t]--; counts[t] == 0 {
					delete(counts, t)
				}
			}
		}
		changed = append(changed, id)
		if e.gone {
			delete(s.doc, id)
			continue
		}
		for _, t := range e.Tags {
			counts[t]++
		}
		s.doc[id] = e
	}
	s.docMu.Unlock()
	s.counts.Store(&counts)
	s.recordChange(changed)
}

// scheduleCompaction arms the compaction timer unless it is armed: under
// steady changes the JSON file is at most about one delay behind.
func (s *Store) scheduleCompaction() {
	if !s.compactPending {
		s.compactPending = true
		s.compact.Reset(s.delay)
	}
}

// Compact writes every change still in the journal into the JSON file now
// and empties the journal (it also happens by itself about a second after a
// change, and at Close).
func (s *Store) Compact() error {
	reply := make(chan error, 1)
	select {
	case s.flushes <- reply:
		return <-reply
	case <-s.quit:
		return ErrClosed
	}
}

// compactResult is how a step of a compaction ended: the new file
// prepared beside the old one (prep), or put in its place.
type compactResult struct {
	prep *prepared
	sig  fileSig
	err  error
}

// testHookCompactWrite, when set (tests), runs before a compaction's write.
var testHookCompactWrite func()

// startCompaction brings the JSON file up to date off the committer: the
// new file is prepared beside it (the file on disk with the changed entries
// replaced, or every entry rendered when it cannot be merged into), the
// journal is marked with its identity, then it replaces the file (never
// over a hand save: see placeFile), and the journal records it holds are
// dropped (finishCompaction). On failure the journal keeps every change and
// compaction is tried later.
func (s *Store) startCompaction() {
	s.compactPending = false
	if err := s.syncFromDisk(); err != nil {
		s.endFlushes(err) // a broken file is never written over; its fix triggers a reload
		return
	}
	if err := s.Err(); err != nil {
		s.endFlushes(err)
		return
	}
	if len(s.baseOld) == 0 && s.journal.size == 0 {
		s.endFlushes(nil)
		return
	}
	// The new file is the state now; changes committed during the write
	// note their base against it (baseOld starts afresh), and cbase keeps
	// what the file on disk still is.
	plan := s.plan()
	s.compacting, s.cstart = true, time.Now()
	s.cbase, s.baseOld, s.cexpected = s.baseOld, map[string]baseEntry{}, s.disk
	path, mode, expected := s.path, s.mode, s.disk
	go func() {
		if testHookCompactWrite != nil {
			testHookCompactWrite()
		}
		prep, err := prepareCompaction(path, mode, expected, plan)
		s.compactRes <- compactResult{prep: &prep, err: err}
	}()
}

// plan renders what a compaction writes: the entries changed since the
// file on disk was written or read, or every entry when there is no file
// in comfyshim's layout to merge them into.
func (s *Store) plan() compactPlan {
	p := compactPlan{full: !s.disk.exists || !s.diskCanonical}
	if p.full {
		p.ids = make([]string, 0, len(s.doc))
		for id := range s.doc {
			p.ids = append(p.ids, id)
		}
	} else {
		p.ids = make([]string, 0, len(s.baseOld))
		for id := range s.baseOld {
			p.ids = append(p.ids, id)
		}
	}
	slices.Sort(p.ids)
	p.raws = make([][]byte, len(p.ids))
	for i, id := range p.ids {
		if e, ok := s.doc[id]; ok {
			p.raws[i] = appendEntry(nil, id, e)
		}
	}
	return p
}

// placeCompaction takes a prepared file on the committer: before the file
// can be replaced, the journal says which file it will be, so a crash after
// the swap replays only what came after. Changes acknowledged while it was
// prepared are in the journal before the marker but not in the file: they
// are journaled again after it.
func (s *Store) placeCompaction(prep prepared) error {
	if err := s.journal.mark(fileIdentity(prep.sig.crc, prep.sig.size)); err != nil {
		return fmt.Errorf("marking a compaction in the tags journal: %w", err)
	}
	s.cmark = s.journal.size
	if len(s.baseOld) > 0 {
		again := make(map[string]Entry, len(s.baseOld))
		for id := range s.baseOld {
			e, ok := s.doc[id]
			if !ok {
				e = Entry{gone: true}
			}
			again[id] = e
		}
		if err := s.journal.append(again, s.baseOld); err != nil {
			return fmt.Errorf("journaling the changes made during a compaction: %w", err)
		}
	}
	path, expected := s.path, s.cexpected
	go func() {
		sig, err := placeFile(path, prep, expected)
		s.compactRes <- compactResult{sig: sig, err: err}
	}()
	return nil
}

// finishCompaction takes the outcome of a compaction's step on the
// committer.
func (s *Store) finishCompaction(r compactResult) {
	if r.prep != nil && r.err == nil {
		err := s.placeCompaction(*r.prep)
		if err == nil {
			return // placing it
		}
		r.prep.discard()
		r = compactResult{err: err}
	}
	s.compacting = false
	if s.onCompact != nil {
		s.onCompact(time.Since(s.cstart), r.err)
	}
	if r.err != nil && !errors.Is(r.err, ErrNotDurable) {
		// The file on disk is still the one cbase describes.
		for id, b := range s.cbase {
			s.baseOld[id] = b
		}
		s.cbase = nil
		if errors.Is(r.err, errNotCanonical) && s.diskCanonical {
			s.diskCanonical = false // render every entry this time
			s.afterCompaction()
			s.startCompaction()
			return
		}
		if errors.Is(r.err, errStale) && s.cattempt < maxStaleRetries {
			s.cattempt++
			s.afterCompaction()
			s.startCompaction() // a hand save landed: merge it and write again
			return
		}
		s.cattempt = 0
		s.log.Error("compacting the tags journal into the tags file; the journal keeps every change", "err", r.err)
		s.scheduleCompaction()
		s.afterCompaction()
		s.endFlushes(r.err)
		return
	}
	s.cattempt = 0
	s.disk, s.diskCanonical = r.sig, true
	s.cbase = nil
	if r.err != nil { // replaced, but the folder sync failed: keep the journal
		s.log.Error("tags file written but its folder could not be synced; the journal keeps every change until the next compaction", "err", r.err)
		s.scheduleCompaction()
		s.afterCompaction()
		s.endFlushes(r.err)
		return
	}
	// Drop the journal's records the file holds only while the file on
	// disk is the one just written: if a hand save replaced it meanwhile,
	// the journal is all that holds the changes the save lacks until they
	// are merged.
	if s.fileIsOurs() {
		if err := s.journal.dropBefore(s.cmark, s.journalPath()); err != nil {
			s.log.Error("trimming the tags journal (its changes are in the tags file)", "err", err)
		}
		if !s.fileIsOurs() {
			// A save landed during the trim: merge it now, which journals
			// what it lacks.
			_ = s.syncFromDisk()
		}
	}
	s.afterCompaction()
	if s.journal.size > 0 || len(s.baseOld) > 0 {
		// Changes made during the write: the file catches up next time,
		// or at once for a waiting Compact.
		if len(s.flushWait) > 0 {
			s.startCompaction()
			return
		}
		s.scheduleCompaction()
	}
	s.endFlushes(nil)
}

// afterCompaction merges an edit that arrived while the file was written.
func (s *Store) afterCompaction() {
	if s.reloadWait {
		s.reloadWait = false
		s.reload()
	}
}

// endFlushes answers the Compact calls waiting.
func (s *Store) endFlushes(err error) {
	for _, reply := range s.flushWait {
		reply <- err
	}
	s.flushWait = s.flushWait[:0]
}

// reload merges the file as a person saved it.
func (s *Store) reload() {
	err := s.syncFromDisk()
	if err != nil {
		s.log.Error("tags file rejected; serving the last good state and refusing changes until it is fixed", "err", err)
	}
	if s.onReload != nil {
		s.onReload(err)
	}
}

// fileIsOurs reports whether the JSON file on disk is the one comfyshim
// last wrote or read.
func (s *Store) fileIsOurs() bool {
	now, err := statSig(s.path)
	return err == nil && now.sameMeta(s.disk)
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
	s.disk, s.diskCanonical = sig, false
	entries, canonical, perr := parse(data)
	if perr != nil {
		err := fmt.Errorf("%w: %s: %w", ErrSidecarInvalid, s.path, perr)
		s.invalid.Store(&err)
		return err
	}
	var kept, stale []string
	next := entries
	if len(s.doc) > 0 || len(s.baseOld) > 0 { // nothing to merge with on the first read
		next, kept, stale = mergeSave(s.doc, s.baseOld, entries)
	}
	if len(stale) > 0 {
		s.log.Warn("a hand save was made from an older copy of the tags file; comfyshim kept its newer tags for these assets", "assets", stale)
	}
	s.replaceAll(next)
	s.diskCanonical = canonical
	s.baseOld = make(map[string]baseEntry, len(kept))
	if len(kept) > 0 {
		// The file no longer holds these: the journal must, until the
		// next compaction writes them back.
		overlay := make(map[string]Entry, len(kept))
		for _, id := range kept {
			e, had := entries[id]
			s.baseOld[id] = baseEntry{e, had}
			if n, ok := next[id]; ok {
				overlay[id] = n
			}
		}
		if s.journal != nil {
			if err := s.journal.append(overlay, s.baseOld); err != nil {
				s.log.Error("journaling the changes a hand save did not hold", "err", err)
			}
			s.scheduleCompaction()
		}
	}
	if s.invalid.Swap(nil) != nil {
		s.log.Info("tags file valid again; changes accepted")
	}
	return nil
}

func (s *Store) journalPath() string { return s.path + ".journal" }

// replay returns the state the JSON file and the journal hold together.
// The journal was written against some version of the file (each entry's
// "before"); if the file is still that version the journal's entries apply
// as they are, and if it was replaced since (a compaction that was cut
// short, or a hand save comfyshim did not see) the two are merged as a
// hand save is (mergeSave). kept lists the assets the file lacks.
func replay(file map[string]Entry, recs []journalRecord) (next map[string]Entry, kept []string) {
	cur := make(map[string]Entry, len(file))
	for id, e := range file {
		cur[id] = e
	}
	written := map[string]baseEntry{}
	for _, rec := range recs {
		for _, je := range rec.Entries {
			id, _ := CanonicalID(je.ID)
			e, _ := je.entry() // checked when read
			if _, seen := written[id]; !seen {
				written[id] = je.before()
			}
			if e.gone {
				delete(cur, id)
				continue
			}
			cur[id] = e
		}
	}
	next, kept, _ = mergeSave(cur, written, file)
	return next, kept
}

// openJournal opens the journal and replays what it holds on top of the
// JSON file: an entry counts unless the file's entry for that asset is as
// new or newer (already compacted, or edited by hand since).
func (s *Store) openJournal() error {
	_, statErr := os.Stat(s.journalPath())
	j, recs, err := openJournal(s.journalPath())
	if err != nil {
		return err
	}
	if os.IsNotExist(statErr) {
		if err := syncDir(filepath.Dir(s.path)); err != nil {
			j.close()
			return err
		}
	}
	s.journal = j
	if j.unlocked != nil {
		s.log.Warn("the tags journal could not be locked; make sure only one comfyshim uses this tags file", "err", j.unlocked)
	}
	if len(recs) == 0 {
		return nil
	}
	file := s.doc
	if s.disk.exists {
		recs = sinceFile(recs, fileIdentity(s.disk.crc, s.disk.size))
	}
	next, kept := replay(file, recs)
	for _, e := range next {
		if e.UpdatedAt.After(s.stamp) {
			s.stamp = e.UpdatedAt
		}
	}
	s.log.Info("replayed the tags journal", "records", len(recs), "assets_not_in_the_file", len(kept))
	s.replaceAll(next)
	for _, id := range kept {
		e, had := file[id]
		s.baseOld[id] = baseEntry{e, had}
	}
	s.scheduleCompaction()
	return nil
}

// replaceAll swaps in a freshly loaded document.
func (s *Store) replaceAll(entries map[string]Entry) {
	s.docMu.Lock()
	s.doc = entries
	s.docMu.Unlock()
	counts := countTags(entries)
	s.counts.Store(&counts)
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
