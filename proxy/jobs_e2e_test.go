package proxy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/comfyshim/comfyshim/proxy/internal/comfytest"
)

const cloudKey = "cloud-script-key-0123456789"

// cloudClient is a client written from the Cloud docs alone: it sends
// X-API-Key on every request and does not follow redirects.
type cloudClient struct {
	t    *testing.T
	base string
	key  string
	http *http.Client
}

func newCloudClient(t *testing.T, base, key string) *cloudClient {
	return &cloudClient{t: t, base: base, key: key, http: &http.Client{
		Transport:     &http.Transport{},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (c *cloudClient) do(method, path, body string) (*http.Response, []byte) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := comfytest.NewRequest(c.t, method, c.base+path, rd)
	if c.key != "" {
		req.Header.Set("X-API-Key", c.key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
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
	if path != "/api/prompt" && !strings.HasPrefix(path, "/api/job/") {
		comfytest.Conform(c.t, req, body, resp, data)
	}
	return resp, data
}

// status polls /api/job/{id}/status once, validating the answer against
// the spec except for the state, which is Cloud's raw one (the spec's enum
// is wrong about it).
func (c *cloudClient) status(id string) (string, map[string]any) {
	c.t.Helper()
	req := comfytest.NewRequest(c.t, "GET", c.base+"/api/job/"+id+"/status", nil)
	req.Header.Set("X-API-Key", c.key)
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		comfytest.Conform(c.t, req, "", resp, data)
		return "", nil
	}
	m := comfytest.Decode[map[string]any](c.t, data)
	raw, _ := m["status"].(string)
	asSpec := map[string]string{"queued_waiting": "pending", "executing": "in_progress", "success": "completed", "error": "error", "cancelled": "cancelled"}[raw]
	if asSpec == "" {
		c.t.Fatalf("status %q is none of the states comfyshim maps to", raw)
	}
	m["status"] = asSpec
	specBody, _ := json.Marshal(m)
	if err := comfytest.ValidateAgainstSpec(c.t, req, "", resp.StatusCode, resp.Header, specBody); err != nil {
		c.t.Fatalf("status answer does not conform: %v\n%s", err, data)
	}
	return raw, m
}

// waitState polls the status until it is want, failing on another
// terminal state.
func (c *cloudClient) waitState(id, want string) map[string]any {
	c.t.Helper()
	var last map[string]any
	comfytest.WaitFor(c.t, func() bool {
		st, m := c.status(id)
		last = m
		if st != want && (st == "success" || st == "error" || st == "cancelled") {
			c.t.Fatalf("job %s ended %q, want %q (%v)", id, st, want, m)
		}
		return st == want
	})
	return last
}

func (c *cloudClient) submit(prompt string) string {
	c.t.Helper()
	resp, data := c.do("POST", "/api/prompt", `{"prompt":`+prompt+`}`)
	var ok struct {
		PromptID string `json:"prompt_id"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(data, &ok) != nil || ok.PromptID == "" {
		c.t.Fatalf("POST /api/prompt: %d %s", resp.StatusCode, data)
	}
	return ok.PromptID
}

// socketLog reads a websocket until it closes, keeping every message.
type socketLog struct {
	mu   sync.Mutex
	msgs []wsMsg
}

type wsMsg struct {
	binary   bool
	typ      string
	promptID string
	data     []byte
}

func readSocket(t *testing.T, conn *websocket.Conn) *socketLog {
	l := &socketLog{}
	go func() {
		for {
			kind, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			m := wsMsg{binary: kind == websocket.BinaryMessage, data: data}
			if !m.binary {
				var v struct {
					Type string `json:"type"`
					Data struct {
						PromptID string `json:"prompt_id"`
					} `json:"data"`
				}
				_ = json.Unmarshal(data, &v)
				m.typ, m.promptID = v.Type, v.Data.PromptID
			}
			l.mu.Lock()
			l.msgs = append(l.msgs, m)
			l.mu.Unlock()
		}
	}()
	return l
}

// forPrompt returns the types of the messages about id (binary previews
// as "preview"), in order.
func (l *socketLog) forPrompt(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	inPrompt := false
	for _, m := range l.msgs {
		switch {
		case m.binary && inPrompt:
			out = append(out, "preview")
		case m.promptID == id:
			out = append(out, m.typ)
			inPrompt = m.typ != "execution_success" && m.typ != "execution_error" && m.typ != "execution_interrupted"
		case m.promptID != "":
			inPrompt = false
		}
	}
	return out
}

// finished: the prompt's messages end as ComfyUI ends one that succeeded,
// with "executing" (no node) once its history has it.
func finished(ev []string) bool {
	return len(ev) >= 2 && ev[len(ev)-2] == "execution_success" && ev[len(ev)-1] == "executing"
}

func dialWS(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", url, err, resp)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

const saveImage = `{"9":{"class_type":"SaveImage","inputs":{}}}`

// TestCloudJobFlow runs the Cloud docs' complete example against comfyshim:
// submit without a client_id, poll the status to success, read the outputs,
// download through the signed redirect without the key; a second client's
// socket, opened with its own clientId before the prompt, sees the prompt's
// events through execution_success. Once against a ComfyUI with /api/jobs,
// once against one without.
func TestCloudJobFlow(t *testing.T) {
	for _, jobsAPI := range []bool{true, false} {
		t.Run("jobs_api="+map[bool]string{true: "yes", false: "no"}[jobsAPI], func(t *testing.T) {
			up, ts := startUpstream(t)
			up.JobsAPI = jobsAPI
			up.OutputDir = t.TempDir()
			cfg := testConfig(t, ts.URL)
			cfg.APIKeys = []string{cloudKey}
			s := startShim(t, cfg)
			cc := newCloudClient(t, s.URL, cloudKey)

			watcher := readSocket(t, dialWS(t, wsURL(s.URL, "/ws?clientId="+uuid.NewString()+"&token="+cloudKey)))
			// The socket must be in place before the prompt runs.
			comfytest.WaitFor(t, func() bool { watcher.mu.Lock(); defer watcher.mu.Unlock(); return len(watcher.msgs) > 0 })

			id := cc.submit(saveImage)
			st := cc.waitState(id, "success")
			if st["error_message"] != nil {
				t.Fatalf("error_message on success: %v", st)
			}

			resp, data := cc.do("GET", "/api/jobs/"+id, "")
			if resp.StatusCode != 200 {
				t.Fatalf("GET /api/jobs/{id}: %d %s", resp.StatusCode, data)
			}
			var job struct {
				Status  string
				Outputs map[string]struct {
					Images []struct{ Filename, Subfolder, Type string }
				}
				OutputsCount int   `json:"outputs_count"`
				CreateTime   int64 `json:"create_time"`
			}
			_ = json.Unmarshal(data, &job)
			imgs := job.Outputs["9"].Images
			if job.Status != "completed" || len(imgs) != 1 || job.OutputsCount != 1 || job.CreateTime == 0 {
				t.Fatalf("job detail: %s", data)
			}

			q := url.Values{"filename": {imgs[0].Filename}, "subfolder": {imgs[0].Subfolder}, "type": {imgs[0].Type}}
			resp, _ = cc.do("GET", "/api/view?"+q.Encode(), "")
			loc := resp.Header.Get("Location")
			if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, s.URL+"/api/view?") || strings.Contains(loc, cloudKey) {
				t.Fatalf("/api/view with X-API-Key: %d, Location %q", resp.StatusCode, loc)
			}
			anon := newCloudClient(t, "", "")
			resp, got := anon.do("GET", loc, "")
			want, err := os.ReadFile(filepath.Join(up.OutputDir, imgs[0].Filename))
			if err != nil || resp.StatusCode != 200 || len(want) == 0 || !bytes.Equal(got, want) {
				t.Fatalf("signed URL: %d, %d bytes, want the %d bytes ComfyUI wrote (%v)", resp.StatusCode, len(got), len(want), err)
			}
			if seen, _ := up.Last("/api/view"); strings.Contains(seen.RawQuery, "signature") || strings.Contains(seen.RawQuery, "expires") {
				t.Fatalf("the signature reached ComfyUI: %q", seen.RawQuery)
			}
			// A tampered URL is refused.
			resp, _ = anon.do("GET", strings.Replace(loc, "type=output", "type=input", 1), "")
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("tampered signed URL: %d", resp.StatusCode)
			}

			comfytest.WaitFor(t, func() bool {
				ev := watcher.forPrompt(id)
				return finished(ev)
			})
			ev := strings.Join(watcher.forPrompt(id), ",")
			for _, want := range []string{"execution_start", "executing", "progress", "preview", "executed", "execution_success"} {
				if !strings.Contains(ev, want) {
					t.Fatalf("the watching socket missed %s: %s", want, ev)
				}
			}

			// The list, history_v2 and the user, in the spec's shapes.
			resp, data = cc.do("GET", "/api/jobs?status=completed&limit=10", "")
			if resp.StatusCode != 200 || !strings.Contains(string(data), id) {
				t.Fatalf("GET /api/jobs: %d %s", resp.StatusCode, data)
			}
			resp, data = cc.do("GET", "/api/history_v2?max_items=5", "")
			if resp.StatusCode != 200 || !strings.Contains(string(data), id) || strings.Contains(string(data), `"workflow":`) {
				t.Fatalf("GET /api/history_v2: %d %s", resp.StatusCode, data)
			}
			resp, data = cc.do("GET", "/api/history_v2/"+id, "")
			if resp.StatusCode != 200 || !strings.Contains(string(data), imgs[0].Filename) {
				t.Fatalf("GET /api/history_v2/{id}: %d %s", resp.StatusCode, data)
			}
			resp, data = cc.do("GET", "/api/user", "")
			user := comfytest.Decode[map[string]string](t, data)
			if resp.StatusCode != 200 || user["status"] != "active" || len(user["id"]) != 32 || strings.Contains(string(data), cloudKey) {
				t.Fatalf("GET /api/user: %d %s", resp.StatusCode, data)
			}
		})
	}
}

// TestCloudJobFailures: a workflow failing validation (ComfyUI's 400 passed
// through), one failing while it runs (error with error_message), one
// interrupted and one deleted from the queue (cancelled), the waiting and
// running states, and unknown ids.
func TestCloudJobFailures(t *testing.T) {
	for _, jobsAPI := range []bool{true, false} {
		t.Run("jobs_api="+map[bool]string{true: "yes", false: "no"}[jobsAPI], func(t *testing.T) {
			up, ts := startUpstream(t)
			up.JobsAPI = jobsAPI
			cfg := testConfig(t, ts.URL)
			cfg.APIKeys = []string{cloudKey}
			s := startShim(t, cfg)
			cc := newCloudClient(t, s.URL, cloudKey)

			resp, data := cc.do("POST", "/api/prompt", `{"prompt":{"1":{"class_type":"NoSuchNode","inputs":{}}}}`)
			if resp.StatusCode != 400 || !strings.Contains(string(data), "NoSuchNode") || !strings.Contains(string(data), "node_errors") {
				t.Fatalf("invalid workflow: %d %s", resp.StatusCode, data)
			}

			failed := cc.submit(`{"1":{"class_type":"Fail","inputs":{}}}`)
			st := cc.waitState(failed, "error")
			if msg, _ := st["error_message"].(string); !strings.Contains(msg, "Fail node failed on purpose") {
				t.Fatalf("error_message: %v", st)
			}
			resp, data = cc.do("GET", "/api/jobs/"+failed, "")
			if resp.StatusCode != 200 || !strings.Contains(string(data), `"status":"failed"`) || !strings.Contains(string(data), `"exception_type":"RuntimeError"`) {
				t.Fatalf("failed job detail: %d %s", resp.StatusCode, data)
			}

			running := cc.submit(`{"1":{"class_type":"Wait","inputs":{}},"9":{"class_type":"SaveImage","inputs":{}}}`)
			queued := cc.submit(saveImage)
			cc.waitState(running, "executing")
			if st, _ := cc.status(queued); st != "queued_waiting" {
				t.Fatalf("queued prompt: %q", st)
			}
			resp, data = cc.do("GET", "/api/jobs?status=pending,in_progress", "")
			if resp.StatusCode != 200 || !strings.Contains(string(data), running) || !strings.Contains(string(data), queued) {
				t.Fatalf("pending and running jobs: %s", data)
			}
			resp, data = cc.do("POST", "/api/queue", `{"delete":["`+queued+`"]}`)
			if resp.StatusCode != 200 || !strings.Contains(string(data), queued) {
				t.Fatalf("POST /api/queue: %d %s", resp.StatusCode, data)
			}
			cc.waitState(queued, "cancelled")
			resp, _ = cc.do("POST", "/api/interrupt", "")
			if resp.StatusCode != 200 {
				t.Fatalf("POST /api/interrupt: %d", resp.StatusCode)
			}
			cc.waitState(running, "cancelled")
			resp, data = cc.do("GET", "/api/jobs/"+running, "")
			if !strings.Contains(string(data), `"status":"cancelled"`) {
				t.Fatalf("interrupted job detail: %d %s", resp.StatusCode, data)
			}

			for _, id := range []string{uuid.NewString(), "no%2F..%2Fsuch", "x.y"} {
				resp, data = cc.do("GET", "/api/jobs/"+id, "")
				if resp.StatusCode != 404 {
					t.Fatalf("GET /api/jobs/%s: %d %s", id, resp.StatusCode, data)
				}
				resp, data = cc.do("GET", "/api/job/"+id+"/status", "")
				if resp.StatusCode != 404 {
					t.Fatalf("GET /api/job/%s/status: %d %s", id, resp.StatusCode, data)
				}
			}
			for _, q := range []string{"status=done", "limit=0", "limit=1001", "offset=-1", "sort_by=name", "sort_order=up", "output_type=text", "limit=1&limit=2"} {
				if resp, data := cc.do("GET", "/api/jobs?"+q, ""); resp.StatusCode != 400 {
					t.Fatalf("GET /api/jobs?%s: %d %s", q, resp.StatusCode, data)
				}
			}
			if resp, data := cc.do("POST", "/api/queue", `{"delete":["a"],"extra":1}`); resp.StatusCode != 400 {
				t.Fatalf("POST /api/queue with an unknown field: %d %s", resp.StatusCode, data)
			}
		})
	}
}

// TestJobEventsPerOwner: with keys, a prompt is seen once by the socket it
// names and copied to its owner's other sockets, never to another key's;
// without keys, a prompt naming a socket reaches only that socket (the web
// app's tabs see what they saw before) and one naming none reaches all.
func TestJobEventsPerOwner(t *testing.T) {
	t.Run("keys", func(t *testing.T) {
		_, ts := startUpstream(t)
		cfg := testConfig(t, ts.URL)
		other := "another-key-9876543210"
		cfg.APIKeys = []string{cloudKey, other}
		s := startShim(t, cfg)
		tab := readSocket(t, dialWS(t, wsURL(s.URL, "/ws?clientId=tab-a&token="+cloudKey)))
		sibling := readSocket(t, dialWS(t, wsURL(s.URL, "/ws?clientId=tab-b&token="+cloudKey)))
		stranger := readSocket(t, dialWS(t, wsURL(s.URL, "/ws?clientId=tab-c&token="+other)))
		for _, l := range []*socketLog{tab, sibling, stranger} {
			comfytest.WaitFor(t, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return len(l.msgs) > 0 })
		}
		cc := newCloudClient(t, s.URL, cloudKey)
		resp, data := cc.do("POST", "/api/prompt", `{"prompt":`+saveImage+`,"client_id":"tab-a"}`)
		id := comfytest.Decode[map[string]any](t, data)["prompt_id"].(string)
		if resp.StatusCode != 200 {
			t.Fatal(resp.StatusCode)
		}
		done := func(l *socketLog) bool {
			ev := l.forPrompt(id)
			return finished(ev)
		}
		comfytest.WaitFor(t, func() bool { return done(tab) && done(sibling) })
		want := "execution_start,execution_cached,executing,progress,preview,progress,executed,execution_success,executing"
		if got := strings.Join(tab.forPrompt(id), ","); got != want {
			t.Fatalf("the prompt's own socket saw %s\nwant %s", got, want)
		}
		if got := strings.Join(sibling.forPrompt(id), ","); got != want {
			t.Fatalf("the owner's other socket saw %s\nwant %s", got, want)
		}
		// The stranger's socket gets ComfyUI's broadcasts, never the prompt.
		cc2 := newCloudClient(t, s.URL, other)
		id2 := cc2.submit(saveImage)
		comfytest.WaitFor(t, func() bool {
			return done(stranger) || finished(stranger.forPrompt(id2))
		})
		if ev := stranger.forPrompt(id); len(ev) != 0 {
			t.Fatalf("another key's socket saw the prompt: %v", ev)
		}
		if ev := tab.forPrompt(id2); len(ev) != 0 {
			t.Fatalf("a socket saw another key's prompt: %v", ev)
		}
	})
	t.Run("no keys", func(t *testing.T) {
		_, ts := startUpstream(t)
		s := startShim(t, testConfig(t, ts.URL))
		a := readSocket(t, dialWS(t, wsURL(s.URL, "/ws?clientId=tab-a")))
		b := readSocket(t, dialWS(t, wsURL(s.URL, "/ws?clientId=tab-b")))
		for _, l := range []*socketLog{a, b} {
			comfytest.WaitFor(t, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return len(l.msgs) > 0 })
		}
		cc := newCloudClient(t, s.URL, "")
		resp, data := cc.do("POST", "/api/prompt", `{"prompt":`+saveImage+`,"client_id":"tab-a"}`)
		own := comfytest.Decode[map[string]any](t, data)["prompt_id"].(string)
		if resp.StatusCode != 200 {
			t.Fatal(resp.StatusCode)
		}
		nobody := cc.submit(saveImage)
		done := func(l *socketLog, id string) bool {
			ev := l.forPrompt(id)
			return finished(ev)
		}
		comfytest.WaitFor(t, func() bool { return done(a, own) && done(a, nobody) && done(b, nobody) })
		if ev := b.forPrompt(own); len(ev) != 0 {
			t.Fatalf("without keys, another tab saw a prompt naming tab-a: %v", ev)
		}
		if n := strings.Count(strings.Join(a.forPrompt(nobody), ","), "execution_success"); n != 1 {
			t.Fatalf("a prompt naming no socket arrived %d times", n)
		}
	})
}

// TestWebsocketPingsKeepIdleSocketsOpen puts a proxy that cuts sockets idle
// for 300 ms (as Cloudflare and nginx do, at 100 s and 60 s) between a
// client and comfyshim: with pings every 50 ms the socket outlives several
// such periods; without pings the same proxy cuts it.
func TestWebsocketPingsKeepIdleSocketsOpen(t *testing.T) {
	for _, ping := range []time.Duration{50 * time.Millisecond, 0} {
		t.Run("ping="+ping.String(), func(t *testing.T) {
			_, ts := startUpstream(t)
			cfg := testConfig(t, ts.URL)
			cfg.WSPingInterval = ping
			s := startShim(t, cfg)
			idle := startIdleCutter(t, s.Host, 300*time.Millisecond)
			conn := dialWS(t, "ws://"+idle+"/ws?clientId=idle")
			pings := 0
			var mu sync.Mutex
			conn.SetPingHandler(func(data string) error {
				mu.Lock()
				pings++
				mu.Unlock()
				return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
			})
			got := make(chan string, 16)
			go func() {
				for {
					_, data, err := conn.ReadMessage()
					if err != nil {
						close(got)
						return
					}
					got <- string(data)
				}
			}()
			<-got // status
			time.Sleep(time.Second)
			_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"echo","n":1}`))
			var echoed bool
			for m := range got {
				if strings.Contains(m, `"echo"`) {
					echoed = true
					break
				}
			}
			mu.Lock()
			n := pings
			mu.Unlock()
			if ping > 0 && (!echoed || n < 5) {
				t.Fatalf("with pings: echoed %v after %d pings", echoed, n)
			}
			if ping == 0 && echoed {
				t.Fatal("the idle proxy did not cut a socket without pings: the test proves nothing")
			}
		})
	}
}

// TestRelayPreservesFrames: binary preview frames and large messages cross
// the relay byte for byte, and the client's binary frames reach ComfyUI.
func TestRelayPreservesFrames(t *testing.T) {
	_, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	cfg.WSPingInterval = time.Millisecond // pings between every frame
	s := startShim(t, cfg)
	conn := dialWS(t, wsURL(s.URL, "/ws?clientId=frames"))
	if _, _, err := conn.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{0, 1, 125, 126, 65535, 65536, 3 << 20} {
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		if size >= 8 {
			binary.LittleEndian.PutUint64(payload, uint64(size))
		}
		if err := conn.WriteMessage(websocket.BinaryMessage, payload); err != nil {
			t.Fatal(err)
		}
		for {
			kind, data, err := conn.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			if kind == websocket.BinaryMessage {
				if !bytes.Equal(data, payload) {
					t.Fatalf("%d-byte frame came back as %d bytes, changed", size, len(data))
				}
				break
			}
		}
	}
}

// startIdleCutter is a TCP proxy to target that closes a connection when
// nothing came from target for idle, as nginx's proxy_read_timeout does.
func startIdleCutter(t *testing.T, target string, idle time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c); u.Close() }()
				buf := make([]byte, 32<<10)
				for {
					_ = u.SetReadDeadline(time.Now().Add(idle))
					n, err := u.Read(buf)
					if n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
