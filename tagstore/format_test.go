package tagstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

const idA = "0b9e5f4c-1d2a-4c3b-8e7f-112233445566"
const idB = "1c8d6e5f-2a3b-4d4c-9f80-223344556677"
const idC = "2d9e7f60-3b4c-4e5d-8a91-334455667788"

func TestParseValid(t *testing.T) {
	doc := `{
  "version": 1,
  "assets": {
    "` + strings.ToUpper(idA) + `": {"path": "output/a.png", "tags": ["output", "Favorite", "output"], "updated_at": "2026-11-28T12:00:00Z"},
    "` + idB + `": {"tags": []}
  }
}`
	got, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Entry{
		idA: {Path: "output/a.png", Tags: []string{"Favorite", "output"}, UpdatedAt: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)},
		idB: {Tags: []string{}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v\nwant %#v", got, want)
	}
	if m, err := Parse([]byte(`{"version":1}`)); err != nil || len(m) != 0 {
		t.Fatalf("no assets: %v, %v", m, err)
	}
	// An empty file is a save in progress, never a store without tags.
	for _, empty := range []string{"", "  \n\t"} {
		var pe *ParseError
		if _, err := Parse([]byte(empty)); !errors.As(err, &pe) || !strings.Contains(pe.Msg, "empty") {
			t.Fatalf("Parse(%q): %v", empty, err)
		}
	}
}

func TestParseErrorsHaveLocation(t *testing.T) {
	cases := []struct {
		name     string
		doc      string
		line     int
		contains string
	}{
		{"syntax", "{\n  \"version\": 1,\n  \"assets\": {\n    \"" + idA + "\": {\"tags\": [\n}", 5, "invalid character"},
		{"truncated", "{\n  \"version\": 1,\n  \"assets\": {", 3, "unexpected end"},
		{"not an object", "[1]", 1, "want an object"},
		{"bad version", "{\"version\": 2}", 1, "unsupported version 2"},
		{"missing version", "{\"assets\": {}}", 1, "missing \"version\""},
		{"unknown top key", "{\"version\":1,\n\"asets\":{}}", 2, "unknown key \"asets\""},
		{"bad id", "{\"version\":1,\"assets\":{\n  \"not-a-uuid\": {\"tags\":[]}}}", 2, "not a UUID"},
		{"duplicate id", "{\"version\":1,\"assets\":{\n\"" + idA + "\":{\"tags\":[]},\n\"" + strings.ToUpper(idA) + "\":{\"tags\":[]}}}", 3, "appears twice"},
		{"missing tags", "{\"version\":1,\"assets\":{\n\"" + idA + "\":\n {\"path\":\"x\"}}}", 3, "missing \"tags\""},
		{"tag not a string", "{\"version\":1,\"assets\":{\n\"" + idA + "\":{\"tags\":[1]}}}", 2, "want string"},
		{"control character", "{\"version\":1,\"assets\":{\n\"" + idA + "\":{\"tags\":[\"a\\u0007\"]}}}", 2, "control character"},
		{"empty tag", "{\"version\":1,\"assets\":{\"" + idA + "\":{\"tags\":[\"ok\",\"\"]}}}", 1, "tags[1]: tag is empty"},
		{"padded tag", "{\"version\":1,\"assets\":{\"" + idA + "\":{\"tags\":[\" x\"]}}}", 1, "surrounding spaces"},
		{"long tag", "{\"version\":1,\"assets\":{\"" + idA + "\":{\"tags\":[\"" + strings.Repeat("é", 129) + "\"]}}}", 1, "129 characters"},
		{"unknown entry field", "{\"version\":1,\"assets\":{\"" + idA + "\":{\"tags\":[],\"colour\":1}}}", 1, "unknown field"},
		{"bad time", "{\"version\":1,\"assets\":{\"" + idA + "\":{\"tags\":[],\"updated_at\":\"yesterday\"}}}", 1, "RFC 3339"},
		{"trailing data", "{\"version\":1}\n{}", 2, "after"},
		{"invalid UTF-8", "{\"version\":1,\"assets\":{\n\"" + idA + "\":{\"tags\":[\"a\xff\"]}}}", 2, "invalid UTF-8"},
		{"too many tags", "{\"version\":1,\"assets\":{\n\"" + idA + "\":{\"tags\":[" + manyTags(MaxTagsPerAsset+1) + "]}}}", 2, "at most 256 per asset"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("want *ParseError, got %v", err)
			}
			if pe.Line != tc.line || pe.Column < 1 || !strings.Contains(pe.Msg, tc.contains) {
				t.Fatalf("got %v (line %d), want line %d mentioning %q", err, pe.Line, tc.line, tc.contains)
			}
		})
	}
}

func TestEncodeRoundTripAndLayout(t *testing.T) {
	entries := map[string]Entry{
		idB: {Path: "models/loras/x.safetensors", Tags: []string{"Portrait", "models", "portrait", "quote\"back\\slash", "Ünïcode ✓"}},
		idA: {Path: "input/<b>&.png", Tags: []string{}, UpdatedAt: time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)},
	}
	data := Encode(entries)
	got, err := Parse(data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if !reflect.DeepEqual(got, entries) {
		t.Fatalf("round trip: %#v", got)
	}
	text := string(data)
	if strings.Index(text, idA) > strings.Index(text, idB) {
		t.Fatal("ids not in sorted order")
	}
	if !strings.Contains(text, `"Ünïcode ✓"`) || !strings.Contains(text, `"input/<b>&.png"`) {
		t.Fatalf("text escaped more than JSON requires:\n%s", text)
	}
	if !strings.Contains(text, "\n      \"tags\": [") {
		t.Fatalf("not pretty-printed:\n%s", text)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"version":1,"assets":{"` + idA + `":{"path":"output/a.png","tags":["a","b"],"updated_at":"2026-11-28T12:00:00Z"}}}`))
	f.Add([]byte(`{"version":1,"assets":{}}`))
	f.Add([]byte(`{"version":1,"assets":{"` + idA + `":{"tags":["\u2028","é"]}}}`))
	f.Add([]byte(`{"version":1,"assets":{"` + idA + `":{"tags":[`))
	f.Add([]byte(`{"version":1,"assets":{"` + idA + `":{"tags":[],"name":"N\u00e9","user_metadata":{"a":[1,{"b":null}],"c":"\u2028"}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := Parse(data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line < 1 || pe.Column < 1 {
				t.Fatalf("error without location: %v", err)
			}
			return
		}
		// Whatever parses must survive being written and read back.
		again, err := Parse(Encode(entries))
		if err != nil {
			t.Fatalf("re-parse of encoded output: %v", err)
		}
		if !reflect.DeepEqual(entries, again) {
			t.Fatalf("round trip changed entries:\n%#v\n%#v", entries, again)
		}
	})
}

func TestNormalizeTags(t *testing.T) {
	cases := []struct {
		in      []string
		want    []string
		wantErr string
	}{
		{in: []string{" b ", "a", "b", "B"}, want: []string{"b", "a", "B"}},
		{in: []string{"", "  ", "x"}, want: []string{"x"}},
		{in: []string{"", " "}, wantErr: "at least one"},
		{in: []string{}, wantErr: "at least one"},
		{in: []string{"a\nb"}, wantErr: "control"},
		{in: []string{strings.Repeat("x", 128)}, want: []string{strings.Repeat("x", 128)}},
		{in: []string{strings.Repeat("x", 129)}, wantErr: "limit"},
		{in: make([]string, 257), wantErr: "at most 256"},
		{in: []string{"\xff"}, wantErr: "UTF-8"},
	}
	for _, tc := range cases {
		got, err := NormalizeTags(tc.in)
		if tc.wantErr != "" {
			if !errors.Is(err, ErrInvalidTags) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("NormalizeTags(%q): err %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("NormalizeTags(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestCanonicalID(t *testing.T) {
	if id, err := CanonicalID(strings.ToUpper(idA)); err != nil || id != idA {
		t.Fatalf("upper case id: %q %v", id, err)
	}
	for _, bad := range []string{"", "x", "{" + idA[:34] + "}", "urn:uuid:" + idA, idA + "0", strings.Replace(idA, "-", "g", 1)} {
		if _, err := CanonicalID(bad); !errors.Is(err, ErrInvalidID) {
			t.Errorf("CanonicalID(%q) accepted", bad)
		}
	}
}

func manyTags(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf("%q", fmt.Sprint("t", i))
	}
	return strings.Join(parts, ",")
}

// parseGeneral is Parse without the fast path for Encode's layout.
func parseGeneral(data []byte) (map[string]Entry, error) {
	if !utf8.Valid(data) || len(bytes.TrimSpace(data)) == 0 {
		return Parse(data) // refused before either path
	}
	return (&parser{data: data, dec: json.NewDecoder(bytes.NewReader(data))}).general()
}

// canonicalSamples are files as Encode writes them, with everything an
// entry can hold.
func canonicalSamples() [][]byte {
	meta := json.RawMessage(`{"a":[1,{"b":null}],"c":"\u2028 x","d":"}\n"}`)
	return [][]byte{
		Encode(map[string]Entry{}),
		Encode(map[string]Entry{idA: {Path: "output/a.png", Tags: []string{"a", "b"}, UpdatedAt: time.Date(2026, 11, 28, 12, 0, 0, 5e6, time.UTC)}}),
		Encode(map[string]Entry{
			idA: {Path: "input/<b>&\"q\".png", Tags: []string{}, Name: "Né \\ \"x\"", Meta: meta},
			idB: {Path: "models/loras/x.safetensors", Tags: []string{"Portrait", "quote\"back\\slash", "Ünïcode ✓"}, Meta: meta, UpdatedAt: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)},
		}),
	}
}

// The fast path reads Encode's layout, and what it reads is exactly what
// the general parser reads.
func TestCanonicalLayoutTakesTheFastPath(t *testing.T) {
	for i, data := range canonicalSamples() {
		fast, ok := parseCanonical(data)
		if !ok {
			t.Fatalf("sample %d: the fast path refused Encode's own layout:\n%s", i, data)
		}
		general, err := parseGeneral(data)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fast, general) {
			t.Fatalf("sample %d: fast %#v\ngeneral %#v", i, fast, general)
		}
	}
	// A hand-edited layout is read by the general parser.
	if _, ok := parseCanonical([]byte(`{"version":1,"assets":{}}`)); ok {
		t.Fatal("the fast path took a layout Encode does not write")
	}
}

// Whatever the fast path accepts, the general parser reads the same way:
// it never accepts what the general one refuses, nor reads it differently.
func FuzzParseCanonical(f *testing.F) {
	for _, s := range canonicalSamples() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !utf8.Valid(data) {
			return // Parse refuses it before either path
		}
		fast, ok := parseCanonical(data)
		if !ok {
			return
		}
		general, err := parseGeneral(data)
		if err != nil {
			t.Fatalf("fast path accepted what the general parser refuses (%v):\n%q", err, data)
		}
		if !reflect.DeepEqual(fast, general) {
			t.Fatalf("fast %#v\ngeneral %#v\n%q", fast, general, data)
		}
	})
}

// parseStamp reads what time.Parse reads, the same way.
func FuzzParseStamp(f *testing.F) {
	for _, s := range []string{"2026-11-28T12:00:00Z", "2026-11-28T12:00:00.5Z", "2026-01-02T03:04:05.000000006Z",
		"2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "2026-11-28T24:00:00Z", "2026-11-28T12:00:60Z",
		"2026-11-28T12:00:00.Z", "2026-11-28T12:00:00.1234567890Z", "2026-11-28T12:00:00+01:00", "0000-01-01T00:00:00Z",
		"2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z", "2026-11-00T00:00:00Z", "2026-11-28t12:00:00z", "+026-11-28T12:00:00Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseStamp([]byte(s))
		want, err := time.Parse(time.RFC3339Nano, s)
		if ok != (err == nil) {
			t.Fatalf("%q: parseStamp ok=%v, time.Parse err=%v", s, ok, err)
		}
		if ok && !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: parseStamp %#v, time.Parse %#v", s, got, want)
		}
	})
}
