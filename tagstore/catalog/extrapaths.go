package catalog

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// legacyCategories maps old model folder names to the category ComfyUI
// reports them under.
var legacyCategories = map[string]string{
	"unet": "diffusion_models",
	"clip": "text_encoders",
}

// ExtraModelPaths reads ComfyUI's extra_model_paths.yaml and returns a
// models root for every folder it adds to a category. The file has groups
// of "category: folder(s)" (several folders one per line) with an optional
// base_path (~ and $VARS expanded, relative to the file's folder) that
// relative folders are joined to; is_default only changes ComfyUI's search
// order. A missing file is no error.
func ExtraModelPaths(file string) ([]Root, error) {
	data, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var groups map[string]map[string]any
	if err := yaml.Unmarshal(data, &groups); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	yamlDir := filepath.Dir(file)
	var roots []Root
	for _, name := range sortedKeys(groups) {
		g := groups[name]
		base := ""
		if b, ok := g["base_path"].(string); ok && strings.TrimSpace(b) != "" {
			base = expandPath(strings.TrimSpace(b), yamlDir)
		}
		for _, cat := range sortedKeys(g) {
			if cat == "base_path" || cat == "base_paths" || cat == "is_default" {
				continue
			}
			v, ok := g[cat].(string)
			if !ok {
				return nil, fmt.Errorf("%s: %s.%s: want a folder or a block of folders, one per line", file, name, cat)
			}
			if c, ok := legacyCategories[cat]; ok {
				cat = c
			}
			for _, line := range strings.Split(v, "\n") {
				line = strings.TrimSpace(line)
				if line == "" {
					continue
				}
				dir := os.ExpandEnv(line)
				switch {
				case base != "":
					dir = filepath.Join(base, dir)
				case !filepath.IsAbs(dir):
					dir = filepath.Join(yamlDir, dir)
				}
				roots = append(roots, Root{Name: "models", Dir: filepath.Clean(dir), Category: cat})
			}
		}
	}
	return roots, nil
}

func expandPath(p, relTo string) string {
	p = os.ExpandEnv(p)
	if p == "~" || strings.HasPrefix(p, "~/") || strings.HasPrefix(p, `~\`) {
		if home, err := os.UserHomeDir(); err == nil {
			p = filepath.Join(home, p[1:])
		}
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(relTo, p)
	}
	return p
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
