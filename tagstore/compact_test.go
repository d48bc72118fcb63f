package tagstore

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMergeInto(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	base := map[string]Entry{
		idA: {Path: "output/a.png", Tags: []string{"a"}, UpdatedAt: t0},
		idC: {Path: "output/c.png", Tags: []string{"c"}, Meta: []byte(`{"k":"v"}`)},
	}
	render := func(id string, e Entry) []byte { return appendEntry(nil, id, e) }
	b := Entry{Path: "input/b.png", Tags: []string{"b", "new"}}
	a2 := Entry{Path: "output/a.png", Tags: []string{"a", "z"}, Name: "renamed"}
	cases := []struct {
		name string
		ids  []string
		raws [][]byte
		want map[string]Entry
	}{
		{"nothing", nil, nil, base},
		{"add in the middle", []string{idB}, [][]byte{render(idB, b)}, map[string]Entry{idA: base[idA], idB: b, idC: base[idC]}},
		{"replace first, remove last", []string{idA, idC}, [][]byte{render(idA, a2), nil}, map[string]Entry{idA: a2}},
		{"remove all", []string{idA, idC}, [][]byte{nil, nil}, map[string]Entry{}},
		{"remove absent", []string{idB}, [][]byte{nil}, base},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := mergeInto(&out, bytes.NewReader(Encode(base)), tc.ids, tc.raws); err != nil {
				t.Fatal(err)
			}
			if want := Encode(tc.want); out.String() != string(want) {
				t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
			}
		})
	}
	canonical := string(Encode(base))
	for name, old := range map[string]string{
		"hand layout":    `{"version":1,"assets":{}}`,
		"unsorted":       strings.NewReplacer(idA, idC, idC, idA).Replace(canonical),
		"trailing bytes": canonical + "\n",
		"no footer":      canonical[:len(canonical)-2],
		"comma at end":   strings.Replace(canonical, "\n    }\n  }", "\n    },\n  }", 1),
		"comma missing":  strings.Replace(canonical, "\n    },", "\n    }", 1),
		"crlf":           strings.ReplaceAll(canonical, "\n", "\r\n"),
	} {
		if err := mergeInto(&bytes.Buffer{}, strings.NewReader(old), []string{idB}, [][]byte{render(idB, b)}); !errors.Is(err, errNotCanonical) {
			t.Errorf("%s: %v, want errNotCanonical", name, err)
		}
	}
}

// A compaction copies the entries that did not change from the file on
// disk (here, one whose tags a person wrote out of order, in the store's
// layout) and renders only the changed ones; a file in another layout is
// rendered whole.
func TestCompactionMergesIntoTheFileOnDisk(t *testing.T) {
	unsorted := strings.Replace(string(Encode(map[string]Entry{idA: {Path: "output/a.png", Tags: []string{"b", "c"}}})), `"b", "c"`, `"c", "b"`, 1)
	for _, tc := range []struct {
		name, file string
		merged     bool
	}{
		{"store layout", unsorted, true},
		{"hand layout", `{"version": 1, "assets": {"` + idA + `": {"path": "output/a.png", "tags": ["c", "b"]}}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := dir + "/tags.json"
			if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Add(idB, Entry{Path: "output/b.png"}, []string{"x"}); err != nil {
				t.Fatal(err)
			}
			if err := s.Compact(); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got := readJSON(t, path)
			if len(got) != 2 || strings.Join(got[idA].Tags, ",") != "b,c" || strings.Join(got[idB].Tags, ",") != "x" {
				t.Fatalf("state after compaction: %v", got)
			}
			if copied := strings.Contains(string(data), `"c", "b"`); copied != tc.merged {
				t.Fatalf("unchanged entry copied as written: %v, want %v\n%s", copied, tc.merged, data)
			}
		})
	}
}
