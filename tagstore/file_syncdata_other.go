//go:build !linux

package tagstore

import "os"

// syncData makes a file's data durable. On macOS Go's Sync is F_FULLFSYNC
// (through the drive's cache); on Windows FlushFileBuffers.
func syncData(f *os.File) error { return f.Sync() }
