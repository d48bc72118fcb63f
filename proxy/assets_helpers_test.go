package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/comfyshim/comfyshim/config"
	"github.com/comfyshim/comfyshim/tagstore/catalog"
)

// comfyDir is a temporary ComfyUI base folder.
type comfyDir struct {
	t    testing.TB
	base string
}

func newComfyDir(t testing.TB) *comfyDir {
	t.Helper()
	d := &comfyDir{t: t, base: t.TempDir()}
	for _, sub := range []string{"input", "output", "models/checkpoints", "models/loras", "user"} {
		if err := os.MkdirAll(filepath.Join(d.base, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// add writes a file under the base folder with a fixed modification time
// (minutes after a fixed epoch) and returns its asset id.
func (d *comfyDir) add(rel, content string, minute int) string {
	d.t.Helper()
	p := filepath.Join(d.base, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		d.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		d.t.Fatal(err)
	}
	ts := time.Date(2026, 11, 1, 0, minute, 0, 0, time.UTC)
	if err := os.Chtimes(p, ts, ts); err != nil {
		d.t.Fatal(err)
	}
	root, inside, _ := strings.Cut(rel, "/")
	return catalog.ID(root, inside)
}

func (d *comfyDir) config(upstream string) *config.Config {
	c := testConfig(d.t, upstream)
	c.ComfyUIDir = d.base
	c.InputDir = filepath.Join(d.base, "input")
	c.OutputDir = filepath.Join(d.base, "output")
	c.ModelsDir = filepath.Join(d.base, "models")
	c.TagsFile = filepath.Join(d.base, "user", "comfyshim-tags.json")
	return c
}

func (d *comfyDir) tagsFile() string { return filepath.Join(d.base, "user", "comfyshim-tags.json") }

// spec is the Cloud OpenAPI document every asset API response is checked against.
var spec struct {
	once   sync.Once
	router routers.Router
	err    error
}

func specRouter(t *testing.T) routers.Router {
	t.Helper()
	spec.once.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromFile("testdata/openapi-cloud.yaml")
		if err != nil {
			spec.err = err
			return
		}
		doc.Servers = openapi3.Servers{{URL: "/"}} // match any host
		spec.router, spec.err = gorillamux.NewRouter(doc)
	})
	if spec.err != nil {
		t.Fatalf("loading the Cloud spec: %v", spec.err)
	}
	return spec.router
}

// call sends a request and returns status, body; every response of an
// operation in the spec is validated against it (status, headers, body).
func call(t *testing.T, method, url string, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := mustReq(t, method, url, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	conform(t, req, body, resp, data)
	return resp.StatusCode, data
}

func conform(t *testing.T, req *http.Request, reqBody string, resp *http.Response, data []byte) {
	t.Helper()
	if resp.StatusCode >= 400 {
		var e map[string]any
		if err := json.Unmarshal(data, &e); err != nil || len(e) != 2 || e["code"] == "" || e["message"] == "" {
			t.Fatalf("%s %s: error body is not an ErrorResponse: %s", req.Method, req.URL, data)
		}
	}
	if err := validateAgainstSpec(t, req, reqBody, resp.StatusCode, resp.Header, data); err != nil {
		t.Fatalf("%s %s -> %d does not conform to the Cloud spec: %v\n%s", req.Method, req.URL, resp.StatusCode, err, data)
	}
}

// validateAgainstSpec checks a response of an operation in the Cloud spec;
// requests outside the spec pass.
func validateAgainstSpec(t *testing.T, req *http.Request, reqBody string, status int, header http.Header, data []byte) error {
	if !ownsPath(req.URL.Path) {
		return nil // forwarded: ComfyUI's answer, not comfyshim's
	}
	route, params, err := specRouter(t).FindRoute(req)
	if err != nil {
		return nil
	}
	// The validator reads the request's body again.
	vreq := req.Clone(context.Background())
	vreq.Body = io.NopCloser(strings.NewReader(reqBody))
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route},
		Status:                 status,
		Header:                 header,
		Options:                &openapi3filter.Options{MultiError: true},
	}
	in.SetBodyBytes(data)
	return openapi3filter.ValidateResponse(context.Background(), in)
}

func decode[T any](t *testing.T, data []byte) T {
	t.Helper()
	var v T
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&v); err != nil {
		t.Fatalf("decoding %s: %v", data, err)
	}
	return v
}

type listResp struct {
	Assets []struct {
		ID          string   `json:"id"`
		Name        string   `json:"name"`
		Size        int64    `json:"size"`
		MimeType    string   `json:"mime_type"`
		Tags        []string `json:"tags"`
		PreviewURL  string   `json:"preview_url"`
		CreatedAt   string   `json:"created_at"`
		UpdatedAt   string   `json:"updated_at"`
		DisplayName string   `json:"display_name"`
		LoaderPath  string   `json:"loader_path"`
	} `json:"assets"`
	Total   int  `json:"total"`
	HasMore bool `json:"has_more"`
}

func (l listResp) names() string {
	var n []string
	for _, a := range l.Assets {
		n = append(n, a.Name)
	}
	return strings.Join(n, ",")
}

type tagsResp struct {
	Tags []struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	} `json:"tags"`
	Total   int  `json:"total"`
	HasMore bool `json:"has_more"`
}

func (r tagsResp) String() string {
	var b strings.Builder
	for i, t := range r.Tags {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%d", t.Name, t.Count)
	}
	return b.String()
}
