package assetapi

import (
	"strconv"
	"unicode/utf8"
)

// A listing's answer is written directly instead of through encoding/json:
// reflection over 50 assets, and the re-validation of each raw metadata
// object, were a third of a listing's CPU. The output is byte for byte what
// json.Encoder writes (HTML-safe escaping, a trailing newline); a test
// holds the two together.

func (l listJSON) appendJSON(b []byte) []byte {
	b = append(b, `{"assets":`...)
	if l.Assets == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range l.Assets {
			if i > 0 {
				b = append(b, ',')
			}
			b = l.Assets[i].appendJSON(b)
		}
		b = append(b, ']')
	}
	b = append(b, `,"total":`...)
	b = strconv.AppendInt(b, int64(l.Total), 10)
	b = append(b, `,"has_more":`...)
	b = strconv.AppendBool(b, l.HasMore)
	if l.NextCursor != "" {
		b = append(b, `,"next_cursor":`...)
		b = appendString(b, l.NextCursor)
	}
	return append(b, "}\n"...)
}

func (x *assetJSON) appendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, x.ID)
	b = append(b, `,"name":`...)
	b = appendString(b, x.Name)
	b = append(b, `,"size":`...)
	b = strconv.AppendInt(b, x.Size, 10)
	b = append(b, `,"mime_type":`...)
	b = appendString(b, x.MimeType)
	b = append(b, `,"tags":`...)
	if x.Tags == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, t := range x.Tags {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, t)
		}
		b = append(b, ']')
	}
	b = append(b, `,"user_metadata":`...)
	b = appendRaw(b, x.UserMetadata)
	b = append(b, `,"metadata":`...)
	b = appendRaw(b, x.Metadata)
	if x.PreviewURL != "" {
		b = append(b, `,"preview_url":`...)
		b = appendString(b, x.PreviewURL)
	}
	b = append(b, `,"created_at":`...)
	b = appendString(b, x.CreatedAt)
	b = append(b, `,"updated_at":`...)
	b = appendString(b, x.UpdatedAt)
	b = append(b, `,"last_access_time":`...)
	b = appendString(b, x.LastAccessTime)
	b = append(b, `,"is_immutable":`...)
	b = strconv.AppendBool(b, x.IsImmutable)
	b = append(b, `,"display_name":`...)
	b = appendString(b, x.DisplayName)
	b = append(b, `,"loader_path":`...)
	b = appendString(b, x.LoaderPath)
	if x.AssetHash != "" {
		b = append(b, `,"asset_hash":`...)
		b = appendString(b, x.AssetHash)
	}
	return append(b, '}')
}

// appendRaw appends a JSON value the API rendered itself with json.Marshal
// (compact, HTML-safe); nil is null.
func appendRaw(b, raw []byte) []byte {
	if raw == nil {
		return append(b, "null"...)
	}
	return append(b, raw...)
}

// appendString appends s as encoding/json does: <, > and & escaped for
// HTML, invalid UTF-8 as U+FFFD, U+2028 and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
