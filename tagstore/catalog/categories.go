package catalog

import (
	"path"
	"slices"
	"strings"
)

// ComfyUI's model categories (folder_paths.py): the folder names that hold
// each, legacy names included, and the extensions its loaders accept.
var (
	ptExtensions = []string{".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
	// legacyFolders are older folder names ComfyUI still reads, reported
	// under the category's current name.
	legacyFolders = map[string]string{"unet": "diffusion_models", "clip": "text_encoders", "t2i_adapter": "controlnet"}
	// notModels are folders under models/ that hold no model: configs are
	// YAML for loaders, diffusers are folders, not files.
	notModels = []string{"configs", "diffusers"}
	// noExtension categories take files without one (classifiers).
	noExtension = []string{"classifiers"}
)

// modelCategory reports the category of a file in the models folder named
// folder, and whether name is a model file of it. A folder ComfyUI does not
// register itself is taken for a custom node's category with the common
// model extensions, as such nodes register them.
func modelCategory(folder, name string) (string, bool) {
	if folder == "" || slices.Contains(notModels, folder) {
		return "", false
	}
	cat := folder
	if c, ok := legacyFolders[folder]; ok {
		cat = c
	}
	ext := strings.ToLower(path.Ext(name))
	if slices.Contains(noExtension, cat) {
		return cat, ext == ""
	}
	return cat, slices.Contains(ptExtensions, ext)
}
