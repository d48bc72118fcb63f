package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/comfyshim/comfyshim/proxy/internal/comfytest"
)

func wsURL(base, path string) string { return "ws" + strings.TrimPrefix(base, "http") + path }

// TestWorkflowRoundTrip runs what the ComfyUI frontend does for one job:
// open /ws, queue a prompt, follow the socket to completion (text and binary
// frames), read the history and download the image.
func TestWorkflowRoundTrip(t *testing.T) {
	up, ts := startUpstream(t)
	s := startShim(t, testConfig(t, ts.URL))

	for _, prefix := range []string{"", "/api"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			clientID := "client-" + strings.Trim(prefix, "/")
			conn, resp, err := websocket.DefaultDialer.Dial(wsURL(s.URL, prefix+"/ws?clientId="+clientID), nil)
			if err != nil {
				t.Fatalf("dial: %v (resp %v)", err, resp)
			}
			defer conn.Close()

			var status struct {
				Type string `json:"type"`
				Data struct {
					Sid string `json:"sid"`
				} `json:"data"`
			}
			if err := conn.ReadJSON(&status); err != nil || status.Type != "status" || status.Data.Sid != clientID {
				t.Fatalf("first message %+v, err %v", status, err)
			}
			if err := conn.WriteJSON(map[string]any{"type": "feature_flags", "data": map[string]bool{"supports_preview_metadata": true}}); err != nil {
				t.Fatal(err)
			}
			var flags struct{ Type string }
			if err := conn.ReadJSON(&flags); err != nil || flags.Type != "feature_flags" {
				t.Fatalf("feature flags answer %+v, %v", flags, err)
			}

			body := `{"prompt":{"9":{"class_type":"SaveImage","inputs":{}}},"client_id":"` + clientID + `"}`
			var queued struct {
				PromptID string `json:"prompt_id"`
				Number   int    `json:"number"`
			}
			r := doJSON(t, mustReq(t, "POST", s.URL+prefix+"/prompt", strings.NewReader(body)), &queued)
			if r.StatusCode != 200 || queued.PromptID == "" {
				t.Fatalf("POST /prompt: %d %+v", r.StatusCode, queued)
			}

			var sawPreview, sawSuccess bool
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			for !sawSuccess {
				kind, data, err := conn.ReadMessage()
				if err != nil {
					t.Fatalf("reading job messages: %v", err)
				}
				if kind == websocket.BinaryMessage {
					if binary.BigEndian.Uint32(data) != 1 || binary.BigEndian.Uint32(data[4:]) != 2 || !bytes.Equal(data[8:], comfytest.PreviewPNG) {
						t.Fatalf("preview frame corrupted: %q", data)
					}
					sawPreview = true
					continue
				}
				var m struct {
					Type string `json:"type"`
					Data struct {
						PromptID string `json:"prompt_id"`
					} `json:"data"`
				}
				if err := json.Unmarshal(data, &m); err != nil {
					t.Fatalf("text frame not JSON: %q", data)
				}
				if m.Type == "status" {
					continue // queue size, broadcast to every socket
				}
				if m.Data.PromptID != queued.PromptID {
					t.Fatalf("message for another prompt: %s", data)
				}
				sawSuccess = m.Type == "execution_success"
			}
			if !sawPreview {
				t.Fatal("no binary preview frame arrived")
			}

			var hist map[string]struct {
				Outputs map[string]struct {
					Images []struct{ Filename, Subfolder, Type string }
				}
			}
			// ComfyUI files the prompt in its history just after
			// execution_success; a client polls.
			comfytest.WaitFor(t, func() bool {
				doJSON(t, mustReq(t, "GET", s.URL+prefix+"/history/"+queued.PromptID, nil), &hist)
				return len(hist) > 0
			})
			imgs := hist[queued.PromptID].Outputs["9"].Images
			if len(imgs) != 1 {
				t.Fatalf("history: %+v", hist)
			}
			resp, err = testClient.Get(s.URL + prefix + "/view?filename=" + imgs[0].Filename + "&type=output&subfolder=")
			if err != nil {
				t.Fatal(err)
			}
			img, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want, _ := up.Output(imgs[0].Filename)
			if resp.StatusCode != 200 || len(want) == 0 || !bytes.Equal(img, want) || resp.Header.Get("Content-Type") != "image/png" {
				t.Fatalf("/view: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), img)
			}
		})
	}
}

func TestPathQueryAndMethodPreserved(t *testing.T) {
	up, ts := startUpstream(t)
	s := startShim(t, testConfig(t, ts.URL))
	cases := []struct {
		method, path, query string
	}{
		{"GET", "/api/userdata/workflows%2Fmy%20flow.json", ""},
		{"POST", "/api/userdata/workflows%2Fsub%2Fa.json", "overwrite=true&full_info=true"},
		{"DELETE", "/userdata/a%2Fb%2Fc.json", ""},
		{"GET", "/api/view", "filename=x%2Fy.png&type=output&subfolder=a%2Fb&x=%E2%9C%93&x=2"},
		{"GET", "/api/system_stats/", ""}, // trailing slash: forwarded as sent, never redirected
		{"PATCH", "/api/echo", "a=1;b=2"},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			u := s.URL + tc.path
			if tc.query != "" {
				u += "?" + tc.query
			}
			resp, err := testClient.Do(mustReq(t, tc.method, u, strings.NewReader("body")))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode >= 300 && resp.StatusCode < 400 {
				t.Fatalf("redirected: %d", resp.StatusCode)
			}
			got, ok := up.Last(tc.path)
			if !ok {
				t.Fatalf("upstream never saw raw path %s; saw %+v", tc.path, up.Seen())
			}
			if got.Method != tc.method || got.RawQuery != tc.query {
				t.Fatalf("upstream saw %s ?%s, want %s ?%s", got.Method, got.RawQuery, tc.method, tc.query)
			}
		})
	}
}

func TestUpstreamStatusAndBodyPassThrough(t *testing.T) {
	_, ts := startUpstream(t)
	s := startShim(t, testConfig(t, ts.URL))
	resp, err := testClient.Get(s.URL + "/api/no-such-route")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// ComfyUI's own 404 has an empty body: comfyshim must not put its JSON
	// error in its place.
	if resp.StatusCode != 404 || len(body) != 0 {
		t.Fatalf("want upstream's own 404, got %d %q", resp.StatusCode, body)
	}
	var bad map[string]any
	r := doJSON(t, mustReq(t, "POST", s.URL+"/prompt", strings.NewReader(`{}`)), &bad)
	if r.StatusCode != 400 || bad["error"] == nil {
		t.Fatalf("upstream 400 not passed through: %d %v", r.StatusCode, bad)
	}
}

func TestForwardingHeaders(t *testing.T) {
	up, ts := startUpstream(t)
	s := startShim(t, testConfig(t, ts.URL))
	req := mustReq(t, "GET", s.URL+"/api/echo", nil)
	req.Header.Set("X-Forwarded-For", "6.6.6.6") // a client's claim, not trusted
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "drop me")
	req.Header.Set("Comfy-User", "alice") // --multi-user selects the user with it
	doJSON(t, req, nil)
	got, ok := up.Last("/api/echo")
	if !ok {
		t.Fatal("not forwarded")
	}
	h := got.Header
	if h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("X-Forwarded-Proto") != "http" || h.Get("X-Forwarded-Host") != s.Host {
		t.Fatalf("forwarded headers: for=%q proto=%q host=%q", h.Get("X-Forwarded-For"), h.Get("X-Forwarded-Proto"), h.Get("X-Forwarded-Host"))
	}
	if h.Get("X-Hop") != "" {
		t.Fatal("hop-by-hop header named in Connection was forwarded")
	}
	if h.Get("Comfy-User") != "alice" {
		t.Fatal("comfy-user header lost")
	}
	if got.Host != strings.TrimPrefix(ts.URL, "http://") {
		t.Fatalf("upstream Host = %q", got.Host)
	}
}

func TestLargeDownloadStreamsWithFlatMemory(t *testing.T) {
	const size = 1 << 30
	_, ts := startUpstream(t)
	s := startShim(t, testConfig(t, ts.URL))

	want := sha256.New()
	if _, err := io.Copy(want, comfytest.Pattern(size)); err != nil {
		t.Fatal(err)
	}
	stop := heapPeak()
	resp, err := testClient.Get(fmt.Sprintf("%s/api/view?filename=big-%d.bin&type=output", s.URL, size))
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	growth := stop()
	if err != nil || n != size {
		t.Fatalf("read %d bytes, err %v", n, err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("downloaded bytes differ")
	}
	t.Logf("heap growth during 1 GiB download: %d KiB", growth>>10)
	if growth > 64<<20 {
		t.Fatalf("heap grew by %d MiB while streaming: the body is being buffered", growth>>20)
	}
}

func TestFirstByteBeforeUpstreamFinishes(t *testing.T) {
	// A stream of unknown length, and an event stream that declares its
	// length: each part reaches the client while the upstream still waits.
	for _, tc := range []struct{ file, first, rest string }{
		{"slow.bin", "first-chunk", "-rest"},
		{"events.sse", "data: first\n\n", "data: rest\n\n"},
	} {
		up, ts := startUpstream(t)
		s := startShim(t, testConfig(t, ts.URL))
		resp, err := testClient.Get(s.URL + "/view?filename=" + tc.file)
		if err != nil {
			t.Fatal(err)
		}
		first := make([]byte, len(tc.first))
		if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != tc.first {
			t.Fatalf("%s: first part %q %v", tc.file, first, err)
		}
		up.Release() // the upstream finishes only now
		rest, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(rest) != tc.rest {
			t.Fatalf("%s: rest %q %v", tc.file, rest, err)
		}
	}
}

func TestLargeUploadStreams(t *testing.T) {
	const size = 300 << 20
	_, ts := startUpstream(t)
	s := startShim(t, testConfig(t, ts.URL))

	want := sha256.New()
	if _, err := io.Copy(want, comfytest.Pattern(size)); err != nil {
		t.Fatal(err)
	}
	body, contentType := streamedMultipart([][2]string{{"overwrite", "true"}}, "image", "big.png", size)
	stop := heapPeak()
	req := mustReq(t, "POST", s.URL+"/api/upload/image", body)
	req.Header.Set("Content-Type", contentType)
	var out struct {
		Name      string `json:"name"`
		SHA256    string `json:"sha256"`
		Size      int64  `json:"size"`
		Overwrite string `json:"overwrite"`
	}
	resp := doJSON(t, req, &out)
	growth := stop()
	if resp.StatusCode != 200 || out.Size != size || out.Name != "big.png" || out.Overwrite != "true" {
		t.Fatalf("upload answer %d %+v", resp.StatusCode, out)
	}
	if out.SHA256 != hex.EncodeToString(want.Sum(nil)) {
		t.Fatal("uploaded bytes differ")
	}
	t.Logf("heap growth during 300 MiB upload: %d KiB", growth>>10)
	if growth > 64<<20 {
		t.Fatalf("heap grew by %d MiB while uploading: the body is being buffered", growth>>20)
	}
}

func TestUpstreamDownIs502JSON(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	s := startShim(t, testConfig(t, "http://"+addr))
	for _, path := range []string{"/api/system_stats", "/prompt"} {
		var e ErrorResponse
		resp := doJSON(t, mustReq(t, "GET", s.URL+path, nil), &e)
		if resp.StatusCode != http.StatusBadGateway || e.Code != "UPSTREAM_UNAVAILABLE" || e.Message == "" {
			t.Fatalf("%s: %d %+v", path, resp.StatusCode, e)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("content type %q", ct)
		}
	}
	_, _, err = websocket.DefaultDialer.Dial(wsURL(s.URL, "/ws"), nil)
	if !errors.Is(err, websocket.ErrBadHandshake) {
		t.Fatalf("websocket to a dead upstream: %v", err)
	}
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	up, ts := startUpstream(t)
	s := startShim(t, testConfig(t, ts.URL))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		resp, err := testClient.Do(mustReq(t, "GET", s.URL+"/api/block", nil).WithContext(ctx))
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	// Wait until the upstream holds the request, then hang up.
	waitFor(t, func() bool { _, ok := up.Last("/api/block"); return ok })
	cancel()
	select {
	case p := <-up.Cancelled:
		if p != "/api/block" {
			t.Fatalf("cancelled %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upstream request was not cancelled when the client left")
	}
	if err := <-errc; err == nil {
		t.Fatal("client call should have failed")
	}
}

func TestTruncatedUpstreamBodyReachesClientAsError(t *testing.T) {
	_, ts := startUpstream(t)
	s := startShim(t, testConfig(t, ts.URL))
	resp, err := testClient.Get(s.URL + "/abort")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatalf("a body cut by the upstream looked complete: %q", body)
	}
	if !strings.HasPrefix(string(body), "partial") {
		t.Fatalf("partial body lost: %q", body)
	}
}

func TestWebsocketFramesAndClosePropagation(t *testing.T) {
	up, ts := startUpstream(t)
	s := startShim(t, testConfig(t, ts.URL))

	dial := func(id string) *websocket.Conn {
		conn, _, err := websocket.DefaultDialer.Dial(wsURL(s.URL, "/api/ws?clientId="+id), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := conn.ReadMessage(); err != nil { // status
			t.Fatal(err)
		}
		return conn
	}

	conn := dial("a")
	payload := make([]byte, 64<<10)
	_, _ = io.ReadFull(comfytest.Pattern(int64(len(payload))), payload)
	for i := 0; i < 20; i++ {
		if err := conn.WriteMessage(websocket.BinaryMessage, payload); err != nil {
			t.Fatal(err)
		}
		kind, got, err := conn.ReadMessage()
		if err != nil || kind != websocket.BinaryMessage || !bytes.Equal(got, payload) {
			t.Fatalf("binary echo %d: kind %d len %d err %v", i, kind, len(got), err)
		}
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"echo","data":"héllo"}`)); err != nil {
		t.Fatal(err)
	}
	if _, got, err := conn.ReadMessage(); err != nil || string(got) != `{"type":"echo","data":"héllo"}` {
		t.Fatalf("text echo %q %v", got, err)
	}

	// Client closes: the upstream's socket ends.
	_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))
	_, _, err := conn.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
		t.Fatalf("close handshake through the proxy: %v", err)
	}
	select {
	case id := <-up.WSClosed:
		if id != "a" {
			t.Fatalf("closed %q", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upstream socket stayed open after the client closed")
	}

	// Upstream closes: the client sees the close frame.
	conn = dial("b")
	defer conn.Close()
	up.CloseSockets()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err = conn.ReadMessage()
	if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure || ce.Text != "server stopping" {
		t.Fatalf("upstream close did not reach the client: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) { t.Helper(); comfytest.WaitFor(t, cond) }

// An idle websocket outlives every server timeout comfyshim has: ComfyUI
// sends nothing during a long step, and a cut socket loses the job's events.
func TestIdleWebsocketIsNotCut(t *testing.T) {
	_, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	cfg.ReadHeaderTimeout = 300 * time.Millisecond
	s := startShim(t, cfg)
	conn, _, err := websocket.DefaultDialer.Dial(wsURL(s.URL, "/ws?clientId=idle"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, _, err := conn.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * cfg.ReadHeaderTimeout) // several times the longest server timeout
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"echo"}`)); err != nil {
		t.Fatal(err)
	}
	if _, got, err := conn.ReadMessage(); err != nil || string(got) != `{"type":"echo"}` {
		t.Fatalf("after idling: %q %v", got, err)
	}
}

// TestEmptyUpstream404KeepsTheConnection: ComfyUI's empty-bodied 404 must
// reach the client as it is, leaving the keep-alive connection usable for
// the next request (a non-idempotent one is never retried by clients).
func TestEmptyUpstream404KeepsTheConnection(t *testing.T) {
	_, ts := startUpstream(t)
	s := startShim(t, testConfig(t, ts.URL))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	for n := 0; n < 200; n++ {
		resp, err := client.Do(mustReq(t, "GET", s.URL+"/api/nothing-here", strings.NewReader("body")))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || len(body) != 0 {
			t.Fatalf("404 answer %d %q", resp.StatusCode, body)
		}
		resp, err = client.Do(mustReq(t, "PATCH", s.URL+"/api/echo", strings.NewReader("body")))
		if err != nil {
			t.Fatalf("request %d after an empty 404: %v", n, err)
		}
		resp.Body.Close()
	}
}
