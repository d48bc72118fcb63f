package proxy

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/comfyshim/comfyshim/config"
	"github.com/comfyshim/comfyshim/proxy/internal/comfytest"
)

// shim is a comfyshim listening on a real loopback port.
type shim struct {
	srv    *Server
	URL    string // http://127.0.0.1:port
	Host   string // 127.0.0.1:port
	cancel context.CancelFunc
	done   chan struct{} // closed when Serve returns
	err    error         // Serve's result, set before done is closed
}

// startUpstream runs the fake ComfyUI on a loopback port.
func startUpstream(t testing.TB) (*comfytest.Upstream, *httptest.Server) {
	t.Helper()
	up := comfytest.New()
	ts := httptest.NewServer(up)
	t.Cleanup(ts.Close)
	return up, ts
}

func testConfig(t testing.TB, upstream string) *config.Config {
	t.Helper()
	c := config.Default()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	c.Upstream = u
	c.Listen = "127.0.0.1:0"
	c.ShutdownGrace = 5 * time.Second
	c.TagsFile = t.TempDir() + "/tags.json"
	return &c
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// startShim serves cfg on a fresh loopback port until the test ends.
func startShim(t testing.TB, cfg *config.Config) *shim {
	t.Helper()
	return startShimOpts(t, cfg, Options{})
}

// startShimOpts is startShim with options (timings) of the test's choosing.
func startShimOpts(t testing.TB, cfg *config.Config, opts Options) *shim {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	srv, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &shim{srv: srv, URL: "http://" + ln.Addr().String(), Host: ln.Addr().String(), cancel: cancel, done: make(chan struct{})}
	go func() {
		s.err = srv.Serve(ctx, ln)
		close(s.done)
	}()
	t.Cleanup(func() {
		_ = s.stop()
		_ = srv.Close()
	})
	return s
}

// stop shuts the shim down, as SIGTERM does, and returns Serve's result.
func (s *shim) stop() error {
	s.cancel()
	<-s.done
	if err := s.srv.Close(); err != nil {
		return err
	}
	return s.err
}

var testClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}}

func doJSON(t *testing.T, req *http.Request, into any) *http.Response {
	t.Helper()
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if into != nil {
		if err := json.Unmarshal(body, into); err != nil {
			t.Fatalf("%s %s: status %d, body %q: %v", req.Method, req.URL, resp.StatusCode, body, err)
		}
	}
	return resp
}

func mustReq(t *testing.T, method, u string, body io.Reader) *http.Request {
	return comfytest.NewRequest(t, method, u, body)
}

// heapPeak samples the heap in use until stop is called and reports the
// largest growth over the starting value.
func heapPeak() (stop func() uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var mu sync.Mutex
	peak := base
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				mu.Lock()
				peak = max(peak, m.HeapInuse)
				mu.Unlock()
			}
		}
	}()
	return func() uint64 {
		close(quit)
		<-done
		mu.Lock()
		defer mu.Unlock()
		if peak < base {
			return 0
		}
		return peak - base
	}
}

// streamedMultipart is a multipart body written while it is read: fields
// (name, value pairs) first, then a file part of size pattern bytes, so a
// gigabyte upload costs the test no memory.
func streamedMultipart(fields [][2]string, fileField, fileName string, size int64) (io.Reader, string) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		var err error
		for _, f := range fields {
			if err == nil {
				err = mw.WriteField(f[0], f[1])
			}
		}
		var fw io.Writer
		if err == nil {
			fw, err = mw.CreateFormFile(fileField, fileName)
		}
		if err == nil {
			_, err = io.Copy(fw, comfytest.Pattern(size))
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr, mw.FormDataContentType()
}
