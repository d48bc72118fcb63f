package tagstore

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"
)

// fileSig identifies a version of the sidecar on disk, so the server can
// tell its own writes (and untouched files) from a person's edits.
type fileSig struct {
	exists bool
	ino    uint64 // file identity where the platform has one (0 on Windows)
	size   int64
	mtime  time.Time
	mode   os.FileMode
	crc    uint32 // CRC-32C of the content
}

func (a fileSig) sameMeta(b fileSig) bool {
	return a.exists && b.exists && a.ino == b.ino && a.size == b.size && a.mtime.Equal(b.mtime) && a.mode == b.mode
}

func (a fileSig) sameContent(b fileSig) bool {
	return a.exists && b.exists && a.size == b.size && a.crc == b.crc
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func metaOf(fi os.FileInfo) fileSig {
	return fileSig{exists: true, ino: fileIno(fi), size: fi.Size(), mtime: fi.ModTime(), mode: fi.Mode().Perm()}
}

func sigOf(fi os.FileInfo, data []byte) fileSig {
	s := metaOf(fi)
	s.crc = crc32.Checksum(data, castagnoli)
	return s
}

// statSig is the file's metadata now; exists is false when there is none.
func statSig(path string) (fileSig, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return fileSig{}, nil
	}
	if err != nil {
		return fileSig{}, err
	}
	return metaOf(fi), nil
}

// readIfChanged returns the file's content and signature, or nil data when
// its metadata still matches known.
func readIfChanged(path string, known fileSig) (fileSig, []byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileSig{}, nil, err
	}
	if metaOf(fi).sameMeta(known) {
		return known, nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fileSig{}, nil, err
	}
	// Describe what was read, not what was statted: an editor may still be
	// writing, and the next event will bring the rest.
	fi2, err := os.Stat(path)
	if err != nil {
		return fileSig{}, nil, err
	}
	sig := sigOf(fi2, data)
	if sig.size != int64(len(data)) {
		sig.size = int64(len(data))
		sig.mtime = time.Time{} // force a re-read next time
	}
	if data == nil {
		data = []byte{}
	}
	return sig, data, nil
}

var (
	// errStale means the file changed on disk since it was last read: a
	// person saved. Nothing was replaced; read it again and retry.
	errStale = errors.New("tags file changed on disk during the write")
	// ErrNotDurable means the new file is in place but the folder could not
	// be synced: the change is visible, and may not survive a power loss.
	ErrNotDurable = errors.New("tags file replaced, but the folder could not be synced")
)

// syncDir is a variable so tests can make the folder sync fail.
var syncDir = syncDirPlatform

// prepared is a new version of the tags file, written and fsynced beside
// it under a temporary name, not yet in place.
type prepared struct {
	tmp string
	sig fileSig // what the file will be once in place (a rename keeps all of it)
}

// discard removes a prepared file that will not be placed.
func (p prepared) discard() { _ = os.Remove(p.tmp) }

// prepareFile writes a new version of path beside it through write
// (buffered, its CRC-32C computed on the way) and makes it durable.
func prepareFile(path string, mode os.FileMode, write func(io.Writer) error) (prepared, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return prepared{}, err
	}
	tmp := f.Name()
	fail := func(err error) (prepared, error) {
		_ = f.Close()
		_ = os.Remove(tmp)
		return prepared{}, err
	}
	sum := crc32.New(castagnoli)
	w := bufio.NewWriterSize(io.MultiWriter(f, sum), 256<<10)
	if err := write(w); err != nil {
		return fail(err)
	}
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return prepared{}, err
	}
	sig := metaOf(fi)
	sig.crc = sum.Sum32()
	return prepared{tmp: tmp, sig: sig}, nil
}

// placeFile puts a prepared file in place of path so that a crash at any
// instant leaves either the old or the new complete file, then fsyncs the
// folder. The prepared file is consumed either way.
//
// expected is the file as comfyshim last read or wrote it. A person's save
// made since then is never overwritten: the file is checked just before it
// is replaced, and where the platform can swap two files atomically (Linux,
// macOS) the displaced file is checked after the swap too and swapped back
// if it was not the expected one. Either way errStale is returned.
func placeFile(path string, p prepared, expected fileSig) (fileSig, error) {
	dir, tmp := filepath.Dir(path), p.tmp
	placed := false
	defer func() {
		if !placed {
			_ = os.Remove(tmp)
		}
	}()
	written := p.sig
	now, err := statSig(path)
	if err != nil {
		return fileSig{}, err
	}
	if now.exists != expected.exists || (now.exists && !now.sameMeta(expected)) {
		return fileSig{}, errStale
	}
	if !expected.exists {
		// Create without replacing: a file that appeared meanwhile is a
		// person's and is kept.
		switch err := os.Link(tmp, path); {
		case err == nil:
			_ = os.Remove(tmp)
		case errors.Is(err, os.ErrExist):
			return fileSig{}, errStale
		default: // no hard links on this filesystem
			if err := replaceFile(tmp, path); err != nil {
				return fileSig{}, err
			}
		}
	} else {
		swapped, err := exchange(tmp, path)
		if err != nil {
			return fileSig{}, err
		}
		if swapped {
			// tmp now holds what was at path an instant ago.
			old, err := os.Lstat(tmp)
			if err != nil {
				return fileSig{}, err
			}
			if !metaOf(old).sameMeta(expected) {
				// A save landed between the check and the swap: put it back.
				if _, err := exchange(tmp, path); err != nil {
					placed = true // both files still exist; leave them for a person
					return fileSig{}, fmt.Errorf("restoring a save made during the write (kept as %s): %w", tmp, err)
				}
				return fileSig{}, errStale
			}
			_ = os.Remove(tmp)
		} else if err := replaceFile(tmp, path); err != nil {
			return fileSig{}, err
		}
	}
	placed = true
	if err := syncDir(dir); err != nil {
		return written, fmt.Errorf("%w: fsync %s: %v", ErrNotDurable, dir, err)
	}
	return written, nil
}

// probeWritable fails early, naming the folder, when the sidecar could
// never be written there.
func probeWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".comfyshim-probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(name)
}

// SyncDir makes the creation or renaming of a file in dir durable (a no-op
// where the platform has no such call; see syncDirPlatform).
func SyncDir(dir string) error { return syncDir(dir) }

// WriteFile durably puts data at path in place of what was there: written
// to a temporary file beside it, fsynced, renamed over path, the folder
// fsynced. A crash leaves either the old file or the new one whole. For
// comfyshim's own files that nobody edits (job records).
func WriteFile(path string, data []byte) error {
	// 0600: as the temporary file is created (job records, the journal).
	p, err := prepareFile(path, 0o600, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
	if err != nil {
		return err
	}
	if err := replaceFile(p.tmp, path); err != nil {
		p.discard()
		return err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("%w: fsync %s: %v", ErrNotDurable, filepath.Dir(path), err)
	}
	return nil
}
