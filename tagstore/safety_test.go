package tagstore

import (
	"errors"
	"fmt"
	"os"
	"reflect"
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
	s, path := openTemp(t)
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
				if _, err := s.Add(id, Entry{}, []string{fmt.Sprint("w", w, "-", n)}); err == nil {
					acked.Add(1)
				} else if !errors.Is(err, ErrSidecarInvalid) && !errors.Is(err, ErrBusy) {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	// Each save reads the file as it is, adds its own asset, and renames
	// the result into place, as an editor's save would.
	for i := 0; i < saves; i++ {
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
	t.Logf("hand saves surviving under 4 busy writers: %d of %d (%d tag changes acknowledged meanwhile)", survived, saves, acked.Load())
	if survived != saves {
		t.Fatalf("%d of %d hand saves were replaced by comfyshim's writes", saves-survived, saves)
	}
}

// When the folder cannot be synced after the rename, the change is in the
// file: memory shows it too, and the reply says it is not durable.
func TestFolderSyncFailureIsReportedConsistently(t *testing.T) {
	s, path := openTemp(t)
	if _, err := s.Add(idA, Entry{}, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	syncDir = func(string) error { return errors.New("injected EIO") }
	t.Cleanup(func() { syncDir = syncDirPlatform })
	_, err := s.Add(idA, Entry{}, []string{"b"})
	if !errors.Is(err, ErrNotDurable) {
		t.Fatalf("want ErrNotDurable, got %v", err)
	}
	e, _ := s.Get(idA)
	onDisk := readFile(t, path)[idA]
	if !reflect.DeepEqual(e.Tags, []string{"a", "b"}) || !reflect.DeepEqual(onDisk.Tags, e.Tags) {
		t.Fatalf("memory %v and file %v disagree", e.Tags, onDisk.Tags)
	}
	syncDir = syncDirPlatform
	ch, err := s.Add(idA, Entry{}, []string{"b"})
	if err != nil || len(ch.Changed) != 0 {
		t.Fatalf("retry after the failure: %v %v", ch, err)
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
