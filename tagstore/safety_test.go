package tagstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

// A file truncated to nothing (shell ">", editors that truncate then write)
// is a save in progress: the last good state is served, changes are refused
// and the file is never written over.
func TestEmptyFileIsASaveInProgress(t *testing.T) {
	for name, content := range map[string]string{"zero bytes": "", "whitespace": " \n\n  "} {
		t.Run(name, func(t *testing.T) {
			s, path := openTemp(t)
			if _, err := s.Add(idA, Entry{}, []string{"kept"}); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			// No waiting for the watcher: the write itself must notice.
			_, err := s.Add(idB, Entry{}, []string{"new"})
			if !errors.Is(err, ErrSidecarInvalid) {
				t.Fatalf("change accepted over an empty file: %v", err)
			}
			if e, ok := s.Get(idA); !ok || !reflect.DeepEqual(e.Tags, []string{"kept"}) {
				t.Fatalf("last good state not served: %v %v", e, ok)
			}
			if data, _ := os.ReadFile(path); string(data) != content {
				t.Fatalf("empty file written over: %q", data)
			}
			// The person finishes the save: changes resume on top of it.
			saveInPlace(t, path, docWith(map[string][]string{idA: {"kept", "hand"}}))
			waitUntil(t, "reload", func() bool { return s.Err() == nil })
			if _, err := s.Add(idB, Entry{}, []string{"new"}); err != nil {
				t.Fatal(err)
			}
			got := readFile(t, path)
			if !reflect.DeepEqual(got[idA].Tags, []string{"hand", "kept"}) || !reflect.DeepEqual(got[idB].Tags, []string{"new"}) {
				t.Fatalf("file after resuming: %v", got)
			}
		})
	}
}

func TestEmptyFileStopsTheStart(t *testing.T) {
	path := t.TempDir() + "/tags.json"
	os.WriteFile(path, nil, 0o644)
	if s, err := Open(path, Options{}); err == nil {
		s.Close()
		t.Fatal("empty tags file accepted at start")
	} else if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("error %v", err)
	}
}

// Hand saves by rename made while four writers keep the store busy are
// never replaced by comfyshim's own writes: each save's tag survives.
func TestHandSavesSurviveBusyWriters(t *testing.T) {
	// Compactions run back to back, so comfyshim replaces the file while
	// the person saves it.
	s, path := openTempOpts(t, Options{CompactDelay: time.Millisecond})
	const saves = 60
	hand := make([]string, saves)
	for i := range hand {
		hand[i] = uuid.NewString()
	}
	writerIDs := make([]string, 40)
	for i := range writerIDs {
		writerIDs[i] = uuid.NewString()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var acked atomic.Int64
	var ackMu sync.Mutex
	ackedTags := map[string][]string{} // id -> tags acknowledged
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := writerIDs[(w*10+n)%len(writerIDs)]
				tag := fmt.Sprint("w", w, "-", n)
				if _, err := s.Add(id, Entry{}, []string{tag}); err == nil {
					acked.Add(1)
					ackMu.Lock()
					ackedTags[id] = append(ackedTags[id], tag)
					ackMu.Unlock()
				} else if !errors.Is(err, ErrSidecarInvalid) {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	// Each save reads the file as it is, adds its own asset, and renames
	// the result into place, as an editor's save would.
	var compactions int
	for i := 0; i < saves; i++ {
		if fi, err := os.Stat(path); err == nil && fi.ModTime().After(time.Now().Add(-5*time.Millisecond)) {
			compactions++
		}
		data, err := os.ReadFile(path)
		if err != nil {
			if os.IsNotExist(err) {
				i--
				time.Sleep(time.Millisecond)
				continue
			}
			t.Fatal(err)
		}
		doc, err := Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		doc[hand[i]] = Entry{Tags: []string{fmt.Sprint("hand-", i)}}
		tmp := fmt.Sprintf("%s.save%d", path, i)
		if err := os.WriteFile(tmp, Encode(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	waitUntil(t, "the last save to be read", func() bool { _, ok := s.Get(hand[saves-1]); return ok })
	// One more write settles what is on disk.
	if _, err := s.Add(uuid.NewString(), Entry{}, []string{"final"}); err != nil {
		t.Fatal(err)
	}
	final := readFile(t, path)
	survived := 0
	for i, id := range hand {
		if e, ok := final[id]; ok && reflect.DeepEqual(e.Tags, []string{fmt.Sprint("hand-", i)}) {
			survived++
		}
	}
	t.Logf("hand saves surviving under 4 busy writers: %d of %d (%d tag changes acknowledged meanwhile; the file was freshly rewritten before %d of the saves)", survived, saves, acked.Load(), compactions)
	if survived != saves {
		t.Fatalf("%d of %d hand saves were replaced by comfyshim's writes", saves-survived, saves)
	}
	// And no acknowledged change was lost to a save made from a copy that
	// did not hold it yet.
	for id, tags := range ackedTags {
		for _, tag := range tags {
			if !slices.Contains(final[id].Tags, tag) {
				t.Fatalf("acknowledged tag %s on %s lost to a hand save", tag, id)
			}
		}
	}
}

// When the folder cannot be synced after a compaction replaced the JSON
// file, the journal keeps every change (nothing acknowledged depends on that
// sync), memory and disk agree, and the next compaction empties it.
func TestFolderSyncFailureKeepsTheJournal(t *testing.T) {
	s, path := openTemp(t)
	if _, err := s.Add(idA, Entry{}, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	syncDir = func(string) error { return errors.New("injected EIO") }
	t.Cleanup(func() { syncDir = syncDirPlatform })
	if _, err := s.Add(idA, Entry{}, []string{"b"}); err != nil {
		t.Fatalf("a change is durable through the journal whatever the folder sync does: %v", err)
	}
	if err := s.Compact(); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("compaction: want ErrNotDurable, got %v", err)
	}
	e, _ := s.Get(idA)
	if !reflect.DeepEqual(e.Tags, []string{"a", "b"}) || !reflect.DeepEqual(readJSON(t, path)[idA].Tags, e.Tags) {
		t.Fatalf("memory %v and file %v disagree", e.Tags, readJSON(t, path)[idA].Tags)
	}
	if fi, err := os.Stat(path + ".journal"); err != nil || fi.Size() == 0 {
		t.Fatalf("journal emptied although the folder sync failed: %v", err)
	}
	syncDir = syncDirPlatform
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path + ".journal"); fi.Size() != 0 {
		t.Fatal("journal not emptied after a good compaction")
	}
}

func TestPerAssetTagCap(t *testing.T) {
	s, path := openTemp(t)
	tags := make([]string, MaxTagsPerAsset)
	for i := range tags {
		tags[i] = fmt.Sprint("t", i)
	}
	if _, err := s.Add(idA, Entry{}, tags); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if _, err := s.Add(idA, Entry{}, []string{"one-too-many"}); !errors.Is(err, ErrInvalidTags) {
		t.Fatalf("tag over the cap: %v", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("rejected change touched the file")
	}
	// Another asset in the same batch is unaffected.
	if _, err := s.Add(idB, Entry{}, []string{"fine"}); err != nil {
		t.Fatal(err)
	}
}

// The journal's changes are compacted into the JSON file by themselves,
// and the journal is emptied.
func TestJournalIsCompacted(t *testing.T) {
	s, path := openTempOpts(t, Options{CompactDelay: 20 * time.Millisecond})
	if _, err := s.Add(idA, Entry{Path: "output/a.png"}, []string{"x"}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path + ".journal"); err != nil || fi.Size() == 0 {
		t.Fatalf("change not journaled: %v", err)
	}
	waitUntil(t, "compaction", func() bool {
		data, err := os.ReadFile(path)
		fi, _ := os.Stat(path + ".journal")
		return err == nil && strings.Contains(string(data), `"x"`) && fi != nil && fi.Size() == 0
	})
}

// A crash mid-append leaves a torn last line: it is never applied, and the
// records before it are.
func TestTornJournalTailIsIgnored(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tags.json")
	good := encodeRecord(1, map[string]Entry{idA: {Tags: []string{"kept"}}}, nil)
	torn := encodeRecord(2, map[string]Entry{idB: {Tags: []string{"torn"}}}, nil)
	flipped := encodeRecord(3, map[string]Entry{idB: {Tags: []string{"flip"}}}, nil)
	flipped[20] ^= 1 // a bit flipped on disk: checksum mismatch
	for name, tail := range map[string][]byte{"cut short": torn[:len(torn)-7], "bad checksum": flipped} {
		os.Remove(path)
		os.WriteFile(path+".journal", append(append([]byte{}, good...), tail...), 0o644)
		s, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := s.Get(idA); !ok || !reflect.DeepEqual(e.Tags, []string{"kept"}) {
			t.Fatalf("%s: the good record was not replayed: %v", name, e)
		}
		if _, ok := s.Get(idB); ok {
			t.Fatalf("%s: a torn record was applied", name)
		}
		// New records follow the good ones, readable after a restart.
		if _, err := s.Add(idB, Entry{}, []string{"after"}); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, path); !reflect.DeepEqual(got[idB].Tags, []string{"after"}) || !reflect.DeepEqual(got[idA].Tags, []string{"kept"}) {
			t.Fatalf("%s: after the torn tail: %v", name, got)
		}
		s.Close()
	}
}

// The rule for hand saves of the JSON file while changes wait in the
// journal or were compacted since the person opened it.
func TestHandSaveRule(t *testing.T) {
	s, path := openTempOpts(t, Options{CompactDelay: time.Hour})
	s.Add(idA, Entry{Path: "output/a.png"}, []string{"old"})
	s.Add(idB, Entry{Path: "output/b.png"}, []string{"b"})
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	opened := readJSON(t, path) // the person opens the file in an editor

	// comfyshim acknowledges a change and compacts it; then another, still
	// in the journal.
	s.Add(idA, Entry{}, []string{"compacted"})
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	s.Add(idA, Entry{}, []string{"journaled"})

	// The person saves their (stale) copy with an edit of another asset.
	opened[idB] = Entry{Path: opened[idB].Path, Tags: []string{"b", "hand"}, UpdatedAt: opened[idB].UpdatedAt}
	saveByRename(t, path, string(Encode(opened)))
	s.Add(idC, Entry{}, []string{"sync"}) // a write picks the save up at once

	a, _ := s.Get(idA)
	b, _ := s.Get(idB)
	if !reflect.DeepEqual(a.Tags, []string{"compacted", "journaled", "old"}) {
		t.Fatalf("acknowledged changes lost to a stale save: %v", a.Tags)
	}
	if !reflect.DeepEqual(b.Tags, []string{"b", "hand"}) {
		t.Fatalf("the person's edit lost: %v", b.Tags)
	}
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	// Opened now, the file shows everything; removing a tag on purpose
	// sticks.
	now := readJSON(t, path)
	if !reflect.DeepEqual(now[idA].Tags, a.Tags) {
		t.Fatalf("file after the merge: %v", now[idA].Tags)
	}
	now[idA] = Entry{Path: now[idA].Path, Tags: []string{"old"}, UpdatedAt: now[idA].UpdatedAt}
	saveByRename(t, path, string(Encode(now)))
	s.Add(idC, Entry{}, []string{"sync2"})
	if a, _ := s.Get(idA); !reflect.DeepEqual(a.Tags, []string{"old"}) {
		t.Fatalf("deliberate removal undone: %v", a.Tags)
	}
	// A restart sees the same.
	s.Close()
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if a, _ := s2.Get(idA); !reflect.DeepEqual(a.Tags, []string{"old"}) {
		t.Fatalf("after restart: %v", a.Tags)
	}
}

// One tags file, one writer: a second store on the same file is refused
// with a clear error until the first closes.
func TestSecondStoreOnTheSameFileIsRefused(t *testing.T) {
	s, path := openTemp(t)
	if _, err := s.Add(idA, Entry{}, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if s2, err := Open(path, Options{}); err == nil {
		s2.Close()
		t.Fatal("a second store opened the same tags file")
	} else if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %v", err)
	}
	s.Close()
	s3, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	defer s3.Close()
	if e, _ := s3.Get(idA); !reflect.DeepEqual(e.Tags, []string{"a"}) {
		t.Fatalf("reopened: %v", e.Tags)
	}
}
