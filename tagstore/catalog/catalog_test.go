package catalog

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
)

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestIDs(t *testing.T) {
	first, again := ID("input", "a.png"), ID("input", "a.png")
	if first != again || first == ID("output", "a.png") {
		t.Fatal("ids must depend on root and path only")
	}
	if _, err := uuid.Parse(first); err != nil {
		t.Fatal(err)
	}
}

func TestScanSkipsWhatIsNotAnAsset(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "output", "ok.png"), "x")
	write(t, filepath.Join(dir, "output", ".hidden.png"), "x")
	write(t, filepath.Join(dir, "output", ".cache", "in-hidden-dir.png"), "x")
	write(t, filepath.Join(dir, "models", "checkpoints", "put_checkpoints_here"), "")
	write(t, filepath.Join(dir, "secret.txt"), "secret")
	if err := os.Symlink(filepath.Join(dir, "secret.txt"), filepath.Join(dir, "output", "link.txt")); err != nil {
		t.Fatal(err)
	}
	c, err := New([]Root{{Name: "output", Dir: filepath.Join(dir, "output")}, {Name: "models", Dir: filepath.Join(dir, "models")}, {Name: "input", Dir: filepath.Join(dir, "missing")}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	snap := c.Snapshot()
	if len(snap.Files) != 1 || snap.Files[0].Rel != "ok.png" {
		for _, f := range snap.Files {
			t.Log(f.Root, f.Rel)
		}
		t.Fatalf("want only output/ok.png, got %d files", len(snap.Files))
	}
}

func TestNewFilesAppearWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "output")
	os.MkdirAll(out, 0o755)
	c, err := New([]Root{{Name: "output", Dir: out}}, Options{Debounce: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	gen := c.Snapshot().Gen
	write(t, filepath.Join(out, "new", "deep", "ComfyUI_00001_.png"), "img")
	id := ID("output", "new/deep/ComfyUI_00001_.png")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if f, ok := c.Snapshot().Get(id); ok {
			if f.Size != 3 || f.MIME != "image/png" || c.Snapshot().Gen == gen {
				t.Fatalf("%+v", f)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new file in a new subfolder never listed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	os.Remove(filepath.Join(out, "new", "deep", "ComfyUI_00001_.png"))
	for {
		if _, ok := c.Snapshot().Get(id); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("removed file still listed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
