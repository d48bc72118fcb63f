// Package form reads the streamed multipart uploads of both asset APIs
// (Cloud's POST /api/assets and Comfy API v2's POST /api/v2/assets): small
// text fields into memory, the one file part straight into a stage
// function, so the file never sits in memory whatever its size.
package form

import (
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"slices"
)

// MaxField bounds a text field of an upload.
const MaxField = 64 << 10

// Form is what an upload held besides its file.
type Form struct {
	Fields   map[string]string // the last value of each text field
	Tags     []string          // every "tags" value, in order
	FileName string            // the file part's file name
	HasFile  bool
}

// Error is a malformed upload: the client's fault. Field names the part
// at fault, if one.
type Error struct {
	Field string
	Msg   string
}

func (e *Error) Error() string { return e.Msg }

// Read reads every part of mr: the text fields named in allowed (and
// "tags", repeatable, when allowed), and one "file" part handed to stage,
// whose error is returned as it is. Any other part is an Error.
func Read(mr *multipart.Reader, allowed []string, stage func(io.Reader) error) (Form, error) {
	f := Form{Fields: map[string]string{}}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return f, nil
		}
		if err != nil {
			return f, &Error{Msg: "reading the multipart body: " + err.Error()}
		}
		switch name := part.FormName(); {
		case name == "file":
			if f.HasFile {
				return f, &Error{Field: name, Msg: "one file per upload"}
			}
			f.HasFile, f.FileName = true, part.FileName()
			if err := stage(part); err != nil {
				return f, err
			}
		case slices.Contains(allowed, name):
			v, err := io.ReadAll(io.LimitReader(part, MaxField+1))
			if err != nil || len(v) > MaxField {
				return f, &Error{Field: name, Msg: fmt.Sprintf("field %q is unreadable or larger than %d bytes", name, MaxField)}
			}
			if name == "tags" {
				f.Tags = append(f.Tags, string(v))
			} else {
				f.Fields[name] = string(v)
			}
		default:
			return f, &Error{Field: name, Msg: fmt.Sprintf("unknown field %q", name)}
		}
	}
}

// AsError reports whether err is a malformed upload.
func AsError(err error) (*Error, bool) {
	var fe *Error
	ok := errors.As(err, &fe)
	return fe, ok
}
