package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium finds the browser the browser tests drive (Debian's chromium;
// .ci/run installs it). CHROMIUM names another.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatal("the browser tests need Chromium: apt-get install chromium (.ci/run installs it), or set CHROMIUM")
	return ""
}

// startBrowser runs one headless Chromium for the test; fresh gives a new
// browser context in it (its own cookies, like a new profile).
func startBrowser(t *testing.T) (fresh func() context.Context) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	return func() context.Context {
		ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
		ctx, cancelT := context.WithTimeout(ctx, time.Minute) // a stuck page ends the test with an error, not a hang
		t.Cleanup(func() { cancelT(); cancel() })
		return ctx
	}
}

type appResult struct {
	Script        bool   `json:"script"`
	Fetch         any    `json:"fetch"`
	CookieVisible string `json:"cookieVisible"`
	Img           int    `json:"img"`
	WS            string `json:"ws"`
}

// appResultIn waits for the fake web app's report.
func appResultIn(t *testing.T, ctx context.Context, what string) (appResult, string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](`!!document.getElementById('result') && document.getElementById('result').textContent !== 'pending'`))
	if err != nil {
		t.Fatalf("%s: the app did not report: %v", what, err)
	}
	text, err := chromedp.Run(ctx, chromedp.Text("#result"))
	if err != nil {
		t.Fatal(err)
	}
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	var r appResult
	if err := json.Unmarshal([]byte(text), &r); err != nil {
		t.Fatalf("%s: %q: %v", what, text, err)
	}
	return r, loc
}

func checkApp(t *testing.T, what string, r appResult, loc string) {
	t.Helper()
	if !r.Script || r.Fetch != float64(200) || r.Img != 1 || r.WS != "status" {
		t.Errorf("%s: the web app did not work through comfyshim: %+v", what, r)
	}
	if strings.Contains(r.CookieVisible, sessionCookie) {
		t.Errorf("%s: document.cookie shows the session: %q", what, r.CookieVisible)
	}
	if strings.Contains(loc, "token") || strings.Contains(loc, key) {
		t.Errorf("%s: the key stayed in the address: %s", what, loc)
	}
}

// The stock-web-app case with keys on, in a real browser: sign in once
// through the page and once through ?token=, then the app's scripts,
// fetches, images and websocket work with no key anywhere; a fresh browser
// gets nothing; another origin cannot post with the session.
func TestBrowserUsesTheWebAppAfterSignIn(t *testing.T) {
	fresh := startBrowser(t)
	up, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	cfg.APIKeys = []string{key}
	s := startShim(t, cfg)

	// Through the sign-in page.
	byPage := fresh()
	if err := chromedp.Do(byPage,
		chromedp.Navigate(s.URL+"/"),
		chromedp.WaitVisible("#key"),
		chromedp.SendKeys("#key", key),
		chromedp.Submit("#key"),
		chromedp.WaitVisible("#result"), // the app's page, after the redirect
	); err != nil {
		t.Fatal(err)
	}
	r, loc := appResultIn(t, byPage, "sign-in page")
	checkApp(t, "sign-in page", r, loc)

	// Through ?token= on the page's address.
	byToken := fresh()
	if err := chromedp.Do(byToken, chromedp.Navigate(s.URL+"/?token="+key)); err != nil {
		t.Fatal(err)
	}
	r, loc = appResultIn(t, byToken, "?token=")
	checkApp(t, "?token=", r, loc)

	// ComfyUI never saw a key or the session.
	for _, seen := range up.Seen() {
		if strings.Contains(seen.RawQuery, key) || strings.Contains(seen.Header.Get("Cookie"), sessionCookie) || seen.Header.Get("Authorization") != "" {
			t.Fatalf("credential forwarded: %s %s %v", seen.RawPath, seen.RawQuery, seen.Header)
		}
	}

	// A fresh browser gets the sign-in page, and its fetches get nothing.
	stranger := fresh()
	if err := chromedp.Do(stranger, chromedp.Navigate(s.URL+"/app.js")); err != nil {
		t.Fatal(err)
	}
	hasForm, err := chromedp.Run(stranger, chromedp.Evaluate[bool](`!!document.querySelector('form[action="/signin"]')`))
	if err != nil || !hasForm {
		t.Fatal("a fresh browser was not asked to sign in")
	}
	// From a page of comfyshim's own origin that needs no key: /healthz.
	if err := chromedp.Do(stranger, chromedp.Navigate(s.URL+"/healthz")); err != nil {
		t.Fatal(err)
	}
	fetchStatus, err := chromedp.Run(stranger, chromedp.Evaluate[int](`fetch('/api/system_stats').then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if fetchStatus != 401 {
		t.Fatalf("fetch from a fresh browser: %d", fetchStatus)
	}

	// Another origin's page cannot ride on the signed-in session.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(`<!doctype html><pre id="result">pending</pre><script>
fetch('` + s.URL + `/api/prompt', {method: 'POST', credentials: 'include', body: '{"prompt":{}}'})
  .then(r => 'status ' + r.status, e => 'blocked: ' + e)
  .then(t => { document.getElementById('result').textContent = t; });
</script>`))
	}))
	defer evil.Close()
	if err := chromedp.Do(byPage,
		chromedp.Navigate(evil.URL+"/"),
		chromedp.Poll[chromedp.Void](`document.getElementById('result').textContent !== 'pending'`),
	); err != nil {
		t.Fatal(err)
	}
	outcome, err := chromedp.Run(byPage, chromedp.Text("#result"))
	if err != nil {
		t.Fatal(err)
	}
	for _, seen := range up.Seen() {
		if seen.Method == "POST" && strings.HasSuffix(seen.RawPath, "/prompt") {
			t.Fatalf("a cross-origin page posted /prompt with the session (%s)", outcome)
		}
	}
	if !strings.HasPrefix(outcome, "blocked") {
		t.Fatalf("cross-origin fetch: %s", outcome)
	}
}

// TestBrowserAssetPanel: a page in Chromium uses comfyshim's asset API the
// way the web app's asset panels do: lists checkpoints by tag, pages by
// cursor, uploads a drawn PNG and shows it by its preview_url, renames it
// with PUT and deletes it.
func TestBrowserAssetPanel(t *testing.T) {
	up, ts := startUpstream(t)
	d := newComfyDir(t)
	up.InputDir = d.Folder("input")
	for i, name := range []string{"b.safetensors", "a.safetensors", "sub/c.ckpt"} {
		d.add("models/checkpoints/"+name, "w", i)
	}
	d.add("models/loras/l.safetensors", "l", 5)
	s := startShim(t, d.config(ts.URL))
	ctx := startBrowser(t)()
	if _, err := chromedp.Run(ctx, chromedp.Navigate(s.URL+"/asset-panel.html")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById('result').textContent !== 'pending'`)); err != nil {
		t.Fatal(err)
	}
	text, err := chromedp.Run(ctx, chromedp.Text("#result"))
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Models  []string `json:"models"`
		Upload  []any    `json:"upload"`
		Img     int      `json:"img"`
		Rename  []any    `json:"rename"`
		Deleted int      `json:"deleted"`
		After   int      `json:"after"`
		Error   string   `json:"error"`
	}
	if err := json.Unmarshal([]byte(text), &out); err != nil {
		t.Fatalf("%v: %s", err, text)
	}
	if out.Error != "" || strings.Join(out.Models, ",") != "a.safetensors,b.safetensors,sub/c.ckpt" ||
		len(out.Upload) != 3 || out.Upload[0] != 201.0 || out.Upload[1] != "drawn.png" || out.Upload[2] != true || out.Img != 3 ||
		len(out.Rename) != 2 || out.Rename[0] != 200.0 || out.Rename[1] != "Renamed drawing" || out.Deleted != 204 || out.After != 404 {
		t.Fatalf("the page saw %s", text)
	}
	if entries, _ := os.ReadDir(d.Folder("input")); len(entries) != 0 {
		t.Fatalf("the deleted upload left %d files in input/", len(entries))
	}
}
