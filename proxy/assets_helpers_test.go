package proxy

import (
	"path/filepath"
	"testing"

	"github.com/comfyshim/comfyshim/config"
	"github.com/comfyshim/comfyshim/proxy/internal/comfytest"
)

// comfyDir is a temporary ComfyUI base folder.
type comfyDir struct {
	*comfytest.Dir
	tb testing.TB
}

func newComfyDir(t testing.TB) *comfyDir { return &comfyDir{comfytest.NewDir(t), t} }

func (d *comfyDir) add(rel, content string, minute int) string { return d.Add(rel, content, minute) }

func (d *comfyDir) tagsFile() string { return d.TagsFile() }

// config serves this folder's assets in front of upstream.
func (d *comfyDir) config(upstream string) *config.Config {
	c := testConfig(d.tb, upstream)
	c.ComfyUIDir = d.Base
	c.InputDir = filepath.Join(d.Base, "input")
	c.OutputDir = filepath.Join(d.Base, "output")
	c.ModelsDir = filepath.Join(d.Base, "models")
	c.TagsFile = d.TagsFile()
	return c
}

// call sends a request; answers of the asset API are checked against the
// Cloud spec.
func call(t testing.TB, method, url string, body string) (int, []byte) {
	t.Helper()
	return comfytest.Call(t, testClient, method, url, body)
}

func decode[T any](t testing.TB, data []byte) T {
	t.Helper()
	return comfytest.Decode[T](t, data)
}

type listResp = comfytest.AssetList
type tagsResp = comfytest.TagList
