package catalog

import (
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// meta is what a scan records of a file: its size and times.
type meta struct {
	size    int64
	regular bool
	mtime   time.Time
	atime   time.Time // zero: the platform does not tell
	btime   time.Time // birth time; zero: the platform or filesystem does not tell
}

// metaOf reads meta from info; full names the file, for a platform that
// needs a second call for its birth time.
func metaOf(full string, info fs.FileInfo) meta {
	m := meta{size: info.Size(), regular: info.Mode().IsRegular(), mtime: info.ModTime()}
	if at, ok := accessTime(info); ok {
		m.atime = at
	}
	if bt, ok := birthTime(full, info); ok {
		m.btime = bt
	}
	return m
}

// folder is one open folder being scanned: its entries are described
// through it, with one system call per file where the platform allows.
type folder struct {
	path string
	f    *os.File
}

// readFolder lists the folder at path.
func readFolder(path string) (*folder, []fs.DirEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	entries, err := f.ReadDir(-1)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return &folder{path: path, f: f}, entries, nil
}

func (d *folder) close() { _ = d.f.Close() }

// statPortable describes entry e of d through the standard library.
func (d *folder) statPortable(e fs.DirEntry) (meta, error) {
	info, err := e.Info()
	if err != nil {
		return meta{}, err
	}
	return metaOf(filepath.Join(d.path, e.Name()), info), nil
}
