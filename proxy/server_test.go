package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestShutdownLetsInFlightRequestsFinish(t *testing.T) {
	up, ts := startUpstream(t)
	s := startShim(t, testConfig(t, ts.URL))

	ws, _, err := websocket.DefaultDialer.Dial(wsURL(s.URL, "/ws?clientId=sd"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()

	type result struct {
		body string
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		resp, err := http.Get(s.URL + "/block")
		if err != nil {
			inflight <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		inflight <- result{string(b), err}
	}()
	waitFor(t, func() bool { _, ok := up.Last("/block"); return ok })

	stopped := make(chan error, 1)
	go func() { stopped <- s.stop() }()

	// The websocket is closed at once: ComfyUI's socket never ends by itself.
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("websocket still open during shutdown")
			}
			break
		}
	}
	// New connections are refused while the in-flight request runs.
	waitFor(t, func() bool {
		c, err := net.Dial("tcp", s.Host)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-stopped:
		t.Fatalf("Serve returned (%v) before the in-flight request finished", err)
	default:
	}

	up.Release()
	r := <-inflight
	if r.err != nil || r.body != "released" {
		t.Fatalf("in-flight request: %q %v", r.body, r.err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func TestAccessLogIsStructured(t *testing.T) {
	_, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	var buf syncBuffer
	srv, err := New(cfg, Options{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = http.Serve(ln, srv.Handler()) }()
	defer ln.Close()

	resp, err := http.Get("http://" + ln.Addr().String() + "/api/system_stats?x=1")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	var line map[string]any
	waitFor(t, func() bool {
		for _, l := range strings.Split(buf.String(), "\n") {
			if json.Unmarshal([]byte(l), &line) == nil && line["msg"] == "request" {
				return true
			}
		}
		return false
	})
	if line["method"] != "GET" || line["path"] != "/api/system_stats" || line["status"] != float64(200) ||
		line["bytes"] != float64(n) || line["route"] != "forwarded" || line["duration"] == nil {
		t.Fatalf("access log line %v", line)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
