package proxy

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/patrickmn/go-cache"
)

// ossResolver maps asset ids from ComfyUI's own asset database (which it
// puts in /history and websocket outputs when started with
// --enable-assets) to the files they name, by asking ComfyUI once per id.
type ossResolver struct {
	base   string
	client *http.Client
	known  *cache.Cache // id -> [2]string{root, rel}
}

// lookupAgent names comfyshim's own asset lookups to ComfyUI.
const lookupAgent = "comfyshim (asset id lookup)"

func newOSSResolver(base string, client *http.Client) *ossResolver {
	return &ossResolver{base: strings.TrimSuffix(base, "/"), client: client, known: cache.New(time.Hour, 10*time.Minute)}
}

func (o *ossResolver) resolve(ctx context.Context, id string) (string, string, bool) {
	if v, ok := o.known.Get(id); ok {
		f := v.([2]string)
		return f[0], f[1], true
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.base+"/api/assets/"+id, nil)
	if err != nil {
		return "", "", false
	}
	req.Header.Set("User-Agent", lookupAgent)
	resp, err := o.client.Do(req)
	if err != nil {
		return "", "", false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", false
	}
	var a struct {
		Name       string   `json:"name"`
		Tags       []string `json:"tags"`
		LoaderPath string   `json:"loader_path"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&a) != nil {
		return "", "", false
	}
	root, rel, ok := ossFile(a.Tags, a.LoaderPath, a.Name)
	if ok {
		o.known.SetDefault(id, [2]string{root, rel})
	}
	return root, rel, ok
}

// ossFile reads where an OSS asset's file is from its tags (the root, and
// model_type:<category> for models) and its loader path.
func ossFile(tags []string, loaderPath, name string) (root, rel string, ok bool) {
	var category string
	for _, t := range tags {
		switch {
		case t == "models" || t == "input" || t == "output" || t == "temp":
			if root == "" {
				root = t
			}
		case strings.HasPrefix(t, "model_type:"):
			category = strings.TrimPrefix(t, "model_type:")
		}
	}
	rel = strings.ReplaceAll(loaderPath, `\`, "/")
	if rel == "" {
		rel = name
	}
	if root == "" || rel == "" || path.Clean("/" + rel)[1:] != rel {
		return "", "", false
	}
	if root == "models" {
		if category == "" || strings.ContainsAny(category, `/\`) {
			return "", "", false
		}
		rel = category + "/" + rel
	}
	return root, rel, true
}
