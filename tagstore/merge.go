package tagstore

import (
	"bytes"
	"slices"
	"time"
)

// baseEntry is an asset's entry in the JSON file as comfyshim last wrote or
// read it; ok is false when the file had none.
type baseEntry struct {
	e  Entry
	ok bool
}

// mergeSave decides what a hand save of the JSON file means. It is a
// three-way merge per asset between base (the file as comfyshim last wrote
// or read it), saved (the file the person saved) and cur (comfyshim's
// state: base plus the acknowledged changes since, still in the journal):
//
//   - an asset the person did not change (saved equals base) keeps cur, so
//     acknowledged changes survive a save that did not touch them;
//   - an asset only the person changed takes the saved entry as it is;
//   - an asset both changed gets the person's additions and removals
//     (saved against base) applied on top of cur, and the person's name
//     and user_metadata where they changed those;
//   - a saved entry whose updated_at is older than base's was made from an
//     older copy than the file it replaced (the person opened it before
//     comfyshim's last compaction): cur is kept for that asset, and it is
//     reported in stale. So is an entry missing from a save whose entries
//     carry timestamps when base's entry is newer than all of them: the copy
//     predates that entry. (A person who wants an asset's tags gone removes
//     them from its list; an entry deleted from a file written without any
//     timestamps is taken as deleted.)
//
// baseOld holds base's entries for the assets changed since base; every
// other asset's base entry equals cur's. kept lists the assets whose merged
// entry differs from the saved one: the file no longer holds them, so the
// caller journals them.
func mergeSave(cur map[string]Entry, baseOld map[string]baseEntry, saved map[string]Entry) (next map[string]Entry, kept, stale []string) {
	base := func(id string) (Entry, bool) {
		if b, ok := baseOld[id]; ok {
			return b.e, b.ok
		}
		e, ok := cur[id]
		return e, ok
	}
	var newest time.Time // the latest change the saved copy shows
	for _, e := range saved {
		if e.UpdatedAt.After(newest) {
			newest = e.UpdatedAt
		}
	}
	next = make(map[string]Entry, len(saved)+len(baseOld))
	visit := func(id string) {
		s, inS := saved[id]
		b, inB := base(id)
		c, inC := cur[id]
		n, inN := c, inC
		switch {
		case inS && inB && !s.UpdatedAt.IsZero() && s.UpdatedAt.Before(b.UpdatedAt),
			!inS && inB && !newest.IsZero() && b.UpdatedAt.After(newest):
			stale = append(stale, id)
		case inS == inB && (!inS || sameContent(s, b)):
			// untouched by the person: comfyshim's state stands
			if inS && inC && sameContent(s, c) {
				n = s // same content: keep the file's text as the person left it
			}
		case inC == inB && (!inC || sameContent(c, b)):
			n, inN = s, inS // only the person changed it
		default:
			added := minus(s.Tags, b.Tags)
			removed := minus(b.Tags, s.Tags)
			tags := minus(sortedUnique(append(slices.Clone(c.Tags), added...)), removed)
			path := c.Path
			if path == "" {
				path = s.Path
			}
			n, inN = Entry{Path: path, Tags: tags, UpdatedAt: c.UpdatedAt, Name: c.Name, Meta: c.Meta}, true
			// The name and user_metadata: the person's, where they changed them.
			if s.Name != b.Name {
				n.Name = s.Name
			}
			if !bytes.Equal(s.Meta, b.Meta) {
				n.Meta = s.Meta
			}
		}
		if inN {
			next[id] = n
		}
		if inN != inS || (inN && !sameEntry(n, s)) {
			kept = append(kept, id)
		}
	}
	for id := range saved {
		visit(id)
	}
	for id := range cur {
		if _, ok := saved[id]; !ok {
			visit(id)
		}
	}
	slices.Sort(kept)
	slices.Sort(stale)
	return next, kept, stale
}

// minus returns the sorted tags of a that are not in b (both sorted).
func minus(a, b []string) []string {
	out := []string{}
	for _, t := range a {
		if _, found := slices.BinarySearch(b, t); !found {
			out = append(out, t)
		}
	}
	return out
}

func sameEntry(a, b Entry) bool {
	return a.Path == b.Path && sameContent(a, b) && a.UpdatedAt.Equal(b.UpdatedAt)
}
