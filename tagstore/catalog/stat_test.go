package catalog

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A scan describes each file with the platform's single call where it has
// one; the record must be what the portable path (Lstat plus the birth
// time) makes of the same file, which is what uploads use.
func TestScanRecordMatchesPortableRecord(t *testing.T) {
	dir := t.TempDir()
	old := time.Date(2020, 5, 17, 10, 0, 0, 123456789, time.UTC)
	for _, tc := range []struct {
		name    string
		content string
		mtime   time.Time
	}{
		{"fresh.png", "abc", time.Time{}},
		{"copied.png", "a copy that kept its modification time", old},
		{"empty.bin", "", time.Time{}},
	} {
		p := filepath.Join(dir, tc.name)
		write(t, p, tc.content)
		if !tc.mtime.IsZero() {
			if err := os.Chtimes(p, tc.mtime, tc.mtime); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Symlink(filepath.Join(dir, "fresh.png"), filepath.Join(dir, "link.png")); err != nil {
		t.Fatal(err)
	}
	c, err := New([]Root{{Name: "output", Dir: dir}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	files := c.Snapshot().Files
	if len(files) != 3 {
		t.Fatalf("want the 3 regular files (no symlinked file), got %d", len(files))
	}
	for _, f := range files {
		info, err := os.Lstat(filepath.Join(dir, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		want := NewFile(Root{Name: "output"}, f.Rel, f.dir, info)
		if f.ID != want.ID || f.Size != want.Size || f.ModifiedNS != want.ModifiedNS ||
			f.CreatedNS != want.CreatedNS || f.AccessedNS != want.AccessedNS || f.MIME != want.MIME {
			t.Errorf("%s: scan %+v\nportable %+v", f.Name, *f, *want)
		}
		if f.Name == "copied.png" && !f.Created().Equal(old) {
			t.Errorf("copied.png created %v, want its older modification time %v", f.Created(), old)
		}
	}
}
