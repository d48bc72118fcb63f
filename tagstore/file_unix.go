//go:build unix

package tagstore

import (
	"os"
	"syscall"
)

func fileIno(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}

// replaceFile renames from over to; POSIX rename is atomic.
func replaceFile(from, to string) error { return os.Rename(from, to) }

// syncDirPlatform makes a rename in dir durable. On macOS Go's Sync issues
// F_FULLFSYNC, which also flushes the drive's cache.
func syncDirPlatform(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
