package apiv2

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/comfyshim/comfyshim/proxy/internal/comfytest"
	"github.com/comfyshim/comfyshim/tagstore/assets"
)

func TestRecordsDurable(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	r, err := openRecords(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	done := record{ID: "a", Owner: "key:1", Created: now, Expires: now.Add(time.Hour), Key: "k", Fingerprint: "f", Accepted: true,
		Final: &snapshot{Status: statusSucceeded, Completed: now, Outputs: []outputRef{{NodeID: "9", Root: "output", Rel: "x.png", Kind: "images"}}}}
	old := record{ID: "b", Created: now.Add(-50 * time.Hour), Expires: now.Add(-25 * time.Hour), Key: "k2", Accepted: true}
	for _, rec := range []record{done, old} {
		if err := r.put(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.putWorkflow("a", []byte(`{"9":{}}`)); err != nil {
		t.Fatal(err)
	}
	// What a crash can leave: a temporary file of a write it interrupted,
	// and a file that is not a record.
	_ = os.WriteFile(filepath.Join(dir, ".c.json.tmp-123"), []byte(`{"id":`), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "d.json"), []byte(`{"id":"other"}`), 0o644)

	r2, err := openRecords(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := r2.get("a")
	if !ok || got.Owner != "key:1" || !got.Created.Equal(now) || got.Final == nil || got.Final.Outputs[0].Rel != "x.png" {
		t.Fatalf("reopened: %+v", got)
	}
	if _, ok := r2.byIdempotencyKey("key:1", "k", now); !ok {
		t.Fatal("the key was not found after reopening")
	}
	if _, ok := r2.byIdempotencyKey("key:2", "k", now); ok {
		t.Fatal("another owner's key matched")
	}
	if _, ok := r2.byIdempotencyKey("key:1", "k", now.Add(25*time.Hour)); ok {
		t.Fatal("a key older than 24 h matched")
	}
	if loc, ok := r2.output(assets.IDOf("output", "x.png")); !ok || loc.job != "a" {
		t.Fatalf("output index: %+v", loc)
	}
	if _, err := os.Stat(filepath.Join(dir, ".c.json.tmp-123")); !os.IsNotExist(err) {
		t.Fatal("an interrupted write's temporary file was left")
	}
	if _, ok := r2.get("other"); ok {
		t.Fatal("a file not named for its id was read as a record")
	}
	if n := r2.prune(now); n != 1 {
		t.Fatalf("pruned %d, want the one expired over a day ago", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "b.json")); !os.IsNotExist(err) {
		t.Fatal("the pruned record's file is still there")
	}
	if wf, err := r2.workflow("a"); err != nil || string(wf) != `{"9":{}}` {
		t.Fatalf("workflow: %s %v", wf, err)
	}
}

// newTestAPI serves the v2 API alone over dir, in front of up.
func newTestAPI(t *testing.T, upURL, dir string) *httptest.Server {
	return newTestAPIOpts(t, upURL, dir, Options{})
}

func newTestAPIOpts(t *testing.T, upURL, dir string, o Options) *httptest.Server {
	t.Helper()
	base := t.TempDir()
	for _, d := range []string{"input", "output"} {
		_ = os.MkdirAll(filepath.Join(base, d), 0o755)
	}
	lib, err := assets.Open([]assets.Root{{Name: "input", Dir: filepath.Join(base, "input")}, {Name: "output", Dir: filepath.Join(base, "output")}},
		filepath.Join(base, "tags.json"), assets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(upURL)
	o.Upstream, o.Transport, o.Library, o.Dir, o.Logger = u, http.DefaultTransport, lib, dir, slog.New(slog.DiscardHandler)
	o.Origin = func(*http.Request) string { return "http://comfyshim" }
	o.Owner = func(*http.Request) string { return "" }
	o.ClientID = func(context.Context, string) (string, error) { return "", errors.New("no sockets here") }
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	a.Mount(e)
	ts := httptest.NewServer(e)
	t.Cleanup(func() { ts.Close(); a.Close(); _ = lib.Close() })
	return ts
}

func post(t *testing.T, url, body, key string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(data)
}

// TestSubmissionInterruptedByCrash: comfyshim writes a submission's intent
// (its own prompt id, the key, the body's fingerprint) before ComfyUI sees
// the prompt. A crash right after ComfyUI accepted it leaves an intent
// whose prompt exists: the retry replays it instead of running it twice. A
// crash before leaves one whose prompt does not: the retry sends it, under
// the same id.
func TestSubmissionInterruptedByCrash(t *testing.T) {
	up := comfytest.New()
	upts := httptest.NewServer(up)
	defer upts.Close()
	wf := `{"1":{"class_type":"Wait","inputs":{}}}`
	sum := sha256.Sum256([]byte(wf))
	fp := hex.EncodeToString(sum[:])

	dir := t.TempDir()
	recs, _ := openRecords(dir, slog.New(slog.DiscardHandler))
	now := time.Now()
	sent, unsent := "2b5a4bbf-4a0c-4f6e-9d4c-1b2c3d4e5f60", "7c6d5e4f-3a2b-4c1d-8e9f-0a1b2c3d4e5f"
	keylessSent, keylessUnsent := "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6", "9e8d7c6b-5a49-4837-a625-14f3e2d1c0b9"
	for id, key := range map[string]string{sent: "crash-after", unsent: "crash-before", keylessSent: "", keylessUnsent: ""} {
		_ = recs.put(record{ID: id, Created: now, Expires: now.Add(time.Hour), Key: key, Fingerprint: fp, Nodes: map[string]string{"1": "Wait"}})
	}
	// ComfyUI accepted two of them before the crash.
	for _, id := range []string{sent, keylessSent} {
		resp, err := http.Post(upts.URL+"/prompt", "application/json", strings.NewReader(`{"prompt":`+wf+`,"prompt_id":"`+id+`"}`))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("seeding ComfyUI: %v %v", err, resp)
		}
		resp.Body.Close()
	}

	ts := newTestAPI(t, upts.URL, dir)
	// Without a key, the check at start settles them: the one ComfyUI has
	// is a job, the other is forgotten.
	comfytest.WaitFor(t, func() bool {
		resp, err := http.Get(ts.URL + "/api/v2/jobs/" + keylessSent)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	comfytest.WaitFor(t, func() bool {
		_, err := os.Stat(filepath.Join(dir, keylessUnsent+".json"))
		return os.IsNotExist(err)
	})
	resp, body := post(t, ts.URL+"/api/v2/jobs", `{"workflow":`+wf+`}`, "crash-after")
	if resp.StatusCode != 201 || resp.Header.Get("Idempotency-Replayed") != "true" || !strings.Contains(body, sent) {
		t.Fatalf("retry after a crash past ComfyUI: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if n := up.Count("/prompt"); n != 2 {
		t.Fatalf("ComfyUI got %d prompts, want the 2 sent before the crash", n)
	}
	resp, body = post(t, ts.URL+"/api/v2/jobs", `{"workflow":`+wf+`}`, "crash-before")
	if resp.StatusCode != 201 || resp.Header.Get("Idempotency-Replayed") != "" || !strings.Contains(body, unsent) {
		t.Fatalf("retry after a crash before ComfyUI: %d %s", resp.StatusCode, body)
	}
	if n := up.Count("/prompt"); n != 3 || !strings.Contains(string(up.LastPrompt()), unsent) {
		t.Fatalf("ComfyUI got %d prompts, the last %s", n, up.LastPrompt())
	}
	// And from now on both replay.
	for _, k := range []string{"crash-after", "crash-before"} {
		if resp, _ := post(t, ts.URL+"/api/v2/jobs", `{"workflow":`+wf+`}`, k); resp.Header.Get("Idempotency-Replayed") != "true" {
			t.Fatalf("%s: not replayed", k)
		}
	}
	for _, id := range []string{sent, unsent, keylessSent} {
		up.Proceed(id)
	}
}

// slowPrompts holds every POST /prompt until released, passing everything
// else to the fake ComfyUI.
type slowPrompts struct {
	next    http.Handler
	arrived chan struct{}
	release chan struct{}
}

func (s *slowPrompts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/prompt" {
		s.arrived <- struct{}{}
		<-s.release
	}
	s.next.ServeHTTP(w, r)
}

// TestIdempotencyInFlight: a retry while the first submission with its key
// is still with ComfyUI is 409 idempotency_conflict with Retry-After; once
// the first is answered, the retry replays it.
func TestIdempotencyInFlight(t *testing.T) {
	up := comfytest.New()
	slow := &slowPrompts{next: up, arrived: make(chan struct{}, 1), release: make(chan struct{})}
	upts := httptest.NewServer(slow)
	defer upts.Close()
	ts := newTestAPI(t, upts.URL, t.TempDir())
	body := `{"workflow":{"9":{"class_type":"SaveImage","inputs":{}}}}`
	first := make(chan string, 1)
	go func() {
		resp, data := post(t, ts.URL+"/api/v2/jobs", body, "same")
		if resp.StatusCode != 201 {
			t.Errorf("first: %d %s", resp.StatusCode, data)
		}
		first <- data
	}()
	<-slow.arrived
	resp, data := post(t, ts.URL+"/api/v2/jobs", body, "same")
	if resp.StatusCode != 409 || !strings.Contains(data, `"idempotency_conflict"`) || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("retry in flight: %d %v %s", resp.StatusCode, resp.Header, data)
	}
	close(slow.release)
	got := <-first
	resp, data = post(t, ts.URL+"/api/v2/jobs", body, "same")
	if resp.StatusCode != 201 || resp.Header.Get("Idempotency-Replayed") != "true" || data != got {
		t.Fatalf("retry after: %d %s, first %s", resp.StatusCode, data, got)
	}
	if n := up.Count("/prompt"); n != 1 {
		t.Fatalf("ComfyUI got %d prompts", n)
	}
}

// TestEventStreamKeepAlive: a stream whose job waits in the queue gets a
// comment every KeepAlive, so it is not dropped as silent.
func TestEventStreamKeepAlive(t *testing.T) {
	up := comfytest.New()
	upts := httptest.NewServer(up)
	defer upts.Close()
	ts := newTestAPIOpts(t, upts.URL, t.TempDir(), Options{KeepAlive: 20 * time.Millisecond})
	_, blocker := post(t, ts.URL+"/api/v2/jobs", `{"workflow":{"1":{"class_type":"Wait","inputs":{}}}}`, "")
	_, queued := post(t, ts.URL+"/api/v2/jobs", `{"workflow":{"9":{"class_type":"SaveImage","inputs":{}}}}`, "")
	id := func(body string) string {
		_, rest, _ := strings.Cut(body, `"id":"`)
		v, _, _ := strings.Cut(rest, `"`)
		return v
	}
	resp, err := http.Get(ts.URL + "/api/v2/jobs/" + id(queued) + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var lines []string
	for sc.Scan() && len(lines) < 8 {
		lines = append(lines, sc.Text())
		if sc.Text() == ": keep-alive" {
			break
		}
	}
	if len(lines) < 3 || lines[0] != "event: status" || lines[len(lines)-1] != ": keep-alive" {
		t.Fatalf("stream: %q", lines)
	}
	up.Proceed(id(blocker))
}

// TestJobExpires: past its expires_at a job answers "expired", without its
// outputs; its record is removed a day later.
func TestJobExpires(t *testing.T) {
	up := comfytest.New()
	upts := httptest.NewServer(up)
	defer upts.Close()
	ts := newTestAPIOpts(t, upts.URL, t.TempDir(), Options{Retention: 3 * time.Second})
	resp, body := post(t, ts.URL+"/api/v2/jobs", `{"workflow":{"9":{"class_type":"SaveImage","inputs":{}}}}`, "")
	if resp.StatusCode != 201 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	_, rest, _ := strings.Cut(body, `"id":"`)
	id, _, _ := strings.Cut(rest, `"`)
	get := func() string {
		resp, err := http.Get(ts.URL + "/api/v2/jobs/" + id)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	comfytest.WaitFor(t, func() bool { return strings.Contains(get(), `"status":"succeeded"`) })
	if b := get(); !strings.Contains(b, `"outputs":[{`) {
		t.Fatalf("before expiry: %s", b)
	}
	comfytest.WaitFor(t, func() bool { return strings.Contains(get(), `"status":"expired"`) })
	if b := get(); !strings.Contains(b, `"outputs":[]`) {
		t.Fatalf("after expiry: %s", b)
	}
}

// lostAnswer lets ComfyUI take a prompt, then cuts the connection before
// its answer reaches comfyshim.
type lostAnswer struct{ next http.Handler }

func (l lostAnswer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/prompt" {
		l.next.ServeHTTP(httptest.NewRecorder(), r)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	l.next.ServeHTTP(w, r)
}

// TestLostAnswerThenRetry: when ComfyUI's answer to a submission is lost,
// the caller gets an error, and its retry with the same key finds the
// prompt ComfyUI took and replays it: one execution.
func TestLostAnswerThenRetry(t *testing.T) {
	up := comfytest.New()
	upts := httptest.NewServer(lostAnswer{up})
	defer upts.Close()
	ts := newTestAPI(t, upts.URL, t.TempDir())
	body := `{"workflow":{"9":{"class_type":"SaveImage","inputs":{}}}}`
	resp, data := post(t, ts.URL+"/api/v2/jobs", body, "lost")
	if resp.StatusCode != 500 || !strings.Contains(data, "upstream_error") {
		t.Fatalf("first: %d %s", resp.StatusCode, data)
	}
	if n := up.Count("/prompt"); n != 1 {
		t.Fatalf("ComfyUI got %d prompts", n)
	}
	resp, data = post(t, ts.URL+"/api/v2/jobs", body, "lost")
	if resp.StatusCode != 201 || resp.Header.Get("Idempotency-Replayed") != "true" || !strings.Contains(data, `"id":"`) {
		t.Fatalf("retry: %d %v %s", resp.StatusCode, resp.Header, data)
	}
	if n := up.Count("/prompt"); n != 1 {
		t.Fatalf("the retry ran the prompt again: ComfyUI got %d", n)
	}
}
