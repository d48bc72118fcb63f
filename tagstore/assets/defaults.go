package assets

import (
	"slices"
	"strings"
	"sync"

	"github.com/comfyshim/comfyshim/tagstore/catalog"
)

// DefaultTags are the tags a file has until anyone edits them, as current
// OSS ComfyUI gives them: its root ("input", "output", "models"), for a
// model "model_type:<category>", and for a file in one of the input
// subfolders the web app writes to (pasted, 3d, painter, threed, webcam)
// that folder's name. The list is sorted and shared: read only.
func DefaultTags(f *catalog.File) []string {
	key := f.Root
	var extra string
	switch {
	case f.Root == "models" && f.Category != "":
		extra = "model_type:" + f.Category
	case f.Root == "input":
		if sub, _, ok := strings.Cut(f.Rel, "/"); ok && slices.Contains(specialInputFolders, sub) {
			extra = sub
		}
	}
	if extra != "" {
		key += "\x00" + extra
	}
	if v, ok := defaultLists.Load(key); ok {
		return v.([]string)
	}
	tags := []string{f.Root}
	if extra != "" {
		tags = append(tags, extra)
		slices.Sort(tags)
	}
	v, _ := defaultLists.LoadOrStore(key, tags)
	return v.([]string)
}

// specialInputFolders are the input subfolders ComfyUI's web app saves to,
// each a default tag of the files in it.
var specialInputFolders = []string{"pasted", "3d", "painter", "threed", "webcam"}

// defaultLists holds one list per root and category: a listing of 100k
// assets shares a handful of slices.
var defaultLists sync.Map
