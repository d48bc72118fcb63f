package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

const key = "s3cret-key"

func TestAuthentication(t *testing.T) {
	up, ts := startUpstream(t)
	d := newComfyDir(t)
	d.add("output/a.png", "a", 1)
	cfg := d.config(ts.URL)
	cfg.APIKeys = []string{"other-key", key}
	s := startShim(t, cfg)

	get := func(path string, h http.Header) int {
		req := mustReq(t, "GET", s.URL+path, nil)
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := testClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 401 {
			if e := decode[ErrorResponse](t, body); e.Code != "UNAUTHORIZED" {
				t.Fatalf("401 body %s", body)
			}
		}
		return resp.StatusCode
	}
	cases := []struct {
		name, path string
		h          http.Header
		want       int
	}{
		{"forwarded, no key", "/api/system_stats", nil, 401},
		{"local, no key", "/api/tags", nil, 401},
		{"metrics, no key", "/metrics", nil, 401},
		{"wrong key", "/api/tags", http.Header{"X-Api-Key": {"nope"}}, 401},
		{"key prefix", "/api/tags", http.Header{"X-Api-Key": {key[:5]}}, 401},
		{"health is exempt", "/healthz", nil, 200},
		{"X-API-Key forwarded route", "/api/system_stats", http.Header{"X-Api-Key": {key}}, 200},
		{"X-API-Key local route", "/api/tags", http.Header{"X-Api-Key": {key}}, 200},
		{"bearer", "/api/echo", http.Header{"Authorization": {"Bearer " + key}}, 200},
		{"query token", "/api/view?filename=ComfyUI_1.png&token=" + key + "&type=output", nil, 200},
		{"second key", "/api/tags", http.Header{"X-Api-Key": {"other-key"}}, 200},
	}
	for _, tc := range cases {
		if got := get(tc.path, tc.h); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	// The key never reaches ComfyUI, in any of its forms.
	for _, seen := range up.Seen() {
		if seen.Header.Get("X-Api-Key") != "" || seen.Header.Get("Authorization") != "" || strings.Contains(seen.RawQuery, key) {
			t.Fatalf("key forwarded upstream: %s %s?%s %v", seen.Method, seen.RawPath, seen.RawQuery, seen.Header)
		}
	}
	if v, ok := up.Last("/api/view"); !ok || v.RawQuery != "filename=ComfyUI_1.png&type=output" {
		t.Fatalf("query after removing the token: %+v", v.RawQuery)
	}

	// Websockets authenticate with the query token.
	if _, resp, err := websocket.DefaultDialer.Dial(wsURL(s.URL, "/ws?clientId=x"), nil); err == nil || resp.StatusCode != 401 {
		t.Fatalf("websocket without key: %v", err)
	}
	conn, _, err := websocket.DefaultDialer.Dial(wsURL(s.URL, "/ws?clientId=x&token="+key), nil)
	if err != nil {
		t.Fatalf("websocket with token: %v", err)
	}
	conn.Close()
	if v, _ := up.Last("/ws"); v.RawQuery != "clientId=x" {
		t.Fatalf("websocket query upstream %q", v.RawQuery)
	}
}

func TestRepeatedAuthFailuresAreRateLimitedPerAddress(t *testing.T) {
	_, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	cfg.APIKeys = []string{key}
	s := startShimOpts(t, cfg, Options{FailureWindow: 2 * time.Second})
	from := func(ip string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	}
	attacker, other := from("127.0.0.2"), from("127.0.0.3")
	try := func(c *http.Client, k string) int {
		req := mustReq(t, "GET", s.URL+"/api/system_stats", nil)
		req.Header.Set("X-API-Key", k)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	codes := map[int]int{}
	for i := 0; i < 15; i++ {
		codes[try(attacker, "guess")]++
	}
	if codes[401] != 10 || codes[429] != 5 {
		t.Fatalf("failures answered %v, want 10×401 then 429", codes)
	}
	// A valid key is never refused, even from a blocked address.
	if got := try(attacker, key); got != 200 {
		t.Fatalf("blocked address with the right key: %d", got)
	}
	if got := try(other, key); got != 200 {
		t.Fatalf("another address was affected: %d", got)
	}
}

func TestKeyFileIsReloaded(t *testing.T) {
	_, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	cfg.APIKeysFile = filepath.Join(t.TempDir(), "keys")
	os.WriteFile(cfg.APIKeysFile, []byte("# comment\nfirst-key\n\n"), 0o600)
	s := startShim(t, cfg)
	status := func(k string) int {
		req := mustReq(t, "GET", s.URL+"/api/tags", nil)
		req.Header.Set("X-API-Key", k)
		return doJSON(t, req, nil).StatusCode
	}
	if status("first-key") != 200 || status("# comment") != 401 {
		t.Fatal("key file not used")
	}
	os.WriteFile(cfg.APIKeysFile, []byte("second-key-longer\n"), 0o600)
	// Poll slowly: each refusal counts towards the failure limit.
	for i := 0; status("second-key-longer") != 200; i++ {
		if i == 5 {
			t.Fatal("new key file not picked up")
		}
		time.Sleep(time.Second)
	}
	if status("first-key") != 401 {
		t.Fatal("removed key still accepted")
	}
}

func TestCORS(t *testing.T) {
	_, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	cfg.AllowedOrigins = []string{"http://app.example:5173"}
	cfg.APIKeys = []string{key}
	s := startShim(t, cfg)

	preflight := func(origin string) *http.Response {
		req := mustReq(t, "OPTIONS", s.URL+"/api/assets", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "x-api-key, content-type")
		return doJSON(t, req, nil)
	}
	resp := preflight("http://app.example:5173")
	h := resp.Header
	if resp.StatusCode != 204 || h.Get("Access-Control-Allow-Origin") != "http://app.example:5173" ||
		!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") || h.Get("Access-Control-Allow-Headers") != "x-api-key, content-type" ||
		!strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
		t.Fatalf("allowed preflight: %d %v", resp.StatusCode, h)
	}
	resp = preflight("http://evil.example")
	if resp.StatusCode != 403 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("refused preflight: %d %v", resp.StatusCode, resp.Header)
	}
	// The real request from the allowed origin.
	req := mustReq(t, "GET", s.URL+"/api/system_stats", nil)
	req.Header.Set("Origin", "http://app.example:5173")
	req.Header.Set("X-API-Key", key)
	resp = doJSON(t, req, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "http://app.example:5173" {
		t.Fatalf("cross-origin request: %d %v", resp.StatusCode, resp.Header)
	}
	// Nothing is open by default.
	req = mustReq(t, "GET", s.URL+"/api/system_stats", nil)
	req.Header.Set("X-API-Key", key)
	if resp = doJSON(t, req, nil); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS header on a request without Origin")
	}
}

func TestReadiness(t *testing.T) {
	up := startUpstreamOnPort(t, "127.0.0.1:0")
	d := newComfyDir(t)
	id := d.add("output/a.png", "a", 1)
	s := startShim(t, d.config(up.URL))
	ready := func() (int, map[string]any) {
		var body map[string]any
		resp := doJSON(t, mustReq(t, "GET", s.URL+"/readyz", nil), &body)
		return resp.StatusCode, body
	}
	if st, body := ready(); st != 200 || body["status"] != "ready" {
		t.Fatalf("%d %v", st, body)
	}
	if st, _ := call(t, "POST", s.URL+"/api/assets/"+id+"/tags", `{"tags":["x"]}`); st != 200 {
		t.Fatal(st)
	}

	// The sidecar breaks.
	os.WriteFile(d.tagsFile(), []byte(`{"version": 1, "assets": {`), 0o644)
	waitFor(t, func() bool { st, _ := ready(); return st == 503 })
	_, body := ready()
	if !strings.Contains(body["checks"].(map[string]any)["sidecar"].(map[string]any)["error"].(string), "line 1") {
		t.Fatalf("sidecar check %v", body)
	}
	os.WriteFile(d.tagsFile(), []byte(`{"version": 1, "assets": {}}`), 0o644)
	waitFor(t, func() bool { st, _ := ready(); return st == 200 })

	// The upstream stops.
	up.Close()
	waitFor(t, func() bool { st, _ := ready(); return st == 503 })
	_, body = ready()
	if body["checks"].(map[string]any)["upstream"].(map[string]any)["ok"] != false {
		t.Fatalf("upstream check %v", body)
	}
	if resp := doJSON(t, mustReq(t, "GET", s.URL+"/healthz", nil), nil); resp.StatusCode != 200 {
		t.Fatal("healthz must not depend on the upstream")
	}
}

func TestMetricsAfterTraffic(t *testing.T) {
	_, ts := startUpstream(t)
	d := newComfyDir(t)
	id := d.add("output/a.png", "a", 1)
	s := startShim(t, d.config(ts.URL))
	call(t, "POST", s.URL+"/api/assets/"+id+"/tags", `{"tags":["x"]}`)
	call(t, "GET", s.URL+"/api/system_stats", "")
	conn, _, err := websocket.DefaultDialer.Dial(wsURL(s.URL, "/ws?clientId=m"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.ReadMessage()
	// A hand edit of the file once the change is in it (it is compacted
	// from the journal within about a second), reloaded.
	waitFor(t, func() bool { data, _ := os.ReadFile(d.tagsFile()); return strings.Contains(string(data), `"x"`) })
	os.WriteFile(d.tagsFile()+".new", []byte(`{"version":1,"assets":{}}`), 0o644)
	os.Rename(d.tagsFile()+".new", d.tagsFile())

	var text string
	waitFor(t, func() bool {
		resp, err := testClient.Get(s.URL + "/metrics")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		text = string(b)
		// The index is rebuilt in the background after the reload.
		return strings.Contains(text, "comfyshim_sidecar_reloads_total 1") && strings.Contains(text, "comfyshim_tags 1\n")
	})
	for _, want := range []string{
		`comfyshim_http_requests_total{code="2xx",route="local"} 1`,
		`comfyshim_http_requests_total{code="2xx",route="forwarded"} 1`,
		`comfyshim_http_request_duration_seconds_bucket{code="2xx",route="forwarded",le="+Inf"} 1`,
		`comfyshim_websockets_open 1`,
		`comfyshim_upstream_errors_total 0`,
		`comfyshim_sidecar_reload_failures_total 0`,
		`comfyshim_sidecar_write_duration_seconds_count 1`,
		`comfyshim_assets 1`,
		`comfyshim_tags 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// upstreamServer is a fake ComfyUI that a test can stop.
type upstreamServer struct {
	URL string
	srv *http.Server
}

func (u *upstreamServer) Close() { _ = u.srv.Close() }

func startUpstreamOnPort(t *testing.T, addr string) *upstreamServer {
	t.Helper()
	up, _ := startUpstream(t)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: up, ReadHeaderTimeout: time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return &upstreamServer{URL: "http://" + ln.Addr().String(), srv: srv}
}
