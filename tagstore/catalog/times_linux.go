package catalog

import (
	"io/fs"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func accessTime(info fs.FileInfo) (time.Time, bool) {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(st.Atim.Unix()), true
}

// birthTime uses statx, where the filesystem records it.
func birthTime(full string, _ fs.FileInfo) (time.Time, bool) {
	var stx unix.Statx_t
	if unix.Statx(unix.AT_FDCWD, full, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BTIME, &stx) != nil || stx.Mask&unix.STATX_BTIME == 0 {
		return time.Time{}, false
	}
	return time.Unix(stx.Btime.Sec, int64(stx.Btime.Nsec)), true
}
