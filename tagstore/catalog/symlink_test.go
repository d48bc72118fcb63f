package catalog

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
)

func listed(c *Catalog) map[string]*File {
	out := map[string]*File{}
	for _, f := range c.Snapshot().Files {
		out[f.Root+"/"+f.Rel] = f
	}
	return out
}

// Models on another disk are usually linked in: a symlinked root and a
// symlinked category folder are followed, link loops end, and a symlinked
// folder reaches only the files under it.
func TestSymlinkedFoldersAreFollowed(t *testing.T) {
	base := t.TempDir()
	disk := filepath.Join(base, "bigdisk")
	write(t, filepath.Join(disk, "models", "checkpoints", "sd.safetensors"), "ckpt")
	write(t, filepath.Join(disk, "loras", "style.safetensors"), "lora")
	write(t, filepath.Join(disk, "private", "secret.bin"), "secret")
	comfy := filepath.Join(base, "ComfyUI")
	os.MkdirAll(filepath.Join(comfy, "input"), 0o755)
	must(t, os.Symlink(filepath.Join(disk, "models"), filepath.Join(comfy, "models")))                       // symlinked root
	must(t, os.Symlink(filepath.Join(disk, "loras"), filepath.Join(disk, "models", "loras")))                // symlinked category
	must(t, os.Symlink(filepath.Join(disk, "models"), filepath.Join(disk, "models", "checkpoints", "loop"))) // a loop
	must(t, os.Symlink(filepath.Join(base, "nowhere"), filepath.Join(comfy, "input", "dangling")))
	c, err := New([]Root{{Name: "models", Dir: filepath.Join(comfy, "models")}, {Name: "input", Dir: filepath.Join(comfy, "input")}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := listed(c)
	var names []string
	for k := range got {
		names = append(names, k)
	}
	sort.Strings(names)
	want := []string{"models/checkpoints/sd.safetensors", "models/loras/style.safetensors"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("listed %q, want %q", names, want)
	}
	lora := got["models/loras/style.safetensors"]
	if lora.Category != "loras" || lora.LoaderPath != "style.safetensors" {
		t.Fatalf("lora %+v", lora)
	}
	f, err := c.Open(lora)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestExtraModelPaths(t *testing.T) {
	base := t.TempDir()
	write(t, filepath.Join(base, "a1111", "models", "Stable-diffusion", "v15.ckpt"), "x")
	write(t, filepath.Join(base, "a1111", "models", "Lora", "l1.safetensors"), "x")
	write(t, filepath.Join(base, "a1111", "models", "LyCORIS", "sub", "l2.safetensors"), "x")
	write(t, filepath.Join(base, "shared", "unet", "flux.safetensors"), "x")
	yamlFile := filepath.Join(base, "ComfyUI", "extra_model_paths.yaml")
	t.Setenv("SHARED_MODELS", filepath.Join(base, "shared"))
	write(t, yamlFile, `
a111:
    base_path: ../a1111/
    checkpoints: models/Stable-diffusion
    loras: |
        models/Lora
        models/LyCORIS
other:
    is_default: true
    unet: $SHARED_MODELS/unet
`)
	roots, err := ExtraModelPaths(yamlFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(roots) != 4 {
		t.Fatalf("roots %+v", roots)
	}
	c, err := New(roots, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := listed(c)
	cases := map[string]struct{ cat, loader string }{
		"models/checkpoints/v15.ckpt":              {"checkpoints", "v15.ckpt"},
		"models/loras/l1.safetensors":              {"loras", "l1.safetensors"},
		"models/loras/sub/l2.safetensors":          {"loras", "sub/l2.safetensors"},
		"models/diffusion_models/flux.safetensors": {"diffusion_models", "flux.safetensors"},
	}
	if len(got) != len(cases) {
		t.Fatalf("listed %d: %v", len(got), got)
	}
	for p, want := range cases {
		f, ok := got[p]
		if !ok {
			t.Fatalf("%s not listed", p)
		}
		if f.Category != want.cat || f.LoaderPath != want.loader {
			t.Errorf("%s: category %q loader %q", p, f.Category, f.LoaderPath)
		}
		if f.ID == ID("models", f.Rel) {
			t.Errorf("%s: id collides with the default models folder's", p)
		}
	}
	if _, err := ExtraModelPaths(filepath.Join(base, "none.yaml")); err != nil {
		t.Fatal("a missing file is not an error")
	}
	write(t, yamlFile, "a: {checkpoints: [1, 2]}")
	if _, err := ExtraModelPaths(yamlFile); err == nil {
		t.Fatal("bad file accepted")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
