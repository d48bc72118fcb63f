package catalog

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// TestModelCategories: only model files of a model category are assets, and
// legacy folders report their category's current name, as ComfyUI's
// folder_paths does.
func TestModelCategories(t *testing.T) {
	dir := t.TempDir()
	models := filepath.Join(dir, "models")
	want := map[string][2]string{ // rel -> category, loader path
		"checkpoints/sd15.safetensors":   {"checkpoints", "sd15.safetensors"},
		"checkpoints/old/v1.CKPT":        {"checkpoints", "old/v1.CKPT"},
		"loras/style.safetensors":        {"loras", "style.safetensors"},
		"unet/flux.sft":                  {"diffusion_models", "flux.sft"},
		"clip/t5.safetensors":            {"text_encoders", "t5.safetensors"},
		"t2i_adapter/depth.pth":          {"controlnet", "depth.pth"},
		"classifiers/aesthetic":          {"classifiers", "aesthetic"},
		"ultralytics/bbox/face.pt":       {"ultralytics", "bbox/face.pt"},
		"extra_cat/model.bin":            {"extra_cat", "model.bin"},
		"diffusion_models/wan.gguf.bin":  {"diffusion_models", "wan.gguf.bin"},
		"text_encoders/clip_l.pt2":       {"text_encoders", "clip_l.pt2"},
		"upscale_models/4x.pth":          {"upscale_models", "4x.pth"},
		"embeddings/neg.safetensors":     {"embeddings", "neg.safetensors"},
		"vae_approx/taesd_decoder.pth":   {"vae_approx", "taesd_decoder.pth"},
		"audio_encoders/w.safetensors":   {"audio_encoders", "w.safetensors"},
		"latent_upscale_models/x.pt":     {"latent_upscale_models", "x.pt"},
		"model_patches/p.safetensors":    {"model_patches", "p.safetensors"},
		"hypernetworks/h.pt":             {"hypernetworks", "h.pt"},
		"photomaker/pm.bin":              {"photomaker", "pm.bin"},
		"style_models/s.safetensors":     {"style_models", "s.safetensors"},
		"clip_vision/vit.safetensors":    {"clip_vision", "vit.safetensors"},
		"gligen/g.pth":                   {"gligen", "g.pth"},
		"controlnet/canny.safetensors":   {"controlnet", "canny.safetensors"},
		"vae/ae.safetensors":             {"vae", "ae.safetensors"},
		"loras/sub/dir/deep.safetensors": {"loras", "sub/dir/deep.safetensors"},
	}
	for rel := range want {
		write(t, filepath.Join(models, filepath.FromSlash(rel)), "m")
	}
	for _, rel := range []string{"loras/readme.txt", "loras/preview.png", "configs/v1-inference.yaml", "loose.safetensors",
		"diffusers/sdxl/unet/diffusion_pytorch_model.safetensors", "classifiers/with.ext", "checkpoints/notes.md"} {
		write(t, filepath.Join(models, filepath.FromSlash(rel)), "n")
	}
	c, err := New([]Root{{Name: "models", Dir: models}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := map[string][2]string{}
	for _, f := range c.Snapshot().Files {
		got[f.Rel] = [2]string{f.Category, f.LoaderPath}
	}
	for rel, w := range want {
		if got[rel] != w {
			t.Errorf("%s: category and loader path %q, want %q", rel, got[rel], w)
		}
	}
	for rel := range got {
		if _, ok := want[rel]; !ok {
			t.Errorf("%s is listed but is not a model file", rel)
		}
	}
}

// sortByID orders as comparing the ids as text does, whatever they are.
func TestSortByIDOrdersAsText(t *testing.T) {
	ids := []string{ID("output", "a.png"), ID("output", "b.png"), ID("input", "a.png"),
		"00000000-0000-0000-0000-000000000002", "00000000-0000-0000-0000-000000000001",
		"ffffffff-ffff-ffff-ffff-ffffffffffff", "not-a-uuid", "", "ABCDEF00-0000-0000-0000-000000000000",
		"abcdef00-0000-0000-0000-000000000000", "abcdef00-0000-0000-0000-000000000000", "abcdef00", "abcdef0", "abcdef00\x00"}
	for i := 0; i < 200; i++ {
		ids = append(ids, uuid.NewString())
	}
	files := make([]*File, len(ids))
	for i, id := range ids {
		files[i] = &File{ID: id}
	}
	sortByID(files)
	if !slices.IsSortedFunc(files, func(a, b *File) int { return strings.Compare(a.ID, b.ID) }) {
		for _, f := range files {
			t.Log(f.ID)
		}
		t.Fatal("not in text order")
	}
}
