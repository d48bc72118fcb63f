package tagstore

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	return openTempOpts(t, Options{})
}

func openTempOpts(t *testing.T, opts Options) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sub", "tags.json")
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

// readFile returns what is durable on disk: the JSON file with the journal
// replayed on top, as a restart would load it. The file must parse. The
// journal is read first: a compaction running meanwhile moves changes into
// the file before it empties the journal, so this order never misses one.
func readFile(t *testing.T, path string) map[string]Entry {
	t.Helper()
	var recs []journalRecord
	if jf, err := os.Open(path + ".journal"); err == nil {
		recs, _, _ = readJournal(jf) // a torn tail is never applied
		jf.Close()
	} else if !os.IsNotExist(err) {
		t.Fatal(err)
	}
	m := map[string]Entry{}
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if err == nil {
		if m, err = Parse(data); err != nil {
			t.Fatalf("file on disk does not parse: %v\n%s", err, data)
		}
		recs = sinceFile(recs, fileIdentity(crc32.Checksum(data, castagnoli), int64(len(data))))
	}
	next, _ := replay(m, recs)
	return next
}

// readJSON returns the JSON file alone; it must parse.
func readJSON(t *testing.T, path string) map[string]Entry {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(data)
	if err != nil {
		t.Fatalf("file on disk does not parse: %v\n%s", err, data)
	}
	return m
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOperations(t *testing.T) {
	s, path := openTemp(t)
	seed := Entry{Path: "output/a.png", Tags: []string{"output"}}
	steps := []struct {
		remove    bool
		tags      []string
		changed   []string
		unchanged []string
		total     []string
	}{
		{tags: []string{"b", " a ", "b"}, changed: []string{"a", "b"}, unchanged: []string{}, total: []string{"a", "b", "output"}},
		{tags: []string{"a", "Portrait", "portrait"}, changed: []string{"Portrait", "portrait"}, unchanged: []string{"a"}, total: []string{"Portrait", "a", "b", "output", "portrait"}},
		{remove: true, tags: []string{"portrait", "zzz"}, changed: []string{"portrait"}, unchanged: []string{"zzz"}, total: []string{"Portrait", "a", "b", "output"}},
		{remove: true, tags: []string{"output"}, changed: []string{"output"}, unchanged: []string{}, total: []string{"Portrait", "a", "b"}},
		{remove: true, tags: []string{"Portrait", "a", "b"}, changed: []string{"Portrait", "a", "b"}, unchanged: []string{}, total: []string{}},
		{tags: []string{"é", "z", "Z"}, changed: []string{"Z", "z", "é"}, unchanged: []string{}, total: []string{"Z", "z", "é"}},
	}
	for i, st := range steps {
		op := s.Add
		if st.remove {
			op = s.Remove
		}
		ch, err := op(idA, seed, st.tags)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		want := Change{Changed: st.changed, Unchanged: st.unchanged, Tags: st.total}
		if !reflect.DeepEqual(ch, want) {
			t.Fatalf("step %d: got %#v, want %#v", i, ch, want)
		}
		if e, _ := s.Get(idA); !reflect.DeepEqual(e.Tags, st.total) {
			t.Fatalf("step %d: memory has %q", i, e.Tags)
		}
		if got := readFile(t, path)[idA]; !reflect.DeepEqual(got.Tags, st.total) || got.Path != "output/a.png" || got.UpdatedAt.IsZero() {
			t.Fatalf("step %d: file has %#v", i, got)
		}
	}
	counts := s.TagCounts()
	if !reflect.DeepEqual(counts, map[string]int{"Z": 1, "z": 1, "é": 1}) {
		t.Fatalf("counts %v", counts)
	}
}

func TestNoOpMutationDoesNotWrite(t *testing.T) {
	s, path := openTemp(t)
	ch, err := s.Remove(idA, Entry{Tags: []string{"input"}}, []string{"nope"})
	if err != nil || len(ch.Changed) != 0 || !reflect.DeepEqual(ch.Tags, []string{"input"}) {
		t.Fatalf("%#v %v", ch, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a change that changed nothing created the file")
	}
	if _, ok := s.Get(idA); ok {
		t.Fatal("entry created for a no-op")
	}
}

func TestRejectedInputChangesNothing(t *testing.T) {
	s, path := openTemp(t)
	if _, err := s.Add(idA, Entry{}, []string{"keep"}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	for _, tc := range []struct {
		id   string
		tags []string
		want error
	}{
		{"nope", []string{"x"}, ErrInvalidID},
		{idA, []string{"ok", "bad\x00"}, ErrInvalidTags},
		{idA, []string{" "}, ErrInvalidTags},
		{idA, []string{strings.Repeat("x", 200)}, ErrInvalidTags},
	} {
		if _, err := s.Add(tc.id, Entry{}, tc.tags); !errors.Is(err, tc.want) {
			t.Fatalf("Add(%q, %q): %v, want %v", tc.id, tc.tags, err, tc.want)
		}
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Fatal("a rejected mutation changed the file")
	}
}

func TestReopenKeepsTagsAndFileMode(t *testing.T) {
	s, path := openTemp(t)
	if _, err := s.Add(idA, Entry{Path: "input/x.png"}, []string{"one"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(); err != nil { // the JSON file catches up with the journal
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(idB, Entry{}, []string{"two"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v not kept", fi.Mode().Perm())
	}
	s.Close()
	if _, err := s.Add(idA, Entry{}, []string{"x"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if e, ok := s2.Get(idA); !ok || !reflect.DeepEqual(e.Tags, []string{"one"}) || e.Path != "input/x.png" {
		t.Fatalf("reopened: %#v", e)
	}
	if s2.Len() != 2 {
		t.Fatalf("len %d", s2.Len())
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*"))
	if len(matches) != 0 {
		t.Fatalf("temporary files left behind: %v", matches)
	}
}

func TestOpenErrorsNameThePath(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte("{\n  \"version\": 1,\n  \"assets\": {\n    oops\n}"), 0o644)
	_, err := Open(bad, Options{})
	var pe *ParseError
	if err == nil || !strings.Contains(err.Error(), bad) || !errors.As(err, &pe) || pe.Line != 4 {
		t.Fatalf("unparsable file: %v", err)
	}
	if os.Geteuid() != 0 { // root reads and writes everything
		locked := filepath.Join(dir, "locked")
		os.Mkdir(locked, 0o500)
		_, err = Open(filepath.Join(locked, "tags.json"), Options{})
		if err == nil || !strings.Contains(err.Error(), locked) {
			t.Fatalf("unwritable folder: %v", err)
		}
	}
	notDir := filepath.Join(dir, "file")
	os.WriteFile(notDir, nil, 0o644)
	_, err = Open(filepath.Join(notDir, "tags.json"), Options{})
	if err == nil || !strings.Contains(err.Error(), notDir) {
		t.Fatalf("folder is a file: %v", err)
	}
}

// saveByRename writes like vim or VS Code with atomic save: a new file
// renamed over the old one.
func saveByRename(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".swp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// saveInPlace truncates and rewrites, in two writes, as some editors do.
func saveInPlace(t *testing.T, path, content string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	half := len(content) / 2
	f.WriteString(content[:half])
	time.Sleep(20 * time.Millisecond)
	f.WriteString(content[half:])
	f.Close()
}

func docWith(tags map[string][]string) string {
	entries := map[string]Entry{}
	for id, tt := range tags {
		entries[id] = Entry{Tags: sortedUnique(tt)}
	}
	return string(Encode(entries))
}

func TestExternalEditsAreReloaded(t *testing.T) {
	for name, save := range map[string]func(*testing.T, string, string){"rename": saveByRename, "in-place": saveInPlace} {
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			var reloads []error
			path := filepath.Join(t.TempDir(), "tags.json")
			s, err := Open(path, Options{OnReload: func(err error) { mu.Lock(); reloads = append(reloads, err); mu.Unlock() }})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Add(idA, Entry{}, []string{"mine"}); err != nil {
				t.Fatal(err)
			}
			// The server's own write must not be taken for an edit.
			time.Sleep(3 * defaultDebounce)
			gen := s.Generation()

			save(t, path, docWith(map[string][]string{idA: {"mine", "hand"}, idB: {"new"}}))
			waitUntil(t, "hand edit to load", func() bool { e, _ := s.Get(idB); return len(e.Tags) == 1 })
			if e, _ := s.Get(idA); !reflect.DeepEqual(e.Tags, []string{"hand", "mine"}) {
				t.Fatalf("edit not applied: %q", e.Tags)
			}
			if s.Generation() == gen {
				t.Fatal("generation did not change")
			}

			// A half-finished edit: keep serving, refuse changes, leave the file alone.
			broken := "{\n  \"version\": 1,\n  \"assets\": {\n    \"" + idA + "\": {\"tags\": [\"mine\",\n"
			save(t, path, broken)
			waitUntil(t, "broken file to be noticed", func() bool { return s.Err() != nil })
			var pe *ParseError
			if err := s.Err(); !errors.Is(err, ErrSidecarInvalid) || !errors.As(err, &pe) || pe.Line < 4 {
				t.Fatalf("Err() = %v", err)
			}
			if e, _ := s.Get(idB); !reflect.DeepEqual(e.Tags, []string{"new"}) {
				t.Fatal("last good state not served")
			}
			if _, err := s.Add(idA, Entry{}, []string{"x"}); !errors.Is(err, ErrSidecarInvalid) {
				t.Fatalf("mutation on a broken file: %v", err)
			}
			if data, _ := os.ReadFile(path); string(data) != broken {
				t.Fatal("the person's unfinished file was overwritten")
			}

			// Fixed: reload and resume.
			save(t, path, docWith(map[string][]string{idA: {"fixed"}}))
			waitUntil(t, "fixed file to load", func() bool { return s.Err() == nil })
			ch, err := s.Add(idA, Entry{}, []string{"after"})
			if err != nil || !reflect.DeepEqual(ch.Tags, []string{"after", "fixed"}) {
				t.Fatalf("after fix: %#v %v", ch, err)
			}
			if _, ok := s.Get(idB); ok {
				t.Fatal("entry removed by hand is still served")
			}
			mu.Lock()
			defer mu.Unlock()
			if len(reloads) < 3 {
				t.Fatalf("OnReload called %d times", len(reloads))
			}
		})
	}
}

func TestEditJustBeforeAWriteIsKept(t *testing.T) {
	s, path := openTemp(t)
	if _, err := s.Add(idA, Entry{}, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	// No waiting for the watcher: the write itself must notice the edit.
	saveByRename(t, path, docWith(map[string][]string{idA: {"a", "hand"}, idB: {"b"}}))
	ch, err := s.Add(idA, Entry{}, []string{"c"})
	if err != nil || !reflect.DeepEqual(ch.Tags, []string{"a", "c", "hand"}) {
		t.Fatalf("%#v %v", ch, err)
	}
	if got := readFile(t, path); len(got) != 2 || !reflect.DeepEqual(got[idB].Tags, []string{"b"}) {
		t.Fatalf("edit lost: %#v", got)
	}
}

func TestRemovedFileIsWrittenAgain(t *testing.T) {
	s, path := openTemp(t)
	s.Add(idA, Entry{}, []string{"a"})
	os.Remove(path)
	time.Sleep(3 * defaultDebounce)
	if _, ok := s.Get(idA); !ok {
		t.Fatal("tags dropped when the file was removed")
	}
	s.Add(idB, Entry{}, []string{"b"})
	if got := readFile(t, path); len(got) != 2 {
		t.Fatalf("file after removal: %#v", got)
	}
}

// TestConcurrentMutationsAndEdits runs bursts of concurrent mutations with
// hand edits between them (made without waiting for the watcher) and checks
// that every acknowledged mutation and every edit is in the final file.
func TestConcurrentMutationsAndEdits(t *testing.T) {
	s, path := openTemp(t)
	ids := make([]string, 20)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	want := map[string]map[string]bool{}
	var mu sync.Mutex
	for round := 0; round < 8; round++ {
		var wg sync.WaitGroup
		for w := 0; w < 50; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				id := ids[(w+round)%len(ids)]
				tag := fmt.Sprintf("r%d-w%d", round, w)
				if _, err := s.Add(id, Entry{}, []string{tag}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if want[id] == nil {
					want[id] = map[string]bool{}
				}
				want[id][tag] = true
				mu.Unlock()
			}(w)
		}
		wg.Wait()
		// A person adds an asset and a tag by hand.
		cur := readFile(t, path)
		ext := uuid.NewString()
		cur[ext] = Entry{Tags: []string{fmt.Sprintf("hand-%d", round)}}
		cur[ids[0]] = Entry{Tags: sortedUnique(append(slicesClone(cur[ids[0]].Tags), fmt.Sprintf("hand0-%d", round)))}
		saveByRename(t, path, string(Encode(cur)))
		want[ext] = map[string]bool{fmt.Sprintf("hand-%d", round): true}
		want[ids[0]][fmt.Sprintf("hand0-%d", round)] = true
	}
	final := readFile(t, path)
	for id, tags := range want {
		have := map[string]bool{}
		for _, tg := range final[id].Tags {
			have[tg] = true
		}
		for tg := range tags {
			if !have[tg] {
				t.Errorf("asset %s lost tag %s", id, tg)
			}
		}
	}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// TestCrashLeavesACompleteFile kills a child process that writes in a loop
// and checks the file always parses and holds every acknowledged mutation.
func TestCrashLeavesACompleteFile(t *testing.T) {
	if os.Getenv("TAGSTORE_CRASH_CHILD") != "" {
		crashChild()
		return
	}
	// Once with compactions a second apart (rarely inside the kill
	// window), once with one every few milliseconds, so kills land inside
	// compactions too: while the file is written, the journal trimmed, and
	// commits go on meanwhile.
	for _, delay := range []string{"", "3ms"} {
		t.Run("compact_delay="+delay, func(t *testing.T) { crashRuns(t, delay) })
	}
}

func crashRuns(t *testing.T, compactDelay string) {
	path := filepath.Join(t.TempDir(), "tags.json")
	for run := 0; run < 5; run++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashLeavesACompleteFile$")
		cmd.Env = append(os.Environ(), "TAGSTORE_CRASH_CHILD="+path, "TAGSTORE_CRASH_COMPACT="+compactDelay)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// What the child acknowledged, in order: tags added, names set,
		// entries deleted.
		type want struct {
			tag, name string
			deleted   bool
		}
		acked := map[string]*want{}
		sc := bufio.NewScanner(out)
		for n := 0; sc.Scan() && n < 60*(run+1); n++ {
			f := strings.Fields(sc.Text())
			if len(f) != 3 {
				continue
			}
			switch f[0] {
			case "add":
				acked[f[1]] = &want{tag: f[2]}
			case "set":
				if w := acked[f[1]]; w != nil {
					w.name = f[2]
				}
			case "del":
				acked[f[1]] = &want{deleted: true}
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		go io.Copy(io.Discard, out)
		_ = cmd.Wait()
		if len(acked) == 0 {
			t.Fatal("child acknowledged nothing")
		}
		final := readFile(t, path) // fails the test if torn
		for id, w := range acked {
			e, ok := final[id]
			switch {
			case w.deleted && ok:
				t.Fatalf("run %d: acknowledged delete of %s undone after kill -9", run, id)
			case w.deleted:
			case !ok || !slices.Contains(e.Tags, w.tag):
				t.Fatalf("run %d: acknowledged tag %s on %s missing after kill -9", run, w.tag, id)
			case w.name != "" && e.Name != w.name:
				t.Fatalf("run %d: acknowledged name %s on %s is %q after kill -9", run, w.name, id, e.Name)
			}
		}
	}
}

// crashChild mutates forever (adds tags, sets names and metadata, deletes
// entries), printing each mutation once acknowledged.
func crashChild() {
	delay, _ := time.ParseDuration(os.Getenv("TAGSTORE_CRASH_COMPACT"))
	s, err := Open(os.Getenv("TAGSTORE_CRASH_CHILD"), Options{CompactDelay: delay})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var mu sync.Mutex
	for w := 0; w < 4; w++ {
		go func(w int) {
			say := func(format string, args ...any) {
				mu.Lock()
				fmt.Printf(format, args...)
				mu.Unlock()
			}
			check := func(err error) {
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
			}
			for i := 0; ; i++ {
				id := uuid.NewString()
				tag := fmt.Sprintf("%d-%d-%s", w, i, id[:8])
				_, err := s.Add(id, Entry{Path: "output/x.png"}, []string{tag, "bulk"})
				check(err)
				say("add %s %s\n", id, tag)
				if i%3 == 0 {
					_, err := s.Set(id, Entry{}, Update{Name: &tag, Meta: []byte(`{"i":` + fmt.Sprint(i) + `}`)})
					check(err)
					say("set %s %s\n", id, tag)
				}
				if i%5 == 4 {
					// An entry of its own, so a delete the parent does not
					// read (it stops reading before it kills) cannot
					// contradict what it did read.
					victim := uuid.NewString()
					_, err := s.Add(victim, Entry{Path: "output/v.png"}, []string{"victim"})
					check(err)
					check(s.Delete(victim))
					say("del %s x\n", victim)
				}
			}
		}(w)
	}
	select {}
}

// Mutations racing with Close either complete or fail with ErrClosed; none hangs.
func TestCloseDuringMutations(t *testing.T) {
	for round := 0; round < 20; round++ {
		s, err := Open(filepath.Join(t.TempDir(), "tags.json"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < 20; i++ {
					_, err := s.Add(uuid.NewString(), Entry{}, []string{fmt.Sprint("t", w, i)})
					if err != nil && !errors.Is(err, ErrClosed) {
						t.Error(err)
						return
					}
				}
			}(w)
		}
		time.Sleep(time.Duration(round) * time.Millisecond)
		s.Close()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("a mutation hung across Close")
		}
	}
}

// TestSetNameAndMetadata: a name and user_metadata set through Set are
// durable from the journal alone (a crash before compaction) and from the
// JSON file, and bad values change nothing.
func TestSetNameAndMetadata(t *testing.T) {
	s, path := openTemp(t)
	name, tags := "Sunset (final)", []string{"b", "a"}
	e, err := s.Set(idA, Entry{Path: "input/x.png", Tags: []string{"input"}}, Update{Name: &name, Meta: []byte(` { "rating": 5, "note": "ok" } `), Tags: &tags})
	if err != nil || e.Name != name || string(e.Meta) != `{"rating":5,"note":"ok"}` || !reflect.DeepEqual(e.Tags, []string{"a", "b"}) {
		t.Fatalf("Set: %+v, %v", e, err)
	}
	for _, bad := range []Update{{Meta: []byte(`[1]`)}, {Meta: []byte(`{"a":`)}, {Name: ptr("a\x00b")}, {Name: ptr(strings.Repeat("n", MaxNameBytes+1))}} {
		if _, err := s.Set(idA, Entry{}, bad); !errors.Is(err, ErrInvalidTags) {
			t.Fatalf("bad update %+v: %v", bad, err)
		}
	}
	// Reopen from the journal only (no compaction happened yet).
	s2 := openCopy(t, path)
	if got, _ := s2.Get(idA); got.Name != name || string(got.Meta) != `{"rating":5,"note":"ok"}` {
		t.Fatalf("from the journal: %+v", got)
	}
	s2.Close()
	// Clearing the metadata, then the JSON file after compaction.
	empty := ""
	if _, err := s.Set(idA, Entry{}, Update{Meta: []byte(`{}`), Name: &empty}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Set(idB, Entry{Path: "output/y.png"}, Update{Meta: []byte(`{"k":"v"}`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	file := readFile(t, path)
	if a := file[idA]; a.Name != "" || a.Meta != nil || !reflect.DeepEqual(a.Tags, []string{"a", "b"}) {
		t.Fatalf("file entry A: %+v", a)
	}
	if b := file[idB]; string(b.Meta) != `{"k":"v"}` {
		t.Fatalf("file entry B: %+v", b)
	}
}

func ptr[T any](v T) *T { return &v }

// openCopy opens a copy of the tags file and its journal as a crash would
// leave them (the store at path keeps its lock, so it cannot be reopened).
func openCopy(t *testing.T, path string) *Store {
	t.Helper()
	dir := t.TempDir()
	copyFile(t, path, filepath.Join(dir, "tags.json"))
	copyFile(t, path+".journal", filepath.Join(dir, "tags.json.journal"))
	s, err := Open(filepath.Join(dir, "tags.json"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if os.IsNotExist(err) {
		return // not written yet
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDelete: a deleted entry is gone from the journal's replay (a crash
// before compaction) and from the JSON file after it; an asset deleted and
// tagged again in one run starts from its defaults.
func TestDelete(t *testing.T) {
	s, path := openTemp(t)
	if _, err := s.Add(idA, Entry{Path: "input/a.png", Tags: []string{"input"}}, []string{"keep"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(idB, Entry{Path: "input/b.png", Tags: []string{"input"}}, []string{"gone"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(idB); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(idB); err != nil { // again: nothing to do
		t.Fatal(err)
	}
	if _, ok := s.Get(idB); ok || s.TagCounts()["gone"] != 0 || s.Len() != 1 {
		t.Fatalf("after Delete: len %d, counts %v", s.Len(), s.TagCounts())
	}
	s2 := openCopy(t, path)
	if _, ok := s2.Get(idB); ok {
		t.Fatal("a deleted entry came back from the journal")
	}
	if a, ok := s2.Get(idA); !ok || !slices.Contains(a.Tags, "keep") {
		t.Fatalf("the other entry: %+v", a)
	}
	s2.Close()
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	if file := readFile(t, path); len(file) != 1 || file[idB].Tags != nil {
		t.Fatalf("file after compaction: %v", file)
	}
	ch, err := s.Add(idB, Entry{Path: "input/b.png", Tags: []string{"input"}}, []string{"new"})
	if err != nil || strings.Join(ch.Tags, ",") != "input,new" {
		t.Fatalf("re-tagged: %+v %v", ch, err)
	}
}

// TestCommitsDuringCompaction: while a compaction writes the JSON file,
// changes are still acknowledged (the write is off the committer); the
// journal then keeps exactly the changes the file lacks, and a Compact
// brings the file up to date.
func TestCommitsDuringCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tags.json")
	writing, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	testHookCompactWrite = func() {
		once.Do(func() {
			close(writing)
			<-release
		})
	}
	defer func() { testHookCompactWrite = nil }()
	s, err := Open(path, Options{CompactDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first := uuid.NewString()
	if _, err := s.Add(first, Entry{Path: "output/a.png"}, []string{"before"}); err != nil {
		t.Fatal(err)
	}
	<-writing // the compaction holding "before" is writing now
	during := make([]string, 20)
	done := make(chan error, 1)
	go func() {
		for i := range during {
			during[i] = uuid.NewString()
			if _, err := s.Add(during[i], Entry{Path: "output/b.png"}, []string{"during"}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second): // a deadlock guard, not a speed check
		t.Fatal("changes wait for the compaction's write")
	}
	close(release)
	waitUntil(t, "the first compaction", func() bool {
		data, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		m, err := Parse(data)
		_, ok := m[first]
		return err == nil && ok
	})
	// Whatever the file lacks of what came during its write, the journal
	// still holds (another compaction may have caught up meanwhile).
	// The journal first: a compaction writes the file before it trims the
	// journal, so read in this order the two never both miss a change.
	inJournal := map[string]bool{}
	recs := journalRecords(t, path)
	file := readJSON(t, path)
	for _, rec := range recs {
		for _, je := range rec.Entries {
			inJournal[je.ID] = true
		}
	}
	for _, id := range during {
		if _, ok := file[id]; !ok && !inJournal[id] {
			t.Fatalf("%s is in neither the file nor the journal", id)
		}
	}
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	file = readJSON(t, path)
	for _, id := range append(during, first) {
		if _, ok := file[id]; !ok {
			t.Fatalf("%s missing from the file after Compact", id)
		}
	}
	if fi, err := os.Stat(path + ".journal"); err != nil || fi.Size() != 0 {
		t.Fatalf("journal after Compact: %v %v", fi, err)
	}
}

func journalRecords(t *testing.T, path string) []journalRecord {
	t.Helper()
	f, err := os.Open(path + ".journal")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, _, _ := readJournal(f)
	return recs
}

// A compaction writes the file from the renderings it keeps, in pieces:
// the file must be exactly what Encode makes of the state, after additions,
// changes that reuse the other entries' renderings, and deletions.
func TestCompactionWritesTheEncodedState(t *testing.T) {
	s, path := openTemp(t)
	ids := make([]string, 5)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	steps := []func() error{
		func() error { _, err := s.Add(ids[0], Entry{Path: "output/a.png"}, []string{"x"}); return err },
		func() error { _, err := s.Add(ids[1], Entry{Path: "output/b.png"}, []string{"y", "z"}); return err },
		func() error { _, err := s.Add(ids[2], Entry{Path: "output/c.png"}, []string{"é"}); return err },
		func() error { _, err := s.Remove(ids[1], Entry{}, []string{"y"}); return err },
		func() error { return s.Delete(ids[0]) },
		func() error { _, err := s.Add(ids[3], Entry{Path: "input/d.png"}, []string{"w"}); return err },
		func() error { return s.Delete(ids[2]) },
		func() error { return s.Delete(ids[1]) },
		func() error { return s.Delete(ids[3]) },
	}
	for k, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
		if err := s.Compact(); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]Entry{}
		for _, id := range ids {
			if e, ok := s.Get(id); ok {
				want[id] = e
			}
		}
		if string(data) != string(Encode(want)) {
			t.Fatalf("step %d: the file is\n%s\nwant\n%s", k, data, Encode(want))
		}
	}
}
