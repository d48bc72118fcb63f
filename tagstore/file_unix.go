//go:build unix

package tagstore

import (
	"errors"
	"fmt"
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

// lockFile takes an exclusive lock on f for as long as it stays open, so a
// second process (or store) on the same tags file is refused at start. It
// returns ErrInUse when another holds it, and errNoLocks where the
// filesystem has no locks (some network and FUSE filesystems).
func lockFile(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EWOULDBLOCK):
		return ErrInUse
	}
	return fmt.Errorf("%w: %v", errNoLocks, err)
}
