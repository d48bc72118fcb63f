package tagstore

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestMergeSave(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	t1, t2 := t0.Add(time.Minute), t0.Add(2*time.Minute)
	e := func(at time.Time, tags ...string) Entry {
		return Entry{Path: "output/x.png", Tags: sortedUnique(tags), UpdatedAt: at}
	}
	named := func(en Entry, name, meta string) Entry {
		en.Name = name
		if meta != "" {
			en.Meta = []byte(meta)
		}
		return en
	}
	const x = "00000000-0000-4000-8000-000000000001"
	cases := []struct {
		name    string
		base    *Entry // nil: not in the file
		cur     *Entry // nil: comfyshim has none
		saved   *Entry // nil: the person removed or never had it
		want    *Entry
		kept    bool
		stale   bool
		changed bool   // cur differs from base (an acknowledged change since)
		other   *Entry // another asset's entry in the saved copy (shows how recent the copy is)
	}{
		{name: "nobody changed it", base: p(e(t1, "a")), cur: p(e(t1, "a")), saved: p(e(t1, "a")), want: p(e(t1, "a"))},
		{name: "person added and removed", base: p(e(t1, "a", "b")), cur: p(e(t1, "a", "b")), saved: p(e(t1, "a", "c")), want: p(e(t1, "a", "c"))},
		{name: "acknowledged change survives a save that did not touch it", base: p(e(t1, "a")), cur: p(e(t2, "a", "new")), saved: p(e(t1, "a")), want: p(e(t2, "a", "new")), kept: true, changed: true},
		{name: "new acknowledged asset survives", cur: p(e(t2, "new")), want: p(e(t2, "new")), kept: true, changed: true},
		{name: "both changed: person's edits on top", base: p(e(t1, "a", "b")), cur: p(e(t2, "a", "b", "new")), saved: p(e(t1, "a", "hand")), want: p(e(t2, "a", "hand", "new")), kept: true, changed: true},
		{name: "person removes a tag comfyshim added, after seeing it in the file", base: p(e(t2, "a", "new")), cur: p(e(t2, "a", "new")), saved: p(e(t2, "a")), want: p(e(t2, "a"))},
		{name: "stale copy of an asset: comfyshim's version kept", base: p(e(t2, "a", "new")), cur: p(e(t2, "a", "new")), saved: p(e(t1, "a", "hand")), want: p(e(t2, "a", "new")), kept: true, stale: true},
		{name: "person deletes an untouched entry", base: p(e(t1, "a")), cur: p(e(t1, "a")), want: nil},
		{name: "entry missing from a copy older than it", base: p(e(t2, "a")), cur: p(e(t2, "a")), want: p(e(t2, "a")), kept: true, stale: true, other: p(e(t1, "z"))},
		{name: "entry deleted from a copy that shows it", base: p(e(t1, "a")), cur: p(e(t1, "a")), want: nil, other: p(e(t2, "z"))},
		{name: "person deletes an entry comfyshim changed since", base: p(e(t1, "a")), cur: p(e(t2, "a", "new")), want: p(e(t2, "new")), kept: true, changed: true},
		{name: "person adds an entry", saved: p(Entry{Tags: []string{"hand"}}), want: p(Entry{Tags: []string{"hand"}})},
		{name: "comfyshim renamed, person tagged: both kept", base: p(e(t1, "a")), cur: p(named(e(t2, "a"), "New", `{"k":1}`)), saved: p(e(t1, "a", "hand")), want: p(named(e(t2, "a", "hand"), "New", `{"k":1}`)), kept: true, changed: true},
		{name: "person renamed, comfyshim tagged: both kept", base: p(e(t1, "a")), cur: p(e(t2, "a", "new")), saved: p(named(e(t1, "a"), "Hand", `{"by":"hand"}`)), want: p(named(e(t2, "a", "new"), "Hand", `{"by":"hand"}`)), kept: true, changed: true},
		{name: "person clears metadata comfyshim set, after seeing it", base: p(named(e(t2, "a"), "", `{"k":1}`)), cur: p(named(e(t2, "a"), "", `{"k":1}`)), saved: p(e(t2, "a")), want: p(e(t2, "a"))},
		{name: "only the person renamed", base: p(e(t1, "a")), cur: p(e(t1, "a")), saved: p(named(e(t1, "a"), "Hand", "")), want: p(named(e(t1, "a"), "Hand", ""))},
		{name: "entry without updated_at edited", base: p(e(t1, "a")), cur: p(e(t2, "a", "b")), saved: p(Entry{Path: "output/x.png", Tags: []string{"a", "hand"}}), want: p(e(t2, "a", "b", "hand")), kept: true, changed: true},
	}
	for _, tc := range cases {
		cur, saved := map[string]Entry{}, map[string]Entry{}
		baseOld := map[string]baseEntry{}
		if tc.cur != nil {
			cur[x] = *tc.cur
		}
		if tc.saved != nil {
			saved[x] = *tc.saved
		}
		const y = "00000000-0000-4000-8000-000000000002"
		if tc.other != nil {
			saved[y], cur[y] = *tc.other, *tc.other
		}
		if tc.changed {
			if tc.base != nil {
				baseOld[x] = baseEntry{*tc.base, true}
			} else {
				baseOld[x] = baseEntry{}
			}
		}
		next, kept, stale := mergeSave(cur, baseOld, saved)
		got, ok := next[x]
		if (tc.want == nil) == ok || (ok && !sameEntry(got, *tc.want)) {
			t.Errorf("%s: got %+v (present %v), want %+v", tc.name, got, ok, tc.want)
		}
		if slices.Contains(kept, x) != tc.kept || slices.Contains(stale, x) != tc.stale {
			t.Errorf("%s: kept %v stale %v", tc.name, kept, stale)
		}
	}
	if !reflect.DeepEqual(minus([]string{"a", "b", "c"}, []string{"b"}), []string{"a", "c"}) {
		t.Fatal("minus")
	}
}

func p(e Entry) *Entry { return &e }
