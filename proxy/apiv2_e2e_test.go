package proxy

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"lukechampine.com/blake3"

	"github.com/comfyshim/comfyshim/proxy/internal/comfytest"
)

// v2Client speaks Comfy API v2 as the contract describes it: Bearer auth
// when it has a key, every answer checked against the v2 contract.
type v2Client struct {
	t    *testing.T
	base string
	key  string
	http *http.Client
}

func newV2Client(t *testing.T, base, key string) *v2Client {
	return &v2Client{t: t, base: base, key: key, http: &http.Client{
		Transport:     &http.Transport{},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (c *v2Client) send(req *http.Request, reqBody string) (*http.Response, []byte) {
	c.t.Helper()
	if c.key != "" && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.t.Fatal(err)
	}
	if !strings.HasSuffix(req.URL.Path, "/content") || resp.StatusCode >= 400 {
		comfytest.ConformV2(c.t, req, reqBody, resp, data)
	}
	return resp, data
}

func (c *v2Client) json(method, path, body string, hdr ...string) (*http.Response, []byte) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := comfytest.NewRequest(c.t, method, c.base+path, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return c.send(req, body)
}

// upload posts a file as the SDK does: metadata fields first, file last.
func (c *v2Client) upload(filePath string, content []byte, fields ...string) (*http.Response, []byte) {
	c.t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	_ = mw.WriteField("content_type", "image/png")
	_ = mw.WriteField("file_path", filePath)
	for i := 0; i+1 < len(fields); i += 2 {
		_ = mw.WriteField(fields[i], fields[i+1])
	}
	fw, _ := mw.CreateFormFile("file", filepath.Base(filePath))
	_, _ = fw.Write(content)
	_ = mw.Close()
	req := comfytest.NewRequest(c.t, "POST", c.base+"/api/v2/assets", bytes.NewReader(b.Bytes()))
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return c.send(req, "")
}

type v2Job struct {
	ID            string `json:"id"`
	Status        string `json:"status"`
	QueuePosition *int   `json:"queue_position"`
	Progress      *struct {
		Value      float64 `json:"value"`
		NodesDone  int     `json:"nodes_done"`
		NodesTotal int     `json:"nodes_total"`
	} `json:"progress"`
	Outputs []struct {
		NodeID              string `json:"node_id"`
		Name, Type, ID, URL string
		ContentType         string `json:"content_type"`
		SizeBytes           int64  `json:"size_bytes"`
		JobID               string `json:"job_id"`
	} `json:"outputs"`
	Error *struct {
		Code, Message string
		NodeID        *string `json:"node_id"`
		ClassType     *string `json:"class_type"`
		Traceback     *string `json:"traceback"`
	} `json:"error"`
	URLs struct{ Self, Events, Cancel string } `json:"urls"`
}

func (c *v2Client) job(id string) v2Job {
	c.t.Helper()
	resp, data := c.json("GET", "/api/v2/jobs/"+id, "")
	if resp.StatusCode != 200 {
		c.t.Fatalf("GET job %s: %d %s", id, resp.StatusCode, data)
	}
	return comfytest.Decode[v2Job](c.t, data)
}

func (c *v2Client) waitStatus(id, want string) v2Job {
	c.t.Helper()
	var j v2Job
	comfytest.WaitFor(c.t, func() bool {
		j = c.job(id)
		if j.Status != want && (j.Status == "succeeded" || j.Status == "failed" || j.Status == "canceled") {
			c.t.Fatalf("job %s ended %s, want %s: %+v", id, j.Status, want, j)
		}
		return j.Status == want
	})
	return j
}

func (c *v2Client) submit(workflow string, hdr ...string) v2Job {
	c.t.Helper()
	resp, data := c.json("POST", "/api/v2/jobs", `{"workflow":`+workflow+`}`, hdr...)
	if resp.StatusCode != http.StatusCreated {
		c.t.Fatalf("submit: %d %s", resp.StatusCode, data)
	}
	return comfytest.Decode[v2Job](c.t, data)
}

func blake3Hex(b []byte) string {
	sum := blake3.Sum256(b)
	return "blake3:" + hex.EncodeToString(sum[:])
}

func errCode(t *testing.T, data []byte) string {
	var e struct{ Error struct{ Code string } }
	_ = json.Unmarshal(data, &e)
	return e.Error.Code
}

// v2Setup runs the fake ComfyUI (with its input and output folders) and
// comfyshim in front of it.
func v2Setup(t *testing.T, keys ...string) (*comfytest.Upstream, *comfyDir, *shim) {
	return v2SetupJobs(t, false, keys...)
}

// v2SetupJobs is v2Setup with a ComfyUI that has its own /api/jobs routes
// (0.33+) or not.
func v2SetupJobs(t *testing.T, jobsAPI bool, keys ...string) (*comfytest.Upstream, *comfyDir, *shim) {
	up, ts := startUpstream(t)
	up.JobsAPI = jobsAPI
	d := newComfyDir(t)
	up.InputDir, up.OutputDir = d.Folder("input"), d.Folder("output")
	cfg := d.config(ts.URL)
	cfg.APIKeys = keys
	return up, d, startShim(t, cfg)
}

// TestV2Flow is the SDK's flow over plain HTTP: upload an input (the same
// bytes again dedup), run a workflow referencing it as core/ASSET, poll to
// succeeded, read the outputs and download them, ranges included.
func TestV2Flow(t *testing.T) {
	for _, jobsAPI := range []bool{false, true} {
		t.Run(map[bool]string{true: "jobs_api=yes", false: "jobs_api=no"}[jobsAPI], func(t *testing.T) { testV2Flow(t, jobsAPI) })
	}
}

func testV2Flow(t *testing.T, jobsAPI bool) {
	up, d, s := v2SetupJobs(t, jobsAPI)
	c := newV2Client(t, s.URL, "")
	png := []byte("\x89PNG\r\n\x1a\nfake input image bytes")

	resp, data := c.upload("photo.png", png, "expected_hash", blake3Hex(png), "tags", "mine")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %d %s", resp.StatusCode, data)
	}
	asset := comfytest.Decode[map[string]any](t, data)
	if asset["created_new"] != true || asset["hash"] != blake3Hex(png) || asset["file_path"] != "photo.png" || asset["size_bytes"] != float64(len(png)) {
		t.Fatalf("uploaded asset: %s", data)
	}
	if got, err := os.ReadFile(filepath.Join(d.Folder("input"), "photo.png")); err != nil || !bytes.Equal(got, png) {
		t.Fatalf("input/photo.png: %q %v", got, err)
	}
	resp, data = c.upload("photo.png", png)
	again := comfytest.Decode[map[string]any](t, data)
	if resp.StatusCode != http.StatusOK || again["id"] != asset["id"] || again["created_new"] != false {
		t.Fatalf("the same bytes again: %d %s", resp.StatusCode, data)
	}
	if entries, _ := os.ReadDir(d.Folder("input")); len(entries) != 1 {
		t.Fatalf("input/ has %d files after a deduplicated upload", len(entries))
	}
	// The same record through the Cloud asset API, with the upload's tags.
	code, v1 := call(t, "GET", s.URL+"/api/assets/"+asset["id"].(string), "")
	if a := decode[map[string]any](t, v1); code != 200 || a["asset_hash"] != blake3Hex(png) ||
		!strings.Contains(fmt.Sprint(a["tags"]), "uploaded") || !strings.Contains(fmt.Sprint(a["tags"]), "mine") {
		t.Fatalf("the v2 upload through /api/assets: %d %s", code, v1)
	}
	resp, _ = c.json("HEAD", "/api/v2/assets/by-hash/"+blake3Hex(png), "")
	if resp.StatusCode != 200 {
		t.Fatalf("HEAD by-hash: %d", resp.StatusCode)
	}
	resp, _ = c.json("HEAD", "/api/v2/assets/by-hash/"+blake3Hex([]byte("other")), "")
	if resp.StatusCode != 404 {
		t.Fatalf("HEAD by-hash of unknown bytes: %d", resp.StatusCode)
	}
	resp, data = c.json("POST", "/api/v2/assets/from-hash", `{"hash":"`+blake3Hex(png)+`","file_path":"photo.png"}`)
	if resp.StatusCode != 200 || comfytest.Decode[map[string]any](t, data)["id"] != asset["id"] {
		t.Fatalf("from-hash into the same folder: %d %s", resp.StatusCode, data)
	}
	resp, data = c.json("POST", "/api/v2/assets/from-hash", `{"hash":"`+blake3Hex(png)+`","file_path":"output/copy.png"}`)
	if resp.StatusCode != 201 || comfytest.Decode[map[string]any](t, data)["file_path"] != "output/copy.png" {
		t.Fatalf("from-hash into output/: %d %s", resp.StatusCode, data)
	}
	resp, data = c.json("POST", "/api/v2/assets/from-hash", `{"hash":"`+blake3Hex([]byte("other"))+`"}`)
	if resp.StatusCode != 404 || errCode(t, data) != "blob_not_found" {
		t.Fatalf("from-hash of unknown bytes: %d %s", resp.StatusCode, data)
	}

	wf := `{"10":{"class_type":"LoadImage","inputs":{"image":{"__type":"core/ASSET","info":{"id":"` + asset["id"].(string) + `"}}}},"9":{"class_type":"SaveImage","inputs":{"images":["10",0]}}}`
	job := c.submit(wf)
	if job.Status != "queued" && job.Status != "running" && job.Status != "succeeded" {
		t.Fatalf("new job: %+v", job)
	}
	if job.URLs.Self != "/api/v2/jobs/"+job.ID || job.URLs.Events != job.URLs.Self+"/events" || job.URLs.Cancel != job.URLs.Self+"/cancel" {
		t.Fatalf("urls: %+v", job.URLs)
	}
	// ComfyUI ran the prompt under the job's id, with the file name its
	// LoadImage expects where the reference was.
	if seen := up.LastPrompt(); !strings.Contains(string(seen), `"image":"photo.png"`) || !strings.Contains(string(seen), job.ID) {
		t.Fatalf("prompt ComfyUI saw: %s", seen)
	}
	done := c.waitStatus(job.ID, "succeeded")
	if len(done.Outputs) != 1 || done.Progress == nil || done.Progress.Value != 1 || done.Progress.NodesTotal != 2 {
		t.Fatalf("finished job: %+v", done)
	}
	out := done.Outputs[0]
	want, err := os.ReadFile(filepath.Join(up.OutputDir, out.Name))
	if err != nil || out.NodeID != "9" || out.Type != "image" || out.ContentType != "image/png" || out.SizeBytes != int64(len(want)) || out.JobID != job.ID {
		t.Fatalf("output: %+v (%v)", out, err)
	}
	resp, got := c.json("GET", strings.TrimPrefix(out.URL, s.URL), "")
	if resp.StatusCode != 200 || !bytes.Equal(got, want) {
		t.Fatalf("download: %d, %d bytes, want %d", resp.StatusCode, len(got), len(want))
	}
	resp, got = c.json("GET", "/api/v2/assets/"+out.ID+"/content", "", "Range", "bytes=1-3")
	if resp.StatusCode != 206 || !bytes.Equal(got, want[1:4]) {
		t.Fatalf("ranged download: %d %q", resp.StatusCode, got)
	}
	resp, data = c.json("GET", "/api/v2/assets/"+out.ID, "")
	oa := comfytest.Decode[map[string]any](t, data)
	if resp.StatusCode != 200 || oa["job_id"] != job.ID || oa["file_path"] != "output/"+out.Name {
		t.Fatalf("output as an asset: %d %s", resp.StatusCode, data)
	}
	resp, data = c.json("GET", "/api/v2/jobs/"+job.ID+"/workflow", "")
	if resp.StatusCode != 200 || !strings.Contains(string(data), `"format":"api"`) || !strings.Contains(string(data), `"image":"photo.png"`) {
		t.Fatalf("workflow: %d %s", resp.StatusCode, data)
	}
	// Cancelling a finished job changes nothing.
	resp, data = c.json("POST", "/api/v2/jobs/"+job.ID+"/cancel", "")
	if resp.StatusCode != 200 || comfytest.Decode[v2Job](t, data).Status != "succeeded" {
		t.Fatalf("cancel after the end: %d %s", resp.StatusCode, data)
	}
	// Deleting the input removes its file.
	resp, _ = c.json("DELETE", "/api/v2/assets/"+asset["id"].(string), "")
	if _, err := os.Stat(filepath.Join(d.Folder("input"), "photo.png")); resp.StatusCode != 204 || !os.IsNotExist(err) {
		t.Fatalf("delete: %d, file: %v", resp.StatusCode, err)
	}
	resp, data = c.json("GET", "/api/v2/assets/"+asset["id"].(string), "")
	if resp.StatusCode != 404 || errCode(t, data) != "not_found" {
		t.Fatalf("deleted asset: %d %s", resp.StatusCode, data)
	}
}

// TestV2Refusals: every refusal is a 4xx ErrorEnvelope with the contract's
// code, and leaves nothing behind.
func TestV2Refusals(t *testing.T) {
	up, d, s := v2Setup(t)
	c := newV2Client(t, s.URL, "")
	cases := []struct{ name, body, code string }{
		{"ui format", `{"workflow":{"nodes":[],"links":[],"last_node_id":3}}`, "workflow_format_ui"},
		{"unknown node", `{"workflow":{"1":{"class_type":"NoSuchNode","inputs":{}}}}`, "invalid_workflow"},
		{"file not in input", `{"workflow":{"10":{"class_type":"LoadImage","inputs":{"image":"nope.png"}}}}`, "invalid_workflow"},
		{"unknown asset", `{"workflow":{"10":{"class_type":"LoadImage","inputs":{"image":{"__type":"core/ASSET","info":{"id":"6f0c2b1e-8a53-4d0e-9c61-7d3f2a9b4e10"}}}}}}`, "missing_asset"},
		{"malformed asset id", `{"workflow":{"10":{"class_type":"LoadImage","inputs":{"image":{"__type":"core/ASSET","info":{"id":"../x"}}}}}}`, "missing_asset"},
		{"malformed node", `{"workflow":{"1":{"inputs":{}}}}`, "invalid_workflow"},
		{"empty workflow", `{"workflow":{}}`, "invalid_workflow"},
		{"no workflow", `{}`, "invalid_request"},
		{"reserved inputs", `{"workflow":{"9":{"class_type":"SaveImage","inputs":{}}},"inputs":{}}`, "invalid_request"},
		{"reserved webhook", `{"workflow":{"9":{"class_type":"SaveImage","inputs":{}}},"webhook_url":"http://x"}`, "invalid_request"},
		{"open extra_data", `{"workflow":{"9":{"class_type":"SaveImage","inputs":{}}},"extra_data":{"client_id":"x"}}`, "invalid_request"},
		{"not JSON", `{"workflow":`, "invalid_request"},
		{"workflow not an object", `{"workflow":[1]}`, "invalid_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := up.Count("/prompt")
			req := comfytest.NewRequest(t, "POST", s.URL+"/api/v2/jobs", strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			resp, data := c.send(req, "")
			if resp.StatusCode != 422 || errCode(t, data) != tc.code {
				t.Fatalf("%s: %d %s", tc.body, resp.StatusCode, data)
			}
			if tc.code != "invalid_workflow" && up.Count("/prompt") != before {
				t.Fatalf("a refused submission reached ComfyUI")
			}
		})
	}
	// ComfyUI's own per-node validation comes back per node.
	resp, data := c.json("POST", "/api/v2/jobs", `{"workflow":{"10":{"class_type":"LoadImage","inputs":{"image":"nope.png"}},"9":{"class_type":"SaveImage","inputs":{}}}}`)
	var e struct {
		Error struct {
			Message string
			Details struct {
				NodeErrors map[string][]struct{ Field, Reason string } `json:"node_errors"`
			}
		}
	}
	_ = json.Unmarshal(data, &e)
	if ne := e.Error.Details.NodeErrors["10"]; resp.StatusCode != 422 || len(ne) != 1 || ne[0].Field != "image" || ne[0].Reason != "value_not_in_list" || !strings.Contains(e.Error.Message, "Node 10 (LoadImage)") {
		t.Fatalf("node errors: %d %s", resp.StatusCode, data)
	}

	// A declared hash that does not match: 409, and no file is kept.
	resp, data = c.upload("x.png", []byte("abc"), "expected_hash", blake3Hex([]byte("abd")))
	if resp.StatusCode != 409 || errCode(t, data) != "hash_mismatch" {
		t.Fatalf("hash mismatch: %d %s", resp.StatusCode, data)
	}
	for _, bad := range [][2]string{{"../x.png", ""}, {"models/../x.png", ""}, {"a/b/c/d.png", ""}, {".hidden.png", ""}, {"x.png", "not-a-hash"}} {
		fields := []string{}
		if bad[1] != "" {
			fields = append(fields, "expected_hash", bad[1])
		}
		resp, data = c.upload(bad[0], []byte("abc"), fields...)
		if resp.StatusCode != 422 {
			t.Fatalf("upload %q: %d %s", bad[0], resp.StatusCode, data)
		}
	}
	if entries, _ := os.ReadDir(d.Folder("input")); len(entries) != 0 {
		t.Fatalf("refused uploads left %d files in input/", len(entries))
	}
	resp, data = c.json("GET", "/api/v2/jobs/nope", "")
	if resp.StatusCode != 404 || errCode(t, data) != "not_found" {
		t.Fatalf("unknown job: %d %s", resp.StatusCode, data)
	}
	resp, data = c.json("GET", "/api/v2/nothing-here", "")
	if resp.StatusCode != 404 || errCode(t, data) != "not_found" || up.Count("/api/v2/nothing-here") != 0 {
		t.Fatalf("unknown v2 route: %d %s", resp.StatusCode, data)
	}
}

// TestV2Idempotency: a retry with the same key and body replays the first
// answer (one execution), even after comfyshim restarts; the same key with
// another body is 422; another owner's key space is its own.
func TestV2Idempotency(t *testing.T) {
	up, ts := startUpstream(t)
	d := newComfyDir(t)
	up.OutputDir = d.Folder("output")
	cfg := d.config(ts.URL)
	cfg.APIKeys = []string{"key-one-0123456789abcdef", "key-two-0123456789abcdef"}
	s := startShim(t, cfg)
	c := newV2Client(t, s.URL, "key-one-0123456789abcdef")

	first := c.submit(saveImage, "Idempotency-Key", "k-1")
	resp, data := c.json("POST", "/api/v2/jobs", `{"workflow":`+saveImage+`}`, "Idempotency-Key", "k-1")
	if resp.StatusCode != 201 || resp.Header.Get("Idempotency-Replayed") != "true" || comfytest.Decode[v2Job](t, data).ID != first.ID {
		t.Fatalf("replay: %d %v %s", resp.StatusCode, resp.Header, data)
	}
	resp, data = c.json("POST", "/api/v2/jobs", `{"workflow":{"1":{"class_type":"Wait","inputs":{}}}}`, "Idempotency-Key", "k-1")
	if resp.StatusCode != 422 || errCode(t, data) != "idempotency_key_reuse" {
		t.Fatalf("same key, other body: %d %s", resp.StatusCode, data)
	}
	other := newV2Client(t, s.URL, "key-two-0123456789abcdef")
	if j := other.submit(saveImage, "Idempotency-Key", "k-1"); j.ID == first.ID {
		t.Fatal("another key's submission replayed the first key's job")
	}
	resp, _ = other.json("GET", "/api/v2/jobs/"+first.ID, "")
	if resp.StatusCode != 404 {
		t.Fatalf("another key reads the job: %d", resp.StatusCode)
	}
	c.waitStatus(first.ID, "succeeded")
	if n := up.Count("/prompt"); n != 2 {
		t.Fatalf("ComfyUI got %d prompts, want 2 (one per key)", n)
	}

	// After a restart the record and the key are still there.
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	s2 := startShim(t, cfg)
	c2 := newV2Client(t, s2.URL, "key-one-0123456789abcdef")
	resp, data = c2.json("POST", "/api/v2/jobs", `{"workflow":`+saveImage+`}`, "Idempotency-Key", "k-1")
	if resp.StatusCode != 201 || resp.Header.Get("Idempotency-Replayed") != "true" || comfytest.Decode[v2Job](t, data).ID != first.ID {
		t.Fatalf("replay after a restart: %d %s", resp.StatusCode, data)
	}
	if j := c2.job(first.ID); j.Status != "succeeded" || len(j.Outputs) != 1 {
		t.Fatalf("job after a restart: %+v", j)
	}
	if n := up.Count("/prompt"); n != 2 {
		t.Fatalf("ComfyUI got %d prompts after the restart's replay, want 2", n)
	}
	// Bearer is required when keys are configured.
	anon := newV2Client(t, s2.URL, "")
	resp, data = anon.json("GET", "/api/v2/jobs/"+first.ID, "")
	if resp.StatusCode != 401 || errCode(t, data) != "unauthorized" {
		t.Fatalf("no key: %d %s", resp.StatusCode, data)
	}
	// The output URL works without the key until it expires.
	j := c2.job(first.ID)
	resp, got := anon.json("GET", strings.TrimPrefix(j.Outputs[0].URL, s2.URL), "")
	want, _ := os.ReadFile(filepath.Join(up.OutputDir, j.Outputs[0].Name))
	if resp.StatusCode != 200 || !bytes.Equal(got, want) || !strings.Contains(j.Outputs[0].URL, "signature=") {
		t.Fatalf("signed output URL %s: %d", j.Outputs[0].URL, resp.StatusCode)
	}
	resp, _ = anon.json("GET", strings.Replace(strings.TrimPrefix(j.Outputs[0].URL, s2.URL), "expires=", "expires=1", 1), "")
	if resp.StatusCode != 403 {
		t.Fatalf("tampered signed URL: %d", resp.StatusCode)
	}
}

// TestV2Cancel: a running job is interrupted (canceling, then canceled), a
// queued one removed from ComfyUI's queue; both idempotent; a full queue
// refuses with 429 and Retry-After.
func TestV2Cancel(t *testing.T) {
	for _, jobsAPI := range []bool{false, true} {
		t.Run(map[bool]string{true: "jobs_api=yes", false: "jobs_api=no"}[jobsAPI], func(t *testing.T) { testV2Cancel(t, jobsAPI) })
	}
}

func testV2Cancel(t *testing.T, jobsAPI bool) {
	up, ts := startUpstream(t)
	up.JobsAPI = jobsAPI
	d := newComfyDir(t)
	cfg := d.config(ts.URL)
	cfg.MaxQueueDepth = 2
	s := startShim(t, cfg)
	c := newV2Client(t, s.URL, "")

	running := c.submit(`{"1":{"class_type":"Wait","inputs":{}},"9":{"class_type":"SaveImage","inputs":{}}}`)
	comfytest.WaitFor(t, func() bool { return up.Running() == running.ID })
	queued := c.submit(saveImage)
	if j := c.job(queued.ID); j.Status != "queued" || j.QueuePosition == nil || *j.QueuePosition != 0 {
		t.Fatalf("queued job: %+v", j)
	}
	if j := c.job(running.ID); j.Status != "running" {
		t.Fatalf("running job: %+v", j)
	}
	resp, data := c.json("POST", "/api/v2/jobs", `{"workflow":`+saveImage+`}`)
	if resp.StatusCode != 429 || errCode(t, data) != "queue_full" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("full queue: %d %s", resp.StatusCode, data)
	}
	resp, data = c.json("POST", "/api/v2/jobs/"+queued.ID+"/cancel", "")
	if resp.StatusCode != 200 || comfytest.Decode[v2Job](t, data).Status != "canceled" {
		t.Fatalf("cancel queued: %d %s", resp.StatusCode, data)
	}
	resp, data = c.json("POST", "/api/v2/jobs/"+running.ID+"/cancel", "")
	if st := comfytest.Decode[v2Job](t, data).Status; resp.StatusCode != 200 || (st != "canceling" && st != "canceled") {
		t.Fatalf("cancel running: %d %s", resp.StatusCode, data)
	}
	c.waitStatus(running.ID, "canceled")
	for _, id := range []string{running.ID, queued.ID} {
		resp, data = c.json("POST", "/api/v2/jobs/"+id+"/cancel", "")
		if resp.StatusCode != 200 || comfytest.Decode[v2Job](t, data).Status != "canceled" {
			t.Fatalf("cancel again: %d %s", resp.StatusCode, data)
		}
	}
	if up.Count("/prompt") != 2 {
		t.Fatalf("ComfyUI got %d prompts, want 2", up.Count("/prompt"))
	}
	// A failing job carries ComfyUI's error.
	failed := c.submit(`{"1":{"class_type":"Fail","inputs":{}}}`)
	j := c.waitStatus(failed.ID, "failed")
	if j.Error == nil || j.Error.Code != "node_execution_error" || !strings.Contains(j.Error.Message, "RuntimeError: Fail node failed on purpose") ||
		j.Error.NodeID == nil || *j.Error.NodeID != "1" || j.Error.ClassType == nil || *j.Error.ClassType != "Fail" || j.Error.Traceback == nil {
		t.Fatalf("failed job: %+v", j.Error)
	}
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	name string
	data []byte
}

// readEvents reads a stream's events until it ends, checking each event's
// data against its schema in the contract.
func readEvents(t *testing.T, body io.Reader, got chan<- sseEvent) {
	defer close(got)
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var ev sseEvent
	schemas := map[string]string{"status": "StatusEvent", "progress": "Progress", "preview": "PreviewEvent", "output": "Output", "log": "LogEvent"}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = append(ev.data, strings.TrimPrefix(line, "data: ")...)
		case line == "" && ev.name != "":
			if err := comfytest.ValidateV2Body(t, schemas[ev.name], ev.data); err != nil {
				t.Errorf("%s event does not conform: %v\n%s", ev.name, err, ev.data)
			}
			got <- ev
			ev = sseEvent{}
		}
	}
}

// TestV2Events: a stream opened while the job waits in the queue sees its
// status with the queue position, then running, progress, a preview, the
// output, and ends after succeeded; a stream limit refuses with 429.
func TestV2Events(t *testing.T) {
	up, ts := startUpstream(t)
	d := newComfyDir(t)
	up.OutputDir = d.Folder("output")
	cfg := d.config(ts.URL)
	cfg.MaxEventStreams = 1
	s := startShim(t, cfg)
	c := newV2Client(t, s.URL, "")

	blocker := c.submit(`{"1":{"class_type":"Wait","inputs":{}}}`)
	comfytest.WaitFor(t, func() bool { return up.Running() == blocker.ID })
	job := c.submit(`{"3":{"class_type":"Wait","inputs":{}},"9":{"class_type":"SaveImage","inputs":{}}}`)

	req := comfytest.NewRequest(t, "GET", s.URL+job.URLs.Events, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	comfytest.ConformV2(t, req, "", &http.Response{StatusCode: resp.StatusCode, Header: resp.Header}, []byte("event: status\ndata: {}\n\n"))
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %v", resp.StatusCode, resp.Header)
	}
	got := make(chan sseEvent, 100)
	go readEvents(t, resp.Body, got)
	next := func() sseEvent {
		select {
		case ev, ok := <-got:
			if !ok {
				t.Fatal("the stream ended early")
			}
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no event")
		}
		return sseEvent{}
	}
	if ev := next(); ev.name != "status" || string(ev.data) != `{"status":"queued","queue_position":0}` {
		t.Fatalf("first event: %s %s", ev.name, ev.data)
	}
	// A second stream is over the limit.
	r2, d2 := c.json("GET", job.URLs.Events, "")
	if r2.StatusCode != 429 || errCode(t, d2) != "too_many_streams" || r2.Header.Get("Retry-After") == "" {
		t.Fatalf("second stream: %d %s", r2.StatusCode, d2)
	}

	up.Proceed(blocker.ID)
	comfytest.WaitFor(t, func() bool { return up.Running() == job.ID })
	up.Proceed(job.ID)
	var names, statuses []string
	var outputs []sseEvent
	for {
		ev, ok := <-got
		if !ok {
			break
		}
		names = append(names, ev.name)
		switch ev.name {
		case "output":
			outputs = append(outputs, ev)
		case "status":
			statuses = append(statuses, comfytest.Decode[map[string]any](t, ev.data)["status"].(string))
		}
	}
	if strings.Join(statuses, ",") != "running,succeeded" {
		t.Fatalf("statuses after queued: %v (events %v)", statuses, names)
	}
	seq := strings.Join(names, ",")
	for _, want := range []string{"status", "progress", "preview", "output", "log"} {
		if !strings.Contains(seq, want) {
			t.Fatalf("no %s event: %s", want, seq)
		}
	}
	if !strings.Contains(seq, "status") || names[len(names)-1] != "status" || !strings.Contains(seq, "output") {
		t.Fatalf("events: %s", seq)
	}
	if len(outputs) != 1 {
		t.Fatalf("%d output events: %s", len(outputs), seq)
	}
	var last map[string]any
	j := c.job(job.ID)
	_ = json.Unmarshal(outputs[0].data, &last)
	if j.Status != "succeeded" || last["id"] != j.Outputs[0].ID {
		t.Fatalf("output event %v, job %+v", last, j)
	}
	// A finished job's stream is its terminal status, and ends.
	r3, body := c.json("GET", job.URLs.Events, "")
	if r3.StatusCode != 200 || !strings.HasPrefix(string(body), "event: status\ndata: {\"status\":\"succeeded\"") {
		t.Fatalf("stream of a finished job: %d %s", r3.StatusCode, body)
	}
}

// TestV2StreamsMemory bounds what an open event stream costs: 1,000 streams
// on a job waiting in the queue, both ends in this process, measured about
// 31 KiB of heap each; more than three times that means a stream started
// holding a queue or buffers of its own.
func TestV2StreamsMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,000 streams")
	}
	up, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	s := startShim(t, cfg)
	c := newV2Client(t, s.URL, "")
	blocker := c.submit(`{"1":{"class_type":"Wait","inputs":{}}}`)
	comfytest.WaitFor(t, func() bool { return up.Running() == blocker.ID })
	job := c.submit(saveImage)
	const n = 1000
	before := heapInUse()

	tr := &http.Transport{MaxConnsPerHost: 0}
	client := &http.Client{Transport: tr}
	var wg sync.WaitGroup
	bodies := make(chan io.ReadCloser, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(s.URL + job.URLs.Events)
			if err != nil {
				t.Error(err)
				return
			}
			buf := make([]byte, 16)
			_, _ = io.ReadAtLeast(resp.Body, buf, 1) // the first status is sent
			bodies <- resp.Body
		}()
	}
	wg.Wait()
	close(bodies)
	after := heapInUse()
	per := float64(after-before) / n
	t.Logf("%d open streams: %.1f KiB of heap each (client side included)", n, per/1024)
	if per > 3*32*1024 {
		t.Fatalf("an open stream costs %.0f bytes of heap, more than 3x the 31 KiB measured", per)
	}
	for b := range bodies {
		b.Close()
	}
	up.Proceed(blocker.ID)
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestV2EndRecorded: a job's end is put on record when ComfyUI reports it,
// without anyone asking; so once ComfyUI has forgotten it (its history
// cleared, as a restart does), the job still answers with its outputs.
func TestV2EndRecorded(t *testing.T) {
	up, d, s := v2Setup(t)
	c := newV2Client(t, s.URL, "")
	job := c.submit(saveImage)
	rec := filepath.Join(filepath.Dir(d.TagsFile()), "comfyshim-jobs", job.ID+".json")
	comfytest.WaitFor(t, func() bool {
		b, _ := os.ReadFile(rec)
		return bytes.Contains(b, []byte(`"final":{"status":"succeeded"`))
	})
	reads := up.Count("/history/" + job.ID)
	resp, err := http.Post(s.srv.cfg.Upstream.String()+"/history", "application/json", strings.NewReader(`{"clear":true}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("clearing the history: %v", err)
	}
	resp.Body.Close()
	j := c.job(job.ID)
	if j.Status != "succeeded" || len(j.Outputs) != 1 || j.Outputs[0].SizeBytes == 0 {
		t.Fatalf("job after ComfyUI forgot it: %+v", j)
	}
	if n := up.Count("/history/" + job.ID); n != reads {
		t.Fatalf("a recorded job was read from ComfyUI's history again (%d times)", n-reads)
	}
}

// TestV2StreamsPerKey: one key cannot take every event stream; another key
// still gets its own.
func TestV2StreamsPerKey(t *testing.T) {
	up, ts := startUpstream(t)
	d := newComfyDir(t)
	cfg := d.config(ts.URL)
	cfg.APIKeys = []string{"stream-key-a-0123456789", "stream-key-b-0123456789"}
	cfg.MaxEventStreamsPerKey = 1
	s := startShim(t, cfg)
	a := newV2Client(t, s.URL, "stream-key-a-0123456789")
	b := newV2Client(t, s.URL, "stream-key-b-0123456789")
	blocker := a.submit(`{"1":{"class_type":"Wait","inputs":{}}}`)
	comfytest.WaitFor(t, func() bool { return up.Running() == blocker.ID })
	ja, jb := a.submit(saveImage), b.submit(saveImage)
	open := func(c *v2Client, path string) *http.Response {
		req := comfytest.NewRequest(t, "GET", s.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+c.key)
		resp, err := c.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	if r := open(a, ja.URLs.Events); r.StatusCode != 200 {
		t.Fatalf("a's first stream: %d", r.StatusCode)
	}
	resp, data := a.json("GET", ja.URLs.Events, "")
	if resp.StatusCode != 429 || errCode(t, data) != "too_many_streams" {
		t.Fatalf("a's second stream: %d %s", resp.StatusCode, data)
	}
	if r := open(b, jb.URLs.Events); r.StatusCode != 200 {
		t.Fatalf("b's stream while a has its share: %d", r.StatusCode)
	}
	up.Proceed(blocker.ID)
}
