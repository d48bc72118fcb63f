package tagstore

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/windows"
)

// fileIno: Windows has no inode in os.FileInfo; size, time and content
// identify a version instead.
func fileIno(os.FileInfo) uint64 { return 0 }

// replaceFile replaces to with from; MOVEFILE_WRITE_THROUGH returns only
// once the rename is on disk, which stands in for a folder fsync (Windows
// cannot fsync a folder). It fails while another program holds the file
// open without FILE_SHARE_DELETE; the write is then refused, not lost.
func replaceFile(from, to string) error {
	f, err := windows.UTF16PtrFromString(from)
	if err != nil {
		return err
	}
	t, err := windows.UTF16PtrFromString(to)
	if err != nil {
		return err
	}
	if err := windows.MoveFileEx(f, t, windows.MOVEFILE_REPLACE_EXISTING|windows.MOVEFILE_WRITE_THROUGH); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}

// syncDirPlatform: replaceFile wrote through already.
func syncDirPlatform(string) error { return nil }

// lockFile takes an exclusive lock on f for as long as it stays open, so a
// second process (or store) on the same tags file is refused at start.
func lockFile(f *os.File) error {
	var ol windows.Overlapped
	err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, windows.ERROR_LOCK_VIOLATION):
		return ErrInUse
	}
	return fmt.Errorf("%w: %v", errNoLocks, err)
}
