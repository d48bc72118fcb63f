package comfytest

import (
	"bytes"
	"context"
	_ "embed"
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

	"github.com/comfyshim/comfyshim/tagstore/catalog"
)

// Dir is a temporary ComfyUI base folder.
type Dir struct {
	t    testing.TB
	Base string
}

// NewDir makes a ComfyUI folder with empty input/, output/, models/ and user/.
func NewDir(t testing.TB) *Dir {
	t.Helper()
	d := &Dir{t: t, Base: t.TempDir()}
	for _, sub := range []string{"input", "output", "models/checkpoints", "models/loras", "user"} {
		if err := os.MkdirAll(filepath.Join(d.Base, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// Add writes a file under the base folder with a fixed modification time
// (minutes after a fixed epoch) and returns its asset id.
func (d *Dir) Add(rel, content string, minute int) string {
	d.t.Helper()
	p := filepath.Join(d.Base, filepath.FromSlash(rel))
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

// Folder is the path of one of ComfyUI's folders ("input", "output", ...).
func (d *Dir) Folder(name string) string { return filepath.Join(d.Base, name) }

// TagsFile is where comfyshim keeps tags for this folder by default.
func (d *Dir) TagsFile() string { return filepath.Join(d.Base, "user", "comfyshim-tags.json") }

//go:embed openapi-cloud.yaml
var cloudSpec []byte

//go:embed openapi-v2.yaml
var v2Spec []byte

// specV2 is the Comfy API v2 contract /api/v2 answers are checked against.
var specV2 struct {
	once   sync.Once
	router routers.Router
	err    error
}

func specV2Router(t testing.TB) routers.Router {
	t.Helper()
	specV2.once.Do(func() {
		doc, err := openapi3.NewLoader().LoadFromData(v2Spec)
		if err != nil {
			specV2.err = err
			return
		}
		doc.Servers = openapi3.Servers{{URL: "/"}}
		specV2.router, specV2.err = gorillamux.NewRouter(doc)
		// An event stream is text; its events are checked one by one
		// (ValidateV2Body).
		openapi3filter.RegisterBodyDecoder("text/event-stream", openapi3filter.FileBodyDecoder)
	})
	if specV2.err != nil {
		t.Fatalf("loading the v2 spec: %v", specV2.err)
	}
	return specV2.router
}

// ConformV2 fails the test unless an /api/v2 answer matches the v2
// contract: status, headers and body, errors as an ErrorEnvelope with a
// lower-case code.
func ConformV2(t testing.TB, req *http.Request, reqBody string, resp *http.Response, data []byte) {
	t.Helper()
	if resp.StatusCode >= 400 && req.Method != http.MethodHead && resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		var e struct {
			Error *struct {
				Code, Message string
			}
		}
		if err := json.Unmarshal(data, &e); err != nil || e.Error == nil || e.Error.Code == "" || e.Error.Message == "" || strings.ToLower(e.Error.Code) != e.Error.Code {
			t.Fatalf("%s %s: error body is not a v2 ErrorEnvelope: %s", req.Method, req.URL, data)
		}
	}
	route, params, err := specV2Router(t).FindRoute(req)
	if err != nil {
		if resp.StatusCode < 400 {
			t.Fatalf("%s %s is not an operation of the v2 contract: %v", req.Method, req.URL.Path, err)
		}
		return // a refused request outside the contract: its envelope is checked above
	}
	vreq := req.Clone(context.Background())
	vreq.Body = io.NopCloser(strings.NewReader(reqBody))
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route},
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options:                &openapi3filter.Options{MultiError: true, IncludeResponseStatus: true},
	}
	in.SetBodyBytes(data)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Fatalf("%s %s -> %d does not conform to the v2 contract: %v\n%s", req.Method, req.URL, resp.StatusCode, err, data)
	}
}

// ValidateV2Body checks one JSON value against a schema of the v2 contract
// (an SSE event's data: StatusEvent, Progress, PreviewEvent, Output,
// LogEvent).
func ValidateV2Body(t testing.TB, schema string, data []byte) error {
	t.Helper()
	specV2Router(t)
	doc, err := openapi3.NewLoader().LoadFromData(v2Spec)
	if err != nil {
		return err
	}
	ref := doc.Components.Schemas[schema]
	if ref == nil {
		return fmt.Errorf("no schema %s", schema)
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	return ref.Value.VisitJSON(v, openapi3.MultiErrors())
}

// spec is the Cloud OpenAPI document asset API responses are checked against.
var spec struct {
	once   sync.Once
	router routers.Router
	err    error
}

func specRouter(t testing.TB) routers.Router {
	t.Helper()
	spec.once.Do(func() {
		doc, err := openapi3.NewLoader().LoadFromData(cloudSpec)
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

// Call sends a request and returns status and body; every response of an
// operation comfyshim answers itself is validated against the spec
// (status, headers, body).
func Call(t testing.TB, client *http.Client, method, url, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := NewRequest(t, method, url, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	Conform(t, req, body, resp, data)
	return resp.StatusCode, data
}

// Conform fails the test unless an error answer is a Cloud ErrorResponse
// and an asset API answer matches the spec.
func Conform(t testing.TB, req *http.Request, reqBody string, resp *http.Response, data []byte) {
	t.Helper()
	if resp.StatusCode >= 400 {
		var e struct {
			Code, Message string
			Error         *struct {
				Code, Message string
				Details       map[string]any
			}
		}
		if err := json.Unmarshal(data, &e); err != nil || e.Code == "" || e.Message == "" || e.Error == nil ||
			e.Error.Code != e.Code || e.Error.Message != e.Message || e.Error.Details == nil {
			t.Fatalf("%s %s: error body is not an ErrorResponse with its OSS envelope: %s", req.Method, req.URL, data)
		}
	}
	if err := ValidateAgainstSpec(t, req, reqBody, resp.StatusCode, resp.Header, data); err != nil {
		t.Fatalf("%s %s -> %d does not conform to the Cloud spec: %v\n%s", req.Method, req.URL, resp.StatusCode, err, data)
	}
}

// localRoute matches the routes comfyshim answers itself; everything else
// is ComfyUI's answer, not comfyshim's.
func localRoute(method, p string) bool {
	switch {
	case p == "/api/tags" || p == "/api/tags/" || p == "/api/assets" || strings.HasPrefix(p, "/api/assets/"):
		return true
	case p == "/api/jobs" || strings.HasPrefix(p, "/api/jobs/") || strings.HasPrefix(p, "/api/job/"):
		return method == http.MethodGet
	case p == "/api/history_v2" || strings.HasPrefix(p, "/api/history_v2/") || p == "/api/user":
		return true
	case p == "/api/queue":
		return method == http.MethodPost
	}
	return false
}

// ValidateAgainstSpec checks a response of an operation in the Cloud spec;
// requests outside the spec pass.
func ValidateAgainstSpec(t testing.TB, req *http.Request, reqBody string, status int, header http.Header, data []byte) error {
	if !localRoute(req.Method, req.URL.Path) {
		return nil
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

// WaitFor polls cond until it holds, failing the test after 10 s.
func WaitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// NewRequest builds a request or fails the test.
func NewRequest(t testing.TB, method, url string, body io.Reader) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Decode decodes a JSON body or fails the test.
func Decode[T any](t testing.TB, data []byte) T {
	t.Helper()
	var v T
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&v); err != nil {
		t.Fatalf("decoding %s: %v", data, err)
	}
	return v
}

// AssetList is a listing answer.
type AssetList struct {
	Assets []struct {
		ID           string         `json:"id"`
		Name         string         `json:"name"`
		Size         int64          `json:"size"`
		MimeType     string         `json:"mime_type"`
		Tags         []string       `json:"tags"`
		PreviewURL   string         `json:"preview_url"`
		CreatedAt    string         `json:"created_at"`
		UpdatedAt    string         `json:"updated_at"`
		DisplayName  string         `json:"display_name"`
		LoaderPath   string         `json:"loader_path"`
		UserMetadata map[string]any `json:"user_metadata"`
		Metadata     map[string]any `json:"metadata"`
		IsImmutable  *bool          `json:"is_immutable"`
	} `json:"assets"`
	Total      int    `json:"total"`
	HasMore    bool   `json:"has_more"`
	NextCursor string `json:"next_cursor"`
}

// Names lists the assets' names, comma-separated.
func (l AssetList) Names() string {
	var n []string
	for _, a := range l.Assets {
		n = append(n, a.Name)
	}
	return strings.Join(n, ",")
}

// TagList is a tag listing answer.
type TagList struct {
	Tags []struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	} `json:"tags"`
	Total   int  `json:"total"`
	HasMore bool `json:"has_more"`
}

func (r TagList) String() string {
	var b strings.Builder
	for i, t := range r.Tags {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%d", t.Name, t.Count)
	}
	return b.String()
}
