package assetapi

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/comfyshim/comfyshim/proxy/apierror"
	"github.com/comfyshim/comfyshim/proxy/internal/comfytest"
	"github.com/comfyshim/comfyshim/tagstore/assets"
)

// ErrorResponse is the error body every failure must have.
type ErrorResponse = apierror.ErrorResponse

type listResp = comfytest.AssetList
type tagsResp = comfytest.TagList

// comfyDir is a temporary ComfyUI folder.
type comfyDir struct{ *comfytest.Dir }

func newComfyDir(t testing.TB) *comfyDir { return &comfyDir{comfytest.NewDir(t)} }

func (d *comfyDir) add(rel, content string, minute int) string { return d.Add(rel, content, minute) }

func (d *comfyDir) tagsFile() string { return d.TagsFile() }

// sidecar is the tags file once every acknowledged change is compacted
// into it.
func (f *fixture) sidecar(t *testing.T) []byte {
	t.Helper()
	if err := f.s.lib.Flush(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(f.tagsFile())
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// shim serves the asset API over a folder on a real loopback socket.
type shim struct {
	URL string
	lib *assets.Library
}

// serveDir opens the folder's asset library and serves the API on it, as
// comfyshim mounts it, until the test ends.
func serveDir(t testing.TB, d *comfyDir) *shim {
	t.Helper()
	return serveDirOpts(t, d, Options{MaxBody: 1 << 20})
}

// serveDirOpts is serveDir with the API's options of the test's choosing.
func serveDirOpts(t testing.TB, d *comfyDir, opts Options) *shim {
	t.Helper()
	roots := []assets.Root{{Name: "input", Dir: d.Folder("input")}, {Name: "output", Dir: d.Folder("output")}, {Name: "models", Dir: d.Folder("models")}}
	lib, err := assets.Open(roots, d.TagsFile(), assets.Options{FilesDebounce: 20 * time.Millisecond, TagsDebounce: 20 * time.Millisecond, HashRoots: []string{"models"}})
	if err != nil {
		t.Fatal(err)
	}
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	Mount(e, lib, opts)
	e.NoRoute(func(c *gin.Context) {
		if Owns(c.Request.URL.Path) {
			fail(c, &Error{http.StatusNotFound, "NOT_FOUND", "no route"})
		}
	})
	ts := httptest.NewServer(e)
	t.Cleanup(func() { ts.Close(); _ = lib.Close() })
	return &shim{URL: ts.URL, lib: lib}
}

var testClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}}

func call(t testing.TB, method, url string, body string) (int, []byte) {
	t.Helper()
	return comfytest.Call(t, testClient, method, url, body)
}

func decode[T any](t testing.TB, data []byte) T {
	t.Helper()
	return comfytest.Decode[T](t, data)
}

func mustReq(t testing.TB, method, u string, body io.Reader) *http.Request {
	return comfytest.NewRequest(t, method, u, body)
}

func waitFor(t testing.TB, cond func() bool) { t.Helper(); comfytest.WaitFor(t, cond) }

// httptestGet answers a GET from h in memory.
func httptestGet(t *testing.T, h http.Handler, path string) []byte {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	if rec.Code != 200 {
		t.Fatalf("GET %s: %d", path, rec.Code)
	}
	return rec.Body.Bytes()
}
