package tagstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// FormatVersion is the sidecar format this package reads and writes.
//
// The sidecar is one JSON object, written pretty-printed with asset ids in
// sorted order and each asset's tags sorted, so that diffs and hand edits
// stay small:
//
//	{
//	  "version": 1,
//	  "assets": {
//	    "<uuid>": {
//	      "path": "output/ComfyUI_00001_.png",
//	      "tags": ["favorite", "output"],
//	      "updated_at": "2026-11-28T12:00:00Z"
//	    }
//	  }
//	}
//
// "path" (root folder and path inside it) is informational; "tags" is the
// asset's complete tag list; "updated_at" is when comfyshim last changed it.
// Two optional keys hold what a client set through the asset API: "name"
// (the asset's name, when renamed) and "user_metadata" (a JSON object).
const FormatVersion = 1

// Entry is one asset's record in the sidecar. Values handed out by the store
// are shared: callers must not modify Tags.
type Entry struct {
	Path      string
	Tags      []string // sorted by code point, no duplicates
	UpdatedAt time.Time
	Name      string          // the asset's name when set through the API, else ""
	Meta      json.RawMessage // user_metadata: a compact JSON object, or nil

	gone bool // in a change set: the entry is deleted
}

// sameContent says two entries say the same about an asset (their time
// aside).
func sameContent(a, b Entry) bool {
	return slices.Equal(a.Tags, b.Tags) && a.Name == b.Name && bytes.Equal(a.Meta, b.Meta)
}

// checkMeta validates user_metadata and returns it compact (nil for null).
func checkMeta(raw json.RawMessage) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if len(raw) > MaxMetaBytes {
		return nil, fmt.Errorf("user_metadata is %d bytes; at most %d", len(raw), MaxMetaBytes)
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, errors.New("user_metadata must be a JSON object")
	}
	if !utf8.Valid(raw) {
		return nil, errors.New("user_metadata is not valid UTF-8")
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, err
	}
	if b.Len() == 2 { // {}
		return nil, nil
	}
	return b.Bytes(), nil
}

// checkName validates an asset name set through the API.
func checkName(n string) error {
	switch {
	case len(n) > MaxNameBytes:
		return fmt.Errorf("name is %d bytes; at most %d", len(n), MaxNameBytes)
	case !utf8.ValidString(n):
		return errors.New("name is not valid UTF-8")
	case strings.ContainsFunc(n, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return errors.New("name contains control characters")
	}
	return nil
}

// Bounds of what the API may store per asset.
const (
	MaxNameBytes = 512
	MaxMetaBytes = 64 << 10
)

// ParseError locates a problem in the sidecar file.
type ParseError struct {
	Line, Column int
	Msg          string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Column, e.Msg)
}

// Parse reads a sidecar file. Every problem, including a bad entry deep
// inside, is an error with its line and column: nothing a person wrote is
// silently dropped. An empty (or all-whitespace) file is an error too: it is
// a save in progress (shell ">", editors that truncate then write) or a
// truncated file, never a store with no tags.
func Parse(data []byte) (map[string]Entry, error) {
	m, _, err := parse(data)
	return m, err
}

// parse is Parse, also telling whether the file is in Encode's layout.
func parse(data []byte) (entries map[string]Entry, canonical bool, err error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, false, &ParseError{Line: 1, Column: 1, Msg: "the file is empty (a save in progress or a truncated file); delete it to start with no tags"}
	}
	p := &parser{data: data, dec: json.NewDecoder(bytes.NewReader(data))}
	if !utf8.Valid(data) {
		// The decoder would turn bad bytes into U+FFFD without a word.
		off := 0
		for off < len(data) {
			r, size := utf8.DecodeRune(data[off:])
			if r == utf8.RuneError && size <= 1 {
				break
			}
			off += size
		}
		return nil, false, p.errAt(int64(off), "invalid UTF-8")
	}
	if m, ok := parseCanonical(data); ok {
		return m, true, nil
	}
	m, err := p.general()
	return m, false, err
}

// general parses any JSON the format allows, locating every problem.
func (p *parser) general() (map[string]Entry, error) {
	data := p.data
	p.dec.DisallowUnknownFields()
	m, err := p.document()
	if err != nil {
		// A streaming decoder's syntax error offsets are relative to its
		// buffer; a whole-text check gives the exact place.
		var raw json.RawMessage
		var se *json.SyntaxError
		if serr := json.Unmarshal(data, &raw); errors.As(serr, &se) {
			return nil, p.errAt(max(se.Offset-1, 0), "%v", se)
		}
		return nil, err
	}
	return m, nil
}

type parser struct {
	data []byte
	dec  *json.Decoder
	tags map[string]string // one copy of each distinct tag: 100k assets share a few hundred
}

// intern returns the shared copy of tag t.
func (p *parser) intern(t string) string {
	if s, ok := p.tags[t]; ok {
		return s
	}
	if p.tags == nil {
		p.tags = map[string]string{}
	}
	p.tags[t] = t
	return t
}

func (p *parser) errAt(off int64, format string, args ...any) error {
	// Point at the next token, not at the separator before it.
	for off < int64(len(p.data)) && strings.ContainsRune(" \t\r\n,:", rune(p.data[off])) {
		off++
	}
	line := 1 + bytes.Count(p.data[:off], []byte{'\n'})
	col := int(off) - bytes.LastIndexByte(p.data[:off], '\n')
	return &ParseError{Line: line, Column: col, Msg: fmt.Sprintf(format, args...)}
}

// wrap turns a decoder error into a located ParseError.
func (p *parser) wrap(err error, at int64) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return p.errAt(at, "%v", se)
	case errors.As(err, &te):
		return p.errAt(at, "%s: want %s, got %s", te.Field, te.Type, te.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return p.errAt(int64(len(p.data)), "unexpected end of file")
	}
	return p.errAt(at, "%v", err)
}

func (p *parser) delim(want json.Delim, what string) error {
	at := p.dec.InputOffset()
	tok, err := p.dec.Token()
	if err != nil {
		return p.wrap(err, at)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return p.errAt(at, "want %s", what)
	}
	return nil
}

func (p *parser) key() (string, int64, error) {
	at := p.dec.InputOffset()
	tok, err := p.dec.Token()
	if err != nil {
		return "", at, p.wrap(err, at)
	}
	return tok.(string), at, nil // inside an object the decoder only yields string keys
}

func (p *parser) document() (map[string]Entry, error) {
	if err := p.delim('{', `an object {"version":1,"assets":{...}}`); err != nil {
		return nil, err
	}
	var assets map[string]Entry
	version := 0
	for p.dec.More() {
		k, at, err := p.key()
		if err != nil {
			return nil, err
		}
		switch k {
		case "version":
			vat := p.dec.InputOffset()
			if err := p.dec.Decode(&version); err != nil {
				return nil, p.wrap(err, vat)
			}
			if version != FormatVersion {
				return nil, p.errAt(vat, "unsupported version %d (this comfyshim reads version %d)", version, FormatVersion)
			}
		case "assets":
			if assets != nil {
				return nil, p.errAt(at, `duplicate key "assets"`)
			}
			if assets, err = p.assets(); err != nil {
				return nil, err
			}
		default:
			return nil, p.errAt(at, "unknown key %q (want \"version\" and \"assets\")", k)
		}
	}
	if err := p.delim('}', "end of object"); err != nil {
		return nil, err
	}
	if at := p.dec.InputOffset(); len(bytes.TrimSpace(p.data[at:])) != 0 {
		return nil, p.errAt(at, "data after the end of the document")
	}
	if version == 0 {
		return nil, p.errAt(0, `missing "version"`)
	}
	if assets == nil {
		assets = map[string]Entry{}
	}
	return assets, nil
}

type rawEntry struct {
	Path         string          `json:"path"`
	Tags         *[]string       `json:"tags"`
	UpdatedAt    string          `json:"updated_at"`
	Name         string          `json:"name"`
	UserMetadata json.RawMessage `json:"user_metadata"`
}

func (p *parser) assets() (map[string]Entry, error) {
	if err := p.delim('{', "an object of assets keyed by id"); err != nil {
		return nil, err
	}
	// Sized from the file (an entry takes about 200 bytes): growing a map of
	// 100k entries step by step was a sixth of the time to start.
	out := make(map[string]Entry, min(len(p.data)/256, 1<<22))
	for p.dec.More() {
		k, at, err := p.key()
		if err != nil {
			return nil, err
		}
		id, err := CanonicalID(k)
		if err != nil {
			return nil, p.errAt(at, "asset key %q is not a UUID", k)
		}
		if _, dup := out[id]; dup {
			return nil, p.errAt(at, "asset %s appears twice", id)
		}
		vat := p.dec.InputOffset()
		var raw rawEntry
		if err := p.dec.Decode(&raw); err != nil {
			return nil, p.wrap(fmt.Errorf("asset %s: %w", id, err), vat)
		}
		if raw.Tags == nil {
			return nil, p.errAt(vat, `asset %s: missing "tags"`, id)
		}
		for i, t := range *raw.Tags {
			if err := CheckTag(t); err != nil {
				return nil, p.errAt(vat, "asset %s: tags[%d]: %v", id, i, err)
			}
			(*raw.Tags)[i] = p.intern(t)
		}
		tags := *raw.Tags // freshly decoded: sorted in place, no copy
		slices.Sort(tags)
		e := Entry{Path: raw.Path, Tags: slices.Compact(tags)}
		if len(e.Tags) > MaxTagsPerAsset {
			return nil, p.errAt(vat, "asset %s: %d tags; at most %d per asset", id, len(e.Tags), MaxTagsPerAsset)
		}
		if !utf8.ValidString(raw.Path) {
			return nil, p.errAt(vat, "asset %s: path is not valid UTF-8", id)
		}
		if raw.UpdatedAt != "" {
			if e.UpdatedAt, err = time.Parse(time.RFC3339Nano, raw.UpdatedAt); err != nil {
				return nil, p.errAt(vat, "asset %s: updated_at %q is not an RFC 3339 time", id, raw.UpdatedAt)
			}
		}
		if err := checkName(raw.Name); err != nil {
			return nil, p.errAt(vat, "asset %s: %v", id, err)
		}
		e.Name = raw.Name
		if e.Meta, err = checkMeta(raw.UserMetadata); err != nil {
			return nil, p.errAt(vat, "asset %s: %v", id, err)
		}
		out[id] = e
	}
	if err := p.delim('}', "end of assets"); err != nil {
		return nil, err
	}
	return out, nil
}

// fileHeader and fileFooter frame the entries of an encoded sidecar.
const (
	fileHeader = "{\n  \"version\": 1,\n  \"assets\": {"
	fileFooter = "\n  }\n}\n"
)

// Encode renders a whole sidecar file, exactly as the store writes it: the
// one encoder of the format (the store, tests and benchmarks all use it).
func Encode(entries map[string]Entry) []byte {
	ids := make([]string, 0, len(entries))
	for id := range entries {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	b := []byte(fileHeader)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendEntry(b, id, entries[id])
	}
	return append(b, fileFooter...)
}

// appendEntry renders one asset as it appears in the file (without the
// separating comma), so the writer can keep rendered entries and assemble a
// file of 100k assets by concatenation.
func appendEntry(b []byte, id string, e Entry) []byte {
	b = append(b, "\n    "...)
	b = appendString(b, id)
	b = append(b, entryOpen...)
	b = appendString(b, e.Path)
	b = append(b, ",\n      \"tags\": ["...)
	for i, t := range e.Tags {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendString(b, t)
	}
	b = append(b, ']')
	if e.Name != "" {
		b = append(b, ",\n      \"name\": "...)
		b = appendString(b, e.Name)
	}
	if e.Meta != nil {
		b = append(b, ",\n      \"user_metadata\": "...)
		b = append(b, e.Meta...) // compact JSON, checked when set
	}
	if !e.UpdatedAt.IsZero() {
		b = append(b, ",\n      \"updated_at\": \""...)
		b = e.UpdatedAt.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	b = append(b, "\n    }"...)
	return b
}

// appendString appends s as a JSON string. Only what JSON requires is
// escaped, so non-ASCII tags stay readable in the file.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == '\u2028' || r == '\u2029' {
				b = append(b, `\u202`...)
				b = append(b, hex[r&0xf])
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, `\n`...)
		case '\t':
			b = append(b, `\t`...)
		case '\r':
			b = append(b, `\r`...)
		default:
			b = append(b, `\u00`...)
			b = append(b, hex[c>>4], hex[c&0xf])
		}
		i++
	}
	return append(b, '"')
}
