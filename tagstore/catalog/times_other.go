//go:build !linux && !darwin && !windows

package catalog

import (
	"io/fs"
	"time"
)

func accessTime(fs.FileInfo) (time.Time, bool)        { return time.Time{}, false }
func birthTime(string, fs.FileInfo) (time.Time, bool) { return time.Time{}, false }
