package tagstore

import (
	"bytes"
	"encoding/json"
	"slices"
	"time"
)

// parseCanonical reads a tags file laid out exactly as Encode writes it,
// several times faster than the general parser (a tenth of the start at
// 100k assets went to encoding/json). It accepts nothing the general parser
// would read differently: at the first byte that is not in Encode's layout,
// or any value the general parser would reject, it gives up (ok false) and
// the general parser reads the file, with its located errors.
func parseCanonical(data []byte) (entries map[string]Entry, ok bool) {
	c := canonReader{data: data}
	if !c.lit(fileHeader) {
		return nil, false
	}
	// Sized exactly: in this layout every entry, and nothing else, has a
	// key followed by a newline (values hold none). A map that grows past
	// its hint doubles: at 1M assets that was 110 MB of empty slots.
	out := make(map[string]Entry, bytes.Count(data, []byte(entryOpen)))
	tags := map[string]string{}
	first := true
	for !c.at(fileFooter) {
		if !first && !c.lit(",") {
			return nil, false
		}
		first = false
		id, e, ok := c.entry(tags)
		if !ok {
			return nil, false
		}
		if _, dup := out[id]; dup {
			return nil, false
		}
		out[id] = e
	}
	if !c.lit(fileFooter) || c.off != len(data) {
		return nil, false
	}
	return out, true
}

// entryOpen follows an entry's key.
const entryOpen = ": {\n      \"path\": "

type canonReader struct {
	data []byte
	off  int
	tags []string // scratch for one entry's tags
}

func (c *canonReader) at(s string) bool { return bytes.HasPrefix(c.data[c.off:], []byte(s)) }

func (c *canonReader) lit(s string) bool {
	if !c.at(s) {
		return false
	}
	c.off += len(s)
	return true
}

// str reads a JSON string.
func (c *canonReader) str() (string, bool) {
	b, ok := c.strBytes()
	return string(b), ok
}

// strBytes reads a JSON string's content: for one without escapes, the
// bytes in the file (not to be kept: nothing is allocated); one with
// escapes goes through encoding/json.
func (c *canonReader) strBytes() ([]byte, bool) {
	if c.off >= len(c.data) || c.data[c.off] != '"' {
		return nil, false
	}
	start := c.off
	escaped := false
	for i := start + 1; i < len(c.data); i++ {
		switch b := c.data[i]; {
		case b == '"':
			c.off = i + 1
			if !escaped {
				return c.data[start+1 : i], true
			}
			var s string
			if json.Unmarshal(c.data[start:i+1], &s) != nil {
				return nil, false
			}
			return []byte(s), true
		case b == '\\':
			escaped = true
			i++ // the escaped byte cannot end the string
		case b < 0x20:
			return nil, false
		}
	}
	return nil, false
}

// canonicalID is id as CanonicalID gives it, allocating once: an id in
// the canonical form already (lowercase, dashes in place) is taken as it is.
func canonicalID(b []byte) (string, error) {
	if len(b) == 36 && b[8] == '-' && b[13] == '-' && b[18] == '-' && b[23] == '-' {
		for i, ch := range b {
			if i == 8 || i == 13 || i == 18 || i == 23 {
				continue
			}
			if !('0' <= ch && ch <= '9' || 'a' <= ch && ch <= 'f') {
				return CanonicalID(string(b))
			}
		}
		return string(b), nil
	}
	return CanonicalID(string(b))
}

// entry reads one asset as appendEntry renders it.
func (c *canonReader) entry(interned map[string]string) (string, Entry, bool) {
	var e Entry
	if !c.lit("\n    ") {
		return "", e, false
	}
	key, ok := c.strBytes()
	if !ok {
		return "", e, false
	}
	id, err := canonicalID(key)
	if err != nil || !c.lit(entryOpen) {
		return "", e, false
	}
	if e.Path, ok = c.str(); !ok || !c.lit(",\n      \"tags\": [") {
		return "", e, false
	}
	c.tags = c.tags[:0]
	for !c.lit("]") {
		if len(c.tags) > 0 && !c.lit(", ") {
			return "", e, false
		}
		b, ok := c.strBytes()
		if !ok {
			return "", e, false
		}
		t, seen := interned[string(b)] // a tag seen before: checked, and not copied again
		if !seen {
			if t = string(b); CheckTag(t) != nil {
				return "", e, false
			}
			interned[t] = t
		}
		c.tags = append(c.tags, t)
	}
	e.Tags = make([]string, len(c.tags)) // kept for good: allocated at its size
	copy(e.Tags, c.tags)
	slices.Sort(e.Tags)
	if e.Tags = slices.Compact(e.Tags); len(e.Tags) > MaxTagsPerAsset {
		return "", e, false
	}
	if c.lit(",\n      \"name\": ") {
		if e.Name, ok = c.str(); !ok || checkName(e.Name) != nil {
			return "", e, false
		}
	}
	if c.lit(",\n      \"user_metadata\": ") {
		// Compact JSON holds no raw newline: the value runs to the end of
		// its line, less the comma before the next key.
		end := bytes.IndexByte(c.data[c.off:], '\n')
		if end < 0 {
			return "", e, false
		}
		raw := c.data[c.off : c.off+end]
		if bytes.HasPrefix(c.data[c.off+end:], []byte("\n      \"updated_at\"")) {
			if raw, ok = bytes.CutSuffix(raw, []byte(",")); !ok {
				return "", e, false
			}
		}
		c.off += len(raw)
		if e.Meta, err = checkMeta(bytes.Clone(raw)); err != nil {
			return "", e, false
		}
	}
	if c.lit(",\n      \"updated_at\": ") {
		ts, ok := c.strBytes()
		if !ok {
			return "", e, false
		}
		if e.UpdatedAt, ok = parseStamp(ts); !ok {
			return "", e, false
		}
	}
	if !c.lit("\n    }") {
		return "", e, false
	}
	return id, e, true
}

// parseStamp reads an RFC 3339 time as time.Parse(time.RFC3339Nano) does.
// The form the store writes (UTC, "Z", up to nine fraction digits) is read
// here, without an allocation; any other goes to time.Parse.
func parseStamp(b []byte) (time.Time, bool) {
	num := func(at, n int) (int, bool) {
		v := 0
		for _, ch := range b[at : at+n] {
			if ch < '0' || ch > '9' {
				return 0, false
			}
			v = v*10 + int(ch-'0')
		}
		return v, true
	}
	slow := func() (time.Time, bool) {
		t, err := time.Parse(time.RFC3339Nano, string(b))
		return t, err == nil
	}
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' || b[len(b)-1] != 'Z' {
		return slow()
	}
	year, ok1 := num(0, 4)
	month, ok2 := num(5, 2)
	day, ok3 := num(8, 2)
	hour, ok4 := num(11, 2)
	minute, ok5 := num(14, 2)
	sec, ok6 := num(17, 2)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || month < 1 || month > 12 || day < 1 ||
		day > daysIn(time.Month(month), year) || hour > 23 || minute > 59 || sec > 59 {
		return slow()
	}
	nsec := 0
	switch frac := b[19 : len(b)-1]; {
	case len(frac) == 0:
	case frac[0] == '.' && len(frac) >= 2 && len(frac) <= 10:
		v, ok := num(20, len(frac)-1)
		if !ok {
			return slow()
		}
		for range 10 - len(frac) {
			v *= 10
		}
		nsec = v
	default:
		return slow()
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC), true
}

func daysIn(m time.Month, year int) int {
	return time.Date(year, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}
