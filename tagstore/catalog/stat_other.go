//go:build !linux

package catalog

import "io/fs"

// stat describes entry e of d.
func (d *folder) stat(e fs.DirEntry) (meta, error) { return d.statPortable(e) }
