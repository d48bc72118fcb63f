package proxy

import (
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// clientFrom sends requests from a given loopback address.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

func status(t *testing.T, c *http.Client, req *http.Request) (int, []byte) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// A key file that becomes unusable never turns authentication off.
func TestKeyFileProblemsFailClosed(t *testing.T) {
	_, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	cfg.APIKeysFile = filepath.Join(t.TempDir(), "keys")
	os.WriteFile(cfg.APIKeysFile, []byte("good-key\n"), 0o600)
	logs := &syncBuffer{}
	s := startShimOpts(t, cfg, Options{
		KeyFileInterval: 10 * time.Millisecond,
		FailureWindow:   100 * time.Millisecond, // refused valid keys count as failures
		Logger:          slog.New(slog.NewTextHandler(logs, nil)),
	})
	get := func(path, k string) int {
		req := mustReq(t, "GET", s.URL+path, nil)
		if k != "" {
			req.Header.Set("X-API-Key", k)
		}
		return doJSON(t, req, nil).StatusCode
	}
	ready := func() (int, string) {
		var body map[string]any
		st := doJSON(t, mustReq(t, "GET", s.URL+"/readyz", nil), &body).StatusCode
		check, _ := body["checks"].(map[string]any)["api_keys"].(map[string]any)
		msg, _ := check["error"].(string)
		return st, msg
	}
	if get("/api/system_stats", "good-key") != 200 {
		t.Fatal("key not accepted")
	}
	breakages := []struct {
		name  string
		apply func()
	}{
		{"emptied", func() { os.WriteFile(cfg.APIKeysFile, nil, 0o600) }},
		{"comment only", func() { os.WriteFile(cfg.APIKeysFile, []byte("# rotated\n\n"), 0o600) }},
		{"deleted", func() { os.Remove(cfg.APIKeysFile) }},
		{"unreadable (a folder in its place)", func() { os.Remove(cfg.APIKeysFile); os.Mkdir(cfg.APIKeysFile, 0o700) }},
	}
	for _, b := range breakages {
		b.apply()
		waitFor(t, func() bool { st, _ := ready(); return st == 503 })
		for _, p := range []string{"/api/system_stats", "/api/tags", "/ws"} {
			if got := get(p, "good-key"); got != 401 && got != 429 {
				t.Fatalf("%s: %s answered %d, want 401 (or 429 once the failure limit is reached)", b.name, p, got)
			}
			if got := get(p, ""); got != 401 {
				t.Fatalf("%s: %s without key answered %d, want 401", b.name, p, got)
			}
		}
		if _, msg := ready(); !strings.Contains(msg, cfg.APIKeysFile) {
			t.Fatalf("%s: readyz does not name the key file: %q", b.name, msg)
		}
		// A valid file restores service.
		os.Remove(cfg.APIKeysFile)
		os.WriteFile(cfg.APIKeysFile, []byte("good-key\n"), 0o600)
		waitFor(t, func() bool { st, _ := ready(); return st == 200 })
		if get("/api/system_stats", "good-key") != 200 {
			t.Fatalf("%s: service not restored", b.name)
		}
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "API key file unusable") {
		t.Fatalf("no error logged:\n%s", logs.String())
	}
}

// A key file that is empty or unreadable at start stops the start.
func TestUnusableKeyFileStopsStart(t *testing.T) {
	_, ts := startUpstream(t)
	dir := t.TempDir()
	for name, content := range map[string]string{"empty": "", "comments": "# none yet\n"} {
		cfg := testConfig(t, ts.URL)
		cfg.APIKeysFile = filepath.Join(dir, name)
		os.WriteFile(cfg.APIKeysFile, []byte(content), 0o600)
		if srv, err := New(cfg, Options{Logger: testLogger(t)}); err == nil {
			srv.Close()
			t.Fatalf("%s key file accepted at start", name)
		} else if !strings.Contains(err.Error(), "holds no keys") {
			t.Fatalf("%s: %v", name, err)
		}
	}
	cfg := testConfig(t, ts.URL)
	cfg.APIKeysFile = filepath.Join(dir, "missing")
	if srv, err := New(cfg, Options{Logger: testLogger(t)}); err == nil {
		srv.Close()
		t.Fatal("missing key file accepted at start")
	}
}

// Every copy of a credential is removed before forwarding.
func TestEveryCredentialCopyIsStripped(t *testing.T) {
	up, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	cfg.APIKeys = []string{key}
	s := startShim(t, cfg)
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("me:"+key))
	cases := []struct {
		name  string
		query string
		h     http.Header
	}{
		{"header + bearer + token", "?a=1&token=" + key + "&b=2", http.Header{"X-Api-Key": {key}, "Authorization": {"Bearer " + key}}},
		{"bearer used, header copy is another key", "?a=1", http.Header{"X-Api-Key": {"stale-key"}, "Authorization": {"Bearer " + key}}},
		{"token used, bearer copy", "?a=1&token=" + key, http.Header{"Authorization": {"Bearer other"}}},
		{"token twice, one escaped name", "?%74oken=" + key + "&a=1&token=x", nil},
		{"basic auth", "?a=1", http.Header{"Authorization": {basic}}},
	}
	for _, tc := range cases {
		req := mustReq(t, "GET", s.URL+"/api/echo"+tc.query, nil)
		for k, v := range tc.h {
			req.Header[k] = v
		}
		if st, body := status(t, testClient, req); st != 200 {
			t.Fatalf("%s: %d %s", tc.name, st, body)
		}
		seen, _ := up.Last("/api/echo")
		if seen.Header.Get("X-Api-Key") != "" || seen.Header.Get("Authorization") != "" ||
			strings.Contains(seen.RawQuery, "oken") || strings.Contains(seen.RawQuery, key) {
			t.Fatalf("%s: credential forwarded: %s %v", tc.name, seen.RawQuery, seen.Header)
		}
		if seen.RawQuery != "a=1&b=2" && seen.RawQuery != "a=1" {
			t.Fatalf("%s: other parameters changed: %q", tc.name, seen.RawQuery)
		}
	}
}

// Preflights are answered by comfyshim and never forwarded; other OPTIONS
// requests need a key like any other.
func TestPreflightsAreNoBypass(t *testing.T) {
	up, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	cfg.APIKeys = []string{key}
	cfg.AllowedOrigins = []string{"http://app.example:5173"}
	s := startShim(t, cfg)
	options := func(path, origin string, preflight bool, k string) *http.Response {
		req := mustReq(t, "OPTIONS", s.URL+path, strings.NewReader(`{"prompt":{"9":{"class_type":"SaveImage","inputs":{}}}}`))
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if preflight {
			req.Header.Set("Access-Control-Request-Method", "POST")
		}
		if k != "" {
			req.Header.Set("X-API-Key", k)
		}
		return doJSON(t, req, nil)
	}
	if r := options("/api/prompt", "http://app.example:5173", true, ""); r.StatusCode != 204 || r.Header.Get("Access-Control-Allow-Origin") == "" {
		t.Fatalf("allowed preflight: %d %v", r.StatusCode, r.Header)
	}
	if r := options("/api/prompt", "", true, ""); r.StatusCode != 204 || r.Header.Get("Access-Control-Allow-Methods") != "" {
		t.Fatalf("preflight without origin: %d %v", r.StatusCode, r.Header)
	}
	if r := options("/api/prompt", "http://evil.example", true, ""); r.StatusCode == 204 || r.Header.Get("Access-Control-Allow-Origin") != "" || r.Header.Get("Access-Control-Allow-Methods") != "" {
		t.Fatalf("refused preflight: %d %v", r.StatusCode, r.Header)
	}
	if r := options("/api/prompt", "", false, ""); r.StatusCode != 401 {
		t.Fatalf("plain OPTIONS without key: %d", r.StatusCode)
	}
	for _, seen := range up.Seen() {
		if seen.Method == "OPTIONS" {
			t.Fatalf("OPTIONS forwarded without a valid key: %+v", seen)
		}
	}
	if r := options("/api/prompt", "", false, key); r.StatusCode == 401 {
		t.Fatal("plain OPTIONS with key refused")
	}
	if _, ok := up.Last("/api/prompt"); !ok {
		t.Fatal("OPTIONS with a valid key was not forwarded")
	}
}

// The failure limit never refuses a valid key and ignores keyless requests;
// once blocked, an address's guesses are paced.
func TestFailureLimitSparesValidKeysAndKeylessRequests(t *testing.T) {
	_, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	cfg.APIKeys = []string{key}
	window := 2 * time.Second // pace: 200 ms per guess while blocked
	s := startShimOpts(t, cfg, Options{FailureWindow: window})
	attacker, office := clientFrom("127.0.0.2"), clientFrom("127.0.0.3")
	try := func(c *http.Client, k string) int {
		req := mustReq(t, "GET", s.URL+"/api/system_stats", nil)
		if k != "" {
			req.Header.Set("X-API-Key", k)
		}
		st, _ := status(t, c, req)
		return st
	}
	// A browser tab without a key, reloading: never blocks its address.
	for i := 0; i < 25; i++ {
		if st := try(office, ""); st != 401 {
			t.Fatalf("keyless request %d: %d", i, st)
		}
	}
	if st := try(office, "wrong"); st != 401 {
		t.Fatalf("keyless requests counted as failures: a guess got %d", st)
	}
	codes := map[int]int{}
	for i := 0; i < 10; i++ {
		codes[try(attacker, "guess")]++
	}
	if codes[401] != 10 {
		t.Fatalf("first ten failures: %v", codes)
	}
	start := time.Now()
	for i := 0; i < 3; i++ {
		if st := try(attacker, "guess"); st != 429 {
			t.Fatalf("blocked guess: %d", st)
		}
	}
	if paced := time.Since(start); paced < 3*window/10 {
		t.Fatalf("3 blocked guesses took %v: not paced", paced)
	}
	if st := try(attacker, key); st != 200 {
		t.Fatalf("valid key from a blocked address: %d", st)
	}
	if st := try(office, key); st != 200 {
		t.Fatalf("another address affected: %d", st)
	}
}

func TestTrustedProxies(t *testing.T) {
	up, ts := startUpstream(t)
	d := newComfyDir(t)
	id := d.add("output/a.png", "a", 1)
	for _, trusted := range []bool{false, true} {
		cfg := d.config(ts.URL)
		cfg.TagsFile = filepath.Join(t.TempDir(), "tags.json")
		cfg.APIKeys = []string{key}
		cfg.AbsolutePreviewURLs = true // the scheme shows in absolute URLs
		if trusted {
			cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		}
		s := startShimOpts(t, cfg, Options{FailureWindow: 10 * time.Second})
		send := func(path, xff, k string) (int, []byte) {
			req := mustReq(t, "GET", s.URL+path, nil)
			req.Header.Set("X-Forwarded-For", xff)
			req.Header.Set("X-Forwarded-Proto", "https")
			req.Header.Set("X-API-Key", k)
			return status(t, clientFrom("127.0.0.1"), req)
		}
		_, body := send("/api/assets/"+id, "203.0.113.5", key)
		preview := decode[struct {
			PreviewURL string `json:"preview_url"`
		}](t, body).PreviewURL
		if want := map[bool]string{false: "http://", true: "https://"}[trusted]; !strings.HasPrefix(preview, want) {
			t.Errorf("trusted=%v: preview_url %q", trusted, preview)
		}
		send("/api/echo", "203.0.113.5", key)
		seen, _ := up.Last("/api/echo")
		wantXFF := map[bool]string{false: "127.0.0.1", true: "203.0.113.5, 127.0.0.1"}[trusted]
		if got := seen.Header.Get("X-Forwarded-For"); got != wantXFF {
			t.Errorf("trusted=%v: upstream X-Forwarded-For %q, want %q", trusted, got, wantXFF)
		}
		// Ten failures from one client behind the proxy.
		for i := 0; i < 10; i++ {
			send("/api/echo", "203.0.113.5", "guess")
		}
		st, _ := send("/api/echo", "203.0.113.6", "guess")
		if trusted && st != 401 {
			t.Errorf("behind a trusted proxy, another client was blocked: %d", st)
		}
		if !trusted && st != 429 {
			t.Errorf("untrusted peer's X-Forwarded-For was believed: %d", st)
		}
	}
}

func TestHostGuardStopsDNSRebinding(t *testing.T) {
	_, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	cfg.AllowedHosts = []string{"comfy.example.com"}
	s := startShim(t, cfg)
	_, port, _ := net.SplitHostPort(s.Host)
	cases := []struct {
		host string
		want int
	}{
		{s.Host, 200},
		{"localhost:" + port, 200},
		{"LOCALHOST.:" + port, 200},
		{"[::1]:" + port, 200},
		{"192.168.1.7:" + port, 200},
		{"comfy.example.com", 200},
		{"Comfy.Example.com:" + port, 200},
		{"attacker.example:" + port, 403},
		{"127.0.0.1.nip.io:" + port, 403},
		{"evil.comfy.example.com", 403},
	}
	for _, tc := range cases {
		req := mustReq(t, "POST", s.URL+"/api/prompt", strings.NewReader(`{"prompt":{"9":{"class_type":"SaveImage","inputs":{}}}}`))
		req.Host = tc.host
		req.Header.Set("Origin", "http://"+tc.host)
		st, body := status(t, testClient, req)
		if st != tc.want {
			t.Errorf("Host %s: %d %s", tc.host, st, body)
		}
		if st == 403 && decode[ErrorResponse](t, body).Code != "FORBIDDEN_HOST" {
			t.Errorf("Host %s: body %s", tc.host, body)
		}
	}
	h := http.Header{}
	h.Set("Host", "attacker.example:"+port)
	if _, resp, err := websocket.DefaultDialer.Dial(wsURL(s.URL, "/ws?clientId=x"), h); err == nil || resp.StatusCode != 403 {
		t.Fatalf("websocket with a rebinding host: %v", err)
	}
	// "*" opts out.
	cfg2 := testConfig(t, ts.URL)
	cfg2.AllowedHosts = []string{"*"}
	s2 := startShim(t, cfg2)
	req := mustReq(t, "GET", s2.URL+"/api/system_stats", nil)
	req.Host = "anything.example"
	if st, _ := status(t, testClient, req); st != 200 {
		t.Fatalf("allowed_hosts * refused: %d", st)
	}
}

// A person following a link from another site (or an SSO redirect) gets
// the page; cross-site fetches, writes and websockets are still refused.
func TestCrossSiteNavigationsPass(t *testing.T) {
	up, ts := startUpstream(t)
	s := startShim(t, testConfig(t, ts.URL))
	send := func(method, dest, mode string) int {
		req := mustReq(t, method, s.URL+"/api/system_stats", nil)
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		req.Header.Set("Sec-Fetch-Dest", dest)
		req.Header.Set("Sec-Fetch-Mode", mode)
		st, _ := status(t, testClient, req)
		return st
	}
	if st := send("GET", "document", "navigate"); st != 200 {
		t.Fatalf("cross-site navigation: %d", st)
	}
	if seen, _ := up.Last("/api/system_stats"); seen.Header.Get("Sec-Fetch-Site") != "" {
		t.Fatal("cross-site marker forwarded to ComfyUI, which would refuse it")
	}
	for _, tc := range [][3]string{
		{"POST", "document", "navigate"},
		{"GET", "empty", "cors"},
		{"GET", "image", "no-cors"},
		{"GET", "iframe", "navigate"},
	} {
		if st := send(tc[0], tc[1], tc[2]); st != 403 {
			t.Errorf("%v: %d, want 403", tc, st)
		}
	}
	h := http.Header{"Sec-Fetch-Site": {"cross-site"}, "Sec-Fetch-Mode": {"navigate"}, "Sec-Fetch-Dest": {"document"}}
	if _, resp, err := websocket.DefaultDialer.Dial(wsURL(s.URL, "/ws?clientId=x"), h); err == nil || resp.StatusCode != 403 {
		t.Fatalf("cross-site websocket: %v", err)
	}
}

// allow_unauthenticated mode warns on /readyz.
func TestUnprotectedModeWarns(t *testing.T) {
	_, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	cfg.Listen = "0.0.0.0:0"
	cfg.AllowUnauthenticated = true
	s := startShim(t, cfg)
	var body map[string]any
	doJSON(t, mustReq(t, "GET", s.URL+"/readyz", nil), &body)
	w, _ := body["warnings"].([]any)
	if len(w) != 1 || !strings.Contains(w[0].(string), "no API keys") {
		t.Fatalf("readyz %v", body)
	}
	cfg2 := testConfig(t, ts.URL)
	s2 := startShim(t, cfg2)
	body = nil
	doJSON(t, mustReq(t, "GET", s2.URL+"/readyz", nil), &body)
	if _, ok := body["warnings"]; ok {
		t.Fatalf("warning on loopback: %v", body)
	}
}

// Behind one address (an office NAT) with a guesser flooding it, a person
// whose key was valid from there before keeps working at once, while a key
// never seen from there waits its turn like any guess.
func TestKnownKeySkipsTheLine(t *testing.T) {
	_, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	cfg.APIKeys = []string{key}
	s := startShimOpts(t, cfg, Options{FailureWindow: 10 * time.Second}) // a blocked answer holds the line 1 s
	office := clientFrom("127.0.0.4")
	try := func(k string) int {
		req := mustReq(t, "GET", s.URL+"/api/system_stats", nil)
		req.Header.Set("X-API-Key", k)
		st, _ := status(t, office, req)
		return st
	}
	if try(key) != 200 {
		t.Fatal("key refused")
	}
	for i := 0; i < 10; i++ {
		try("guess")
	}
	var done atomic.Int32
	for i := 0; i < 4; i++ {
		go func() { try("guess"); done.Add(1) }()
	}
	waitFor(t, func() bool {
		v, ok := s.srv.limiter.byIP.Get("127.0.0.4")
		if !ok {
			return false
		}
		s.srv.limiter.mu.Lock()
		line := v.(*failures).line
		s.srv.limiter.mu.Unlock()
		if line == nil {
			return false
		}
		line.mu.Lock()
		defer line.mu.Unlock()
		return line.waiting >= 3
	})
	if st := try(key); st != 200 {
		t.Fatalf("known key while the address is blocked: %d", st)
	}
	if n := done.Load(); n >= 3 {
		t.Fatalf("the known key waited behind %d guesses", n)
	}
}
