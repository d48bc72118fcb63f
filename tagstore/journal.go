package tagstore

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"time"
)

// The journal is an append-only file beside the tags file
// (<tags file>.journal) holding the acknowledged changes that are not yet
// compacted into the JSON file. Each line is one group commit:
//
//	<crc32c of the JSON, 8 hex digits> <JSON: {"seq":N,"entries":[...]}>
//
// Every entry is an asset's complete state after the change, with its
// state in the JSON file the journal was written against ("before"; absent
// when the file had none), so a replay can tell a hand save of the JSON
// file from the state it was written against (see mergeSave), and replaying
// a line twice changes nothing. A line whose checksum does not match (a
// write torn by a crash) ends the journal: it and anything after it are
// never applied. The file is emptied once its changes are in the JSON file.

// journalEntry is one asset's state after a change.
type journalEntry struct {
	ID           string          `json:"id"`
	Path         string          `json:"path,omitempty"`
	Tags         []string        `json:"tags"`
	UpdatedAt    string          `json:"updated_at,omitempty"`
	Name         string          `json:"name,omitempty"`
	UserMetadata json.RawMessage `json:"user_metadata,omitempty"`
	Deleted      bool            `json:"deleted,omitempty"` // the asset's entry was deleted
	Before       *journalEntry   `json:"before,omitempty"`
}

func toJournal(id string, e Entry) journalEntry {
	je := journalEntry{ID: id, Path: e.Path, Tags: e.Tags, Name: e.Name, UserMetadata: e.Meta, Deleted: e.gone}
	if !e.UpdatedAt.IsZero() {
		je.UpdatedAt = e.UpdatedAt.UTC().Format(time.RFC3339Nano)
	}
	return je
}

type journalRecord struct {
	Seq     uint64         `json:"seq"`
	Entries []journalEntry `json:"entries"`
	// Compacting marks where a compaction rendered the JSON file it is
	// writing, by that file's identity (fileIdentity): once the file on
	// disk is that one, the records up to here are in it, and the records
	// after it were written against it.
	Compacting string `json:"compacting,omitempty"`
}

// fileIdentity names a version of the JSON file by its content.
func fileIdentity(crc uint32, size int64) string { return fmt.Sprintf("%08x:%d", crc, size) }

// sinceFile drops the records a JSON file with identity id already holds:
// those up to the last compaction marker naming it.
func sinceFile(recs []journalRecord, id string) []journalRecord {
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Compacting != "" && recs[i].Compacting == id {
			return recs[i+1:]
		}
	}
	return recs
}

// encodeRecord renders one journal line: each entry after the change, and
// as the JSON file holds it (before).
func encodeRecord(seq uint64, entries map[string]Entry, before map[string]baseEntry) []byte {
	return encodeLine(journalRecord{Seq: seq, Entries: make([]journalEntry, 0, len(entries))}, entries, before)
}

func encodeLine(rec journalRecord, entries map[string]Entry, before map[string]baseEntry) []byte {
	for id, e := range entries {
		je := toJournal(id, e)
		if b := before[id]; b.ok {
			bj := toJournal(id, b.e)
			bj.ID = ""
			je.Before = &bj
		}
		rec.Entries = append(rec.Entries, je)
	}
	payload, _ := json.Marshal(rec) // strings and slices only: cannot fail
	line := make([]byte, 0, len(payload)+10)
	line = append(line, fmt.Sprintf("%08x ", crc32.Checksum(payload, castagnoli))...)
	line = append(line, payload...)
	return append(line, '\n')
}

// ErrInUse is returned by Open when another store (in this process or
// another comfyshim) already uses the tags file: two writers would
// interleave their journals and compactions.
var ErrInUse = errors.New("the tags file is in use by another comfyshim")

// errNoLocks is a filesystem without file locks.
var errNoLocks = errors.New("the filesystem cannot lock files")

// errTorn marks where the readable journal ends.
var errTorn = errors.New("torn or corrupt journal record")

// readJournal returns the records of a journal and the length of its valid
// prefix; everything after it is a torn tail to be cut off.
func readJournal(r io.Reader) (recs []journalRecord, valid int64, tail error) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) == 0 && err == io.EOF {
			return recs, valid, nil
		}
		if err != nil && err != io.EOF {
			return recs, valid, err
		}
		rec, perr := parseRecord(line)
		if perr != nil {
			return recs, valid, perr
		}
		recs = append(recs, rec)
		valid += int64(len(line))
	}
}

func parseRecord(line []byte) (journalRecord, error) {
	var rec journalRecord
	if len(line) < 10 || line[len(line)-1] != '\n' || line[8] != ' ' {
		return rec, errTorn
	}
	sum, err := strconv.ParseUint(string(line[:8]), 16, 32)
	payload := bytes.TrimSuffix(line[9:], []byte{'\n'})
	if err != nil || uint32(sum) != crc32.Checksum(payload, castagnoli) {
		return rec, errTorn
	}
	if err := json.Unmarshal(payload, &rec); err != nil {
		return rec, fmt.Errorf("%w: %v", errTorn, err)
	}
	for _, je := range rec.Entries {
		if _, err := CanonicalID(je.ID); err != nil {
			return rec, fmt.Errorf("%w: %v", errTorn, err)
		}
		if _, err := je.entry(); err != nil {
			return rec, fmt.Errorf("%w: %v", errTorn, err)
		}
		if je.Before != nil {
			if _, err := je.Before.entry(); err != nil {
				return rec, fmt.Errorf("%w: %v", errTorn, err)
			}
		}
	}
	return rec, nil
}

// before is the entry's state in the JSON file it was written against.
func (je journalEntry) before() baseEntry {
	if je.Before == nil {
		return baseEntry{}
	}
	e, _ := je.Before.entry() // checked when read
	return baseEntry{e, true}
}

// entry checks a journal entry as strictly as the JSON file's.
func (je journalEntry) entry() (Entry, error) {
	for _, t := range je.Tags {
		if err := CheckTag(t); err != nil {
			return Entry{}, err
		}
	}
	e := Entry{Path: je.Path, Tags: sortedUnique(je.Tags), Name: je.Name, gone: je.Deleted}
	if len(e.Tags) > MaxTagsPerAsset {
		return Entry{}, fmt.Errorf("asset %s: too many tags", je.ID)
	}
	if err := checkName(je.Name); err != nil {
		return Entry{}, err
	}
	var err error
	if e.Meta, err = checkMeta(je.UserMetadata); err != nil {
		return Entry{}, err
	}
	if je.UpdatedAt != "" {
		t, err := time.Parse(time.RFC3339Nano, je.UpdatedAt)
		if err != nil {
			return Entry{}, err
		}
		e.UpdatedAt = t
	}
	return e, nil
}

// journal is the open journal file, appended by the committer only.
type journal struct {
	f        *os.File
	seq      uint64
	size     int64
	unlocked error // why it could not be locked (no locks on this filesystem), or nil
}

// openJournal reads the journal at path (missing: empty), cuts off a torn
// tail, and opens it for appending. It returns the records to replay.
func openJournal(path string) (*journal, []journalRecord, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, err
	}
	lockErr := lockFile(f)
	if errors.Is(lockErr, ErrInUse) {
		f.Close()
		return nil, nil, lockErr
	}
	recs, valid, tail := readJournal(f)
	if tail != nil && !errors.Is(tail, errTorn) {
		f.Close()
		return nil, nil, tail
	}
	if fi, err := f.Stat(); err == nil && fi.Size() != valid {
		// A write torn by a crash: never applied, and cut off so that
		// new records follow the valid ones.
		if err := f.Truncate(valid); err != nil {
			f.Close()
			return nil, nil, err
		}
		if err := syncData(f); err != nil {
			f.Close()
			return nil, nil, err
		}
	}
	if _, err := f.Seek(valid, io.SeekStart); err != nil {
		f.Close()
		return nil, nil, err
	}
	j := &journal{f: f, size: valid, unlocked: lockErr}
	if len(recs) > 0 {
		j.seq = recs[len(recs)-1].Seq
	}
	return j, recs, nil
}

// append writes one group commit and makes it durable.
func (j *journal) append(entries map[string]Entry, before map[string]baseEntry) error {
	return j.write(encodeRecord(j.seq+1, entries, before))
}

// mark durably notes that a compaction is about to write the JSON file
// with identity id (see journalRecord.Compacting).
func (j *journal) mark(id string) error {
	return j.write(encodeLine(journalRecord{Seq: j.seq + 1, Entries: []journalEntry{}, Compacting: id}, nil, nil))
}

func (j *journal) write(line []byte) error {
	n, err := j.f.Write(line)
	if err != nil {
		// Cut a partial line off so the next record is readable.
		_ = j.f.Truncate(j.size)
		_, _ = j.f.Seek(j.size, io.SeekStart)
		return err
	}
	if err := syncData(j.f); err != nil {
		_ = j.f.Truncate(j.size)
		_, _ = j.f.Seek(j.size, io.SeekStart)
		return err
	}
	j.seq++
	j.size += int64(n)
	return nil
}

// reset empties the journal once its changes are in the JSON file.
func (j *journal) reset() error {
	if j.size == 0 {
		return nil
	}
	if err := j.f.Truncate(0); err != nil {
		return err
	}
	if _, err := j.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	j.size = 0
	return syncData(j.f)
}

// dropBefore removes the records before byte offset mark (a compaction
// put them in the JSON file) and keeps the later ones: the kept records are
// written to a new file that replaces the journal, so a crash leaves one
// whole journal or the other (replaying records the file already holds
// changes nothing: see replay).
func (j *journal) dropBefore(mark int64, path string) error {
	switch {
	case mark <= 0:
		return nil
	case mark >= j.size:
		return j.reset()
	}
	tail := make([]byte, j.size-mark)
	if _, err := j.f.ReadAt(tail, mark); err != nil {
		return err
	}
	// The journal is closed for the swap (Windows replaces no open file)
	// and opened again, locked, either way.
	_ = j.f.Close()
	swapErr := WriteFile(path, tail)
	nf, err := os.OpenFile(path, os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("reopening the tags journal: %w", err)
	}
	j.unlocked = lockFile(nf)
	size, err := nf.Seek(0, io.SeekEnd)
	if err != nil {
		nf.Close()
		return err
	}
	j.f, j.size = nf, size
	return swapErr
}

func (j *journal) close() error { return j.f.Close() }
