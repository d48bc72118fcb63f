package form

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"strings"
	"testing"
)

func body(t testing.TB, parts [][2]string) (*multipart.Reader, []byte) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, p := range parts {
		if p[0] == "file" {
			fw, _ := mw.CreateFormFile("file", "a.png")
			_, _ = fw.Write([]byte(p[1]))
			continue
		}
		_ = mw.WriteField(p[0], p[1])
	}
	_ = mw.Close()
	return multipart.NewReader(bytes.NewReader(b.Bytes()), mw.Boundary()), b.Bytes()
}

func TestRead(t *testing.T) {
	cases := []struct {
		name  string
		parts [][2]string
		field string // the Error's field, "" for none
		ok    bool
	}{
		{"fields and file", [][2]string{{"name", "x"}, {"tags", "a"}, {"tags", "b"}, {"file", "bytes"}}, "", true},
		{"no file", [][2]string{{"name", "x"}}, "", true},
		{"two files", [][2]string{{"file", "1"}, {"file", "2"}}, "file", false},
		{"unknown field", [][2]string{{"color", "red"}}, "color", false},
		{"field too large", [][2]string{{"name", strings.Repeat("x", MaxField+1)}}, "name", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mr, _ := body(t, tc.parts)
			var got []byte
			f, err := Read(mr, []string{"name", "tags"}, func(r io.Reader) (err error) {
				got, err = io.ReadAll(r)
				return err
			})
			fe, isForm := AsError(err)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.ok && (!isForm || fe.Field != tc.field):
				t.Fatalf("got %v, want a form error on %q", err, tc.field)
			case tc.ok && f.HasFile && (string(got) != "bytes" || f.FileName != "a.png"):
				t.Fatalf("file %q %q", got, f.FileName)
			case tc.ok && tc.name == "fields and file" && (f.Fields["name"] != "x" || strings.Join(f.Tags, ",") != "a,b"):
				t.Fatalf("form %+v", f)
			}
		})
	}
	// The stage function's error comes back as it is.
	mr, _ := body(t, [][2]string{{"file", "x"}})
	stop := errors.New("disk full")
	if _, err := Read(mr, nil, func(io.Reader) error { return stop }); err != stop {
		t.Fatalf("stage error: %v", err)
	}
}

// FuzzRead: no body makes Read panic, keep a field over MaxField, or hand
// the stage more than one file.
func FuzzRead(f *testing.F) {
	_, b := body(f, [][2]string{{"name", "x"}, {"file", "y"}})
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		mr := multipart.NewReader(bytes.NewReader(data), "")
		if i := bytes.Index(data, []byte("--")); i >= 0 {
			if end := bytes.IndexAny(data[i+2:], "\r\n"); end > 0 {
				mr = multipart.NewReader(bytes.NewReader(data), string(data[i+2:i+2+end]))
			}
		}
		files := 0
		fm, _ := Read(mr, []string{"name", "tags"}, func(r io.Reader) error {
			files++
			_, err := io.Copy(io.Discard, r)
			return err
		})
		if files > 1 {
			t.Fatalf("%d files staged", files)
		}
		for k, v := range fm.Fields {
			if len(v) > MaxField || (k != "name") {
				t.Fatalf("field %q of %d bytes kept", k, len(v))
			}
		}
	})
}
