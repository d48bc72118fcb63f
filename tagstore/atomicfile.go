package tagstore

import (
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// fileSig identifies a version of the sidecar on disk, so the server can
// tell its own writes (and untouched files) from a person's edits.
type fileSig struct {
	exists bool
	ino    uint64
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

func sigOf(fi os.FileInfo, data []byte) fileSig {
	s := fileSig{exists: true, size: fi.Size(), mtime: fi.ModTime(), mode: fi.Mode().Perm()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = st.Ino
	}
	s.crc = crc32.Checksum(data, castagnoli)
	return s
}

// readIfChanged returns the file's content and signature, or nil data when
// its metadata still matches known.
func readIfChanged(path string, known fileSig) (fileSig, []byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileSig{}, nil, err
	}
	meta := fileSig{exists: true, size: fi.Size(), mtime: fi.ModTime(), mode: fi.Mode().Perm()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		meta.ino = st.Ino
	}
	if meta.sameMeta(known) {
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

// writeAtomic replaces path with data so that a crash at any instant leaves
// either the old or the new complete file: write a temporary file in the same
// folder, fsync it, rename it over path, fsync the folder.
func writeAtomic(path string, data []byte, mode os.FileMode) (fileSig, error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fileSig{}, err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fileSig{}, err
	}
	if err := f.Chmod(mode); err != nil {
		return fileSig{}, err
	}
	if err := f.Sync(); err != nil {
		return fileSig{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		return fileSig{}, err
	}
	if err := f.Close(); err != nil {
		return fileSig{}, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fileSig{}, err
	}
	ok = true
	if err := syncDir(dir); err != nil {
		return fileSig{}, fmt.Errorf("fsync %s: %w", dir, err)
	}
	return sigOf(fi, data), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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
