package assets

import (
	"sync"

	"github.com/comfyshim/comfyshim/tagstore/catalog"
)

// DefaultTags are the tags a file has until anyone edits them, as current
// OSS ComfyUI gives them: its root ("input", "output", "models") and, for a
// model, "model_type:<category>". The list is sorted and shared: read only.
func DefaultTags(f *catalog.File) []string {
	key := f.Root
	if f.Root == "models" && f.Category != "" {
		key = "model_type:" + f.Category
	}
	if v, ok := defaultLists.Load(key); ok {
		return v.([]string)
	}
	tags := []string{f.Root}
	if key != f.Root {
		tags = []string{key, "models"} // "model_type:" sorts before "models"
	}
	v, _ := defaultLists.LoadOrStore(key, tags)
	return v.([]string)
}

// defaultLists holds one list per root and category: a listing of 100k
// assets shares a handful of slices.
var defaultLists sync.Map
