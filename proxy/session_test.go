package proxy

import (
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSessionCookieValues(t *testing.T) {
	ss := &sessions{secret: []byte("0123456789abcdef0123456789abcdef"), lifetime: time.Hour}
	fp := ss.fingerprint([32]byte{1})
	now := time.Unix(1_800_000_000, 0)
	v := ss.issue(fp, now)
	if got, ok := ss.check(v, now.Add(59*time.Minute)); !ok || got != fp {
		t.Fatal("fresh cookie refused")
	}
	if _, ok := ss.check(v, now.Add(time.Hour)); ok {
		t.Fatal("expired cookie accepted")
	}
	other := &sessions{secret: []byte("another secret of thirty-two b."), lifetime: time.Hour}
	if _, ok := other.check(v, now); ok {
		t.Fatal("cookie accepted under another secret")
	}
	for _, bad := range []string{"", "v1.", "v1.x.y", v + "A", strings.Replace(v, "v1.", "v2.", 1), v[:len(v)-2]} {
		if _, ok := ss.check(bad, now); ok {
			t.Errorf("tampered cookie %q accepted", bad)
		}
	}
	// Tamper with the expiry inside the payload.
	parts := strings.Split(v, ".")
	parts[1] = "AAAAAAAA" + parts[1][8:]
	if _, ok := ss.check(strings.Join(parts, "."), now); ok {
		t.Fatal("payload tampering accepted")
	}
}

func TestLocalTarget(t *testing.T) {
	for in, want := range map[string]string{
		"/":                     "/",
		"/a/b?x=1":              "/a/b?x=1",
		"/a?token=k&x=1":        "/a?x=1",
		"/a?token=k":            "/a",
		"//evil.example/":       "/",
		"/\\evil.example":       "/",
		"https://evil.example/": "/",
		"":                      "/",
		"javascript:alert(1)":   "/",
	} {
		if got := localTarget(in); got != want {
			t.Errorf("localTarget(%q) = %q, want %q", in, got, want)
		}
	}
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func sessionFrom(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			return c
		}
	}
	t.Fatalf("no session cookie in %v", resp.Header)
	return nil
}

func TestBrowserSignInFlow(t *testing.T) {
	up, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	cfg.APIKeysFile = filepath.Join(t.TempDir(), "keys")
	os.WriteFile(cfg.APIKeysFile, []byte("alice:alice-key\nshared-key\n"), 0o600)
	s := startShimOpts(t, cfg, Options{KeyFileInterval: 10 * time.Millisecond, FailureWindow: 2 * time.Second})
	page := func(path string, cookie *http.Cookie) *http.Response {
		req := mustReq(t, "GET", s.URL+path, nil)
		req.Header.Set("Accept", "text/html,application/xhtml+xml")
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	// A page without a credential gets the sign-in page; an API client JSON.
	req := mustReq(t, "GET", s.URL+"/", nil)
	req.Header.Set("Accept", "text/html")
	st, body := status(t, testClient, req)
	if st != 401 || !strings.Contains(string(body), `action="/signin"`) || strings.Contains(string(body), "<script") {
		t.Fatalf("page without key: %d %s", st, body)
	}
	if st, body := status(t, testClient, mustReq(t, "GET", s.URL+"/api/system_stats", nil)); st != 401 || decode[ErrorResponse](t, body).Code != "UNAUTHORIZED" {
		t.Fatalf("API client without key: %d %s", st, body)
	}
	signIn := func(k, next string) *http.Response {
		resp, err := noRedirect.PostForm(s.URL+"/signin", url.Values{"key": {k}, "next": {next}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := signIn("wrong", "/"); resp.StatusCode != 401 || len(resp.Cookies()) != 0 {
		t.Fatalf("wrong key: %d", resp.StatusCode)
	}
	resp := signIn("shared-key", "/api/system_stats?x=1")
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/api/system_stats?x=1" {
		t.Fatalf("sign-in: %d %v", resp.StatusCode, resp.Header)
	}
	c := sessionFrom(t, resp)
	if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Secure || c.MaxAge != int(cfg.SessionLifetime.Seconds()) {
		t.Fatalf("cookie attributes %+v", c)
	}
	if strings.Contains(c.Value, "shared-key") {
		t.Fatal("cookie reveals the key")
	}
	// The cookie authenticates fetches and is never forwarded.
	req = mustReq(t, "GET", s.URL+"/api/echo", nil)
	req.AddCookie(c)
	req.AddCookie(&http.Cookie{Name: "comfy_theme", Value: "dark"})
	if st, _ := status(t, testClient, req); st != 200 {
		t.Fatalf("cookie request: %d", st)
	}
	seen, _ := up.Last("/api/echo")
	if got := seen.Header.Get("Cookie"); got != "comfy_theme=dark" {
		t.Fatalf("upstream Cookie %q", got)
	}
	// ?token= on a page signs in and drops the token from the address.
	resp = page("/some/page?a=1&token=alice-key&b=2", nil)
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/some/page?a=1&b=2" {
		t.Fatalf("token sign-in: %d %v", resp.StatusCode, resp.Header)
	}
	alice := sessionFrom(t, resp)
	// A key bound to a user acts as that user, whatever the client says.
	req = mustReq(t, "GET", s.URL+"/api/echo", nil)
	req.AddCookie(alice)
	req.Header.Set("Comfy-User", "bob")
	status(t, testClient, req)
	if seen, _ := up.Last("/api/echo"); seen.Header.Values("Comfy-User")[0] != "alice" || len(seen.Header.Values("Comfy-User")) != 1 {
		t.Fatalf("comfy-user %q", seen.Header.Values("Comfy-User"))
	}
	req = mustReq(t, "GET", s.URL+"/api/echo", nil)
	req.Header.Set("X-API-Key", "shared-key")
	req.Header.Set("Comfy-User", "bob")
	status(t, testClient, req)
	if seen, _ := up.Last("/api/echo"); seen.Header.Get("Comfy-User") != "bob" {
		t.Fatalf("unbound key changed comfy-user: %q", seen.Header.Get("Comfy-User"))
	}
	// Tampered cookies get nothing.
	if st := page("/", &http.Cookie{Name: sessionCookie, Value: c.Value + "x"}).StatusCode; st != 401 {
		t.Fatalf("tampered cookie: %d", st)
	}
	// Removing a key revokes the sessions made from it.
	os.WriteFile(cfg.APIKeysFile, []byte("shared-key\n"), 0o600)
	waitFor(t, func() bool { return page("/", alice).StatusCode == 401 })
	if st := page("/", c).StatusCode; st == 401 {
		t.Fatal("the other key's session was revoked too")
	}
	// Sign-out clears the cookie.
	req = mustReq(t, "POST", s.URL+"/signout", nil)
	req.AddCookie(c)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cleared := sessionFrom(t, resp); resp.StatusCode != 303 || cleared.MaxAge >= 0 || cleared.Value != "" {
		t.Fatalf("sign-out: %d %+v", resp.StatusCode, cleared)
	}
	// Visits without any credential never lock the address out; wrong keys do.
	for i := 0; i < 15; i++ {
		page("/", nil)
	}
	if resp := signIn("shared-key", "//evil.example/x"); resp.StatusCode != 303 || resp.Header.Get("Location") != "/" {
		t.Fatalf("after keyless visits: %d %v", resp.StatusCode, resp.Header.Get("Location"))
	}
	codes := map[int]int{}
	for i := 0; i < 11; i++ {
		codes[signIn("wrong", "/").StatusCode]++
	}
	if codes[401] != 9 || codes[429] != 2 { // with the wrong key tried first, ten failures in all

		t.Fatalf("wrong keys on the sign-in page: %v", codes)
	}
}

// Behind a trusted https proxy the cookie is Secure.
func TestSessionCookieSecureBehindHTTPSProxy(t *testing.T) {
	_, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	cfg.APIKeys = []string{key}
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	s := startShim(t, cfg)
	req := mustReq(t, "GET", s.URL+"/?token="+key, nil)
	req.Header.Set("Accept", "text/html")
	req.Header.Set("X-Forwarded-Proto", "https")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if c := sessionFrom(t, resp); !c.Secure {
		t.Fatalf("cookie over https not Secure: %+v", c)
	}
}
