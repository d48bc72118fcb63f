package tagstore

import (
	"errors"

	"golang.org/x/sys/unix"
)

// exchange swaps two paths atomically (renamex_np RENAME_SWAP). swapped is
// false where the filesystem cannot (then nothing happened).
func exchange(a, b string) (swapped bool, err error) {
	err = unix.RenamexNp(a, b, unix.RENAME_SWAP)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTSUP) {
		return false, nil
	}
	return err == nil, err
}
