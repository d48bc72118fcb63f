// Package comfytest is an in-process stand-in for an OSS ComfyUI server, for
// tests and benchmarks. It mimics the parts comfyshim must carry: routes under
// both / and /api, ComfyUI's Host/Origin check, the /ws websocket with text and
// binary preview frames, streamed /view downloads and multipart uploads.
package comfytest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
)

// Seen is one request as the upstream received it.
type Seen struct {
	Method   string
	RawPath  string // escaped path, exactly as sent
	RawQuery string
	Host     string
	Header   http.Header
}

// Upstream is the fake ComfyUI. Its zero value is not usable; call New.
type Upstream struct {
	mux *http.ServeMux

	mu         sync.Mutex
	seen       []Seen
	lastPrompt []byte
	sockets    map[string]*wsClient // by clientId
	released   chan struct{}
	q          queue

	// JobsAPI makes the fake a ComfyUI 0.33+ with /api/jobs; without it,
	// those routes answer 404 as older releases do.
	JobsAPI bool
	// OutputDir, when set, is where jobs write their images (as ComfyUI's
	// output folder); /view serves them from there.
	OutputDir string
	// OSSAssets, when set, makes the fake a ComfyUI started with
	// --enable-assets: GET /api/assets/{id} answers these, by id.
	OSSAssets map[string]map[string]any
	// InputDir, when set, is ComfyUI's input folder: /view serves it.
	InputDir string
	// ModelsDir, when set, is ComfyUI's models folder: /object_info lists
	// its checkpoints and LoRAs as the loaders' options.
	ModelsDir string

	// Cancelled receives the path of every /block request whose client went away.
	Cancelled chan string
	// WSClosed receives the clientId of every websocket that ended.
	WSClosed chan string
	// Quiet disables request recording, for benchmarks.
	Quiet bool
}

type wsClient struct {
	mu   sync.Mutex // gorilla allows one concurrent writer
	conn *websocket.Conn
}

func (c *wsClient) write(kind int, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn.WriteMessage(kind, data)
}

// New returns a fake ComfyUI handler.
func New() *Upstream {
	u := &Upstream{
		mux:       http.NewServeMux(),
		q:         queue{history: map[string]*job{}, gates: map[string]chan struct{}{}},
		sockets:   map[string]*wsClient{},
		released:  make(chan struct{}),
		Cancelled: make(chan string, 16),
		WSClosed:  make(chan string, 16),
	}
	// The web app: static files are served bare only.
	u.mux.HandleFunc("GET /{$}", u.index)
	u.mux.HandleFunc("GET /app.js", u.appJS)
	u.mux.HandleFunc("GET /api/assets/{id}", u.ossAsset)
	u.mux.HandleFunc("GET /asset-panel.html", u.assetPanel)
	u.mux.HandleFunc("GET /asset-panel.js", u.assetPanelJS)
	// ComfyUI 0.33+ only, and only under /api.
	u.mux.HandleFunc("GET /api/jobs", u.onlyWithJobs(u.jobsList))
	u.mux.HandleFunc("GET /api/jobs/{id}", u.onlyWithJobs(u.jobsOne))
	u.mux.HandleFunc("POST /api/jobs/{id}/cancel", u.onlyWithJobs(u.jobsCancel))
	// ComfyUI registers every route bare and under /api.
	for _, prefix := range []string{"", "/api"} {
		u.mux.HandleFunc("GET "+prefix+"/system_stats", u.systemStats)
		u.mux.HandleFunc("GET "+prefix+"/features", u.features)
		u.mux.HandleFunc("POST "+prefix+"/prompt", u.prompt)
		u.mux.HandleFunc("GET "+prefix+"/queue", u.queueInfo)
		u.mux.HandleFunc("POST "+prefix+"/queue", u.queueManage)
		u.mux.HandleFunc("POST "+prefix+"/interrupt", u.interrupt)
		u.mux.HandleFunc("GET "+prefix+"/history", u.historyAll)
		u.mux.HandleFunc("GET "+prefix+"/history/{id}", u.historyOne)
		u.mux.HandleFunc("POST "+prefix+"/history", u.historyManage)
		u.mux.HandleFunc("GET "+prefix+"/object_info", u.objectInfo)
		u.mux.HandleFunc("GET "+prefix+"/view", u.view)
		u.mux.HandleFunc("POST "+prefix+"/upload/image", u.upload)
		u.mux.HandleFunc(prefix+"/userdata/{file}", u.userdata)
		u.mux.HandleFunc("GET "+prefix+"/ws", u.ws)
		u.mux.HandleFunc(prefix+"/echo", u.echo)
		u.mux.HandleFunc("GET "+prefix+"/block", u.block)
		u.mux.HandleFunc("GET "+prefix+"/abort", u.abort)
	}
	return u
}

// ServeHTTP applies ComfyUI's origin check, records the request and routes it.
func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !u.Quiet {
		u.mu.Lock()
		u.seen = append(u.seen, Seen{Method: r.Method, RawPath: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery, Host: r.Host, Header: r.Header.Clone()})
		u.mu.Unlock()
	}
	if !originAllowed(r) {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	if _, pattern := u.mux.Handler(r); pattern == "" {
		// No route: ComfyUI (aiohttp) answers 404 with an empty body, and
		// 405 for a known path with another method.
		u.mux.ServeHTTP(emptyNotFound{w}, r)
		return
	}
	u.mux.ServeHTTP(w, r)
}

// Seen returns the requests received so far.
func (u *Upstream) Seen() []Seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Seen(nil), u.seen...)
}

// Last returns the last request received on path (escaped form).
func (u *Upstream) Last(path string) (Seen, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := len(u.seen) - 1; i >= 0; i-- {
		if u.seen[i].RawPath == path {
			return u.seen[i], true
		}
	}
	return Seen{}, false
}

// Count is how many requests path (escaped form) received.
func (u *Upstream) Count(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, s := range u.seen {
		if s.RawPath == path {
			n++
		}
	}
	return n
}

// LastPrompt is the body of the last POST /prompt.
func (u *Upstream) LastPrompt() []byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.lastPrompt
}

// Release lets every /block request finish.
func (u *Upstream) Release() { close(u.released) }

// CloseSockets closes every websocket from the server side with a normal
// close frame, as ComfyUI does when it stops.
func (u *Upstream) CloseSockets() {
	u.mu.Lock()
	clients := make([]*wsClient, 0, len(u.sockets))
	for _, c := range u.sockets {
		clients = append(clients, c)
	}
	u.mu.Unlock()
	for _, c := range clients {
		_ = c.write(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "server stopping"))
	}
}

// originAllowed is ComfyUI's origin_only_middleware: cross-site fetches are
// refused, and for a loopback Host the Origin must name that same host:port.
func originAllowed(r *http.Request) bool {
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	host := strings.ToLower(r.Host)
	hostname := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		hostname = h
	}
	ip := net.ParseIP(strings.Trim(hostname, "[]"))
	if hostname != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return true
	}
	o, err := url.Parse(origin)
	if err != nil || o.Host == "" {
		return true
	}
	return strings.ToLower(o.Host) == host
}

var systemStatsBody = []byte(`{"system":{"os":"posix","python_version":"3.12.0","embedded_python":false,"comfyui_version":"0.3.0-fake","ram_total":1,"ram_free":1},"devices":[]}`)

func (u *Upstream) systemStats(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(systemStatsBody)))
	_, _ = w.Write(systemStatsBody)
}

func (u *Upstream) features(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, featureFlags)
}

var featureFlags = map[string]any{"supports_preview_metadata": true, "max_upload_size": 100 << 20, "assets": false}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// PreviewPNG is the image the fake "generates" and sends as a preview: a
// real 1x1 PNG, so a browser can decode it.
var PreviewPNG = func() []byte {
	img := image.NewNRGBA(image.Rect(0, 0, 1, 1))
	img.Set(0, 0, color.NRGBA{R: 200, G: 80, B: 40, A: 255})
	var b bytes.Buffer
	_ = png.Encode(&b, img)
	return b.Bytes()
}()

// view serves files like ComfyUI's /view. Names of the form big-N.bin are a
// deterministic N-byte stream (see Pattern); slow.bin sends one chunk and
// then waits for Release.
func (u *Upstream) view(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("filename")
	switch {
	case strings.HasPrefix(name, "big-") && strings.HasSuffix(name, ".bin"):
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(name, "big-"), ".bin"), 10, 64)
		if err != nil || n < 0 {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		_, _ = io.Copy(w, Pattern(n))
	case name == "slow.bin":
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write([]byte("first-chunk"))
		w.(http.Flusher).Flush()
		select {
		case <-u.released:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write([]byte("-rest"))
	case name == "events.sse":
		// A server-sent event stream that declares its length: only its
		// content type tells a proxy to flush every event at once.
		first, rest := "data: first\n\n", "data: rest\n\n"
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(first)+len(rest)))
		_, _ = io.WriteString(w, first)
		w.(http.Flusher).Flush()
		select {
		case <-u.released:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, rest)
	case r.URL.Query().Get("type") == "input" && u.InputDir != "":
		root, err := os.OpenRoot(u.InputDir)
		if err != nil {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		defer root.Close()
		f, err := root.Open(path.Join(r.URL.Query().Get("subfolder"), name))
		if err != nil {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		defer f.Close()
		http.ServeContent(w, r, name, time.Time{}, f)
	case strings.HasPrefix(name, "ComfyUI_"):
		// An image a prompt wrote; any other such name is the preview image,
		// so pages can show a picture without running a prompt.
		b, ok := u.Output(name)
		w.Header().Set("Content-Type", "image/png")
		if ok { // ComfyUI serves files with ranges (aiohttp's FileResponse)
			http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
			return
		}
		b = PreviewPNG
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// upload reads a multipart /upload/image as a stream and answers with the
// SHA-256 and size of the "image" part, so callers can check the bytes.
func (u *Upstream) upload(w http.ResponseWriter, r *http.Request) {
	mr, err := r.MultipartReader()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp := map[string]any{"subfolder": "", "type": "input"}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if p.FormName() == "image" {
			h := sha256.New()
			n, err := io.Copy(h, p)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			resp["name"] = p.FileName()
			resp["sha256"] = hex.EncodeToString(h.Sum(nil))
			resp["size"] = n
		} else {
			v, _ := io.ReadAll(io.LimitReader(p, 1<<10))
			resp[p.FormName()] = string(v)
		}
	}
	if resp["name"] == nil {
		http.Error(w, "no image part", http.StatusBadRequest)
		return
	}
	writeJSON(w, resp)
}

func (u *Upstream) userdata(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, map[string]string{"method": r.Method, "raw_path": r.URL.EscapedPath(), "file": r.PathValue("file")})
}

// echo answers with the request's body and what it saw, for header tests.
func (u *Upstream) echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	writeJSON(w, map[string]any{"method": r.Method, "query": r.URL.RawQuery, "body": string(body), "host": r.Host})
}

func (u *Upstream) block(w http.ResponseWriter, r *http.Request) {
	select {
	case <-u.released:
		_, _ = w.Write([]byte("released"))
	case <-r.Context().Done():
		u.Cancelled <- r.URL.Path
	}
}

// abort starts a chunked response and drops the connection mid-body.
func (u *Upstream) abort(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write([]byte("partial"))
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler)
}

var upgrader = websocket.Upgrader{
	// The origin middleware in ServeHTTP already applied ComfyUI's rule.
	CheckOrigin:     func(*http.Request) bool { return true },
	ReadBufferSize:  64 << 10,
	WriteBufferSize: 64 << 10,
}

// ws mimics ComfyUI's socket: a status message at once, a feature_flags
// answer to the client's feature_flags. As test hooks, text messages of type
// "echo" and every binary message are sent back.
func (u *Upstream) ws(w http.ResponseWriter, r *http.Request) {
	clientID := r.URL.Query().Get("clientId")
	if clientID == "" {
		clientID = uuid.NewString()
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &wsClient{conn: conn}
	u.mu.Lock()
	u.sockets[clientID] = c
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		if u.sockets[clientID] == c {
			delete(u.sockets, clientID)
		}
		u.mu.Unlock()
		_ = conn.Close()
		select {
		case u.WSClosed <- clientID:
		default:
		}
	}()
	_ = c.write(websocket.TextMessage, mustJSON(map[string]any{"type": "status", "data": map[string]any{
		"status": map[string]any{"exec_info": map[string]any{"queue_remaining": 0}}, "sid": clientID}}))
	for {
		kind, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		if kind == websocket.BinaryMessage {
			_ = c.write(websocket.BinaryMessage, data)
			continue
		}
		var m struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(data, &m)
		switch m.Type {
		case "feature_flags":
			_ = c.write(websocket.TextMessage, mustJSON(map[string]any{"type": "feature_flags", "data": featureFlags}))
		case "echo":
			_ = c.write(websocket.TextMessage, data)
		}
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Pattern returns n deterministic pseudo-random bytes, generated on the fly
// so that gigabyte streams cost no memory. Byte i depends only on i, so the
// stream is the same whatever sizes it is read in.
func Pattern(n int64) io.Reader {
	return io.LimitReader(&pattern{}, n)
}

type pattern struct{ off uint64 }

func (p *pattern) Read(b []byte) (int, error) {
	i := 0
	for i < len(b) {
		if p.off&7 == 0 && len(b)-i >= 8 {
			binary.LittleEndian.PutUint64(b[i:], splitmix(p.off>>3))
			i += 8
			p.off += 8
			continue
		}
		b[i] = byte(splitmix(p.off>>3) >> ((p.off & 7) * 8))
		i++
		p.off++
	}
	return len(b), nil
}

func splitmix(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

// index is a stand-in for ComfyUI's web app: a page whose script, like the
// real frontend's, makes same-origin fetches, loads an image and opens the
// websocket, none of them carrying a key, and reports what worked in
// <pre id="result">.
func (u *Upstream) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = io.WriteString(w, `<!doctype html><html><head><title>ComfyUI</title><script src="/app.js"></script></head><body><pre id="result">pending</pre></body></html>`)
}

func (u *Upstream) appJS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	_, _ = io.WriteString(w, `(async () => {
  const out = {script: true};
  try { out.fetch = (await fetch('/api/system_stats')).status; } catch (e) { out.fetch = String(e); }
  out.cookieVisible = document.cookie;
  out.img = await new Promise(res => { const i = new Image(); i.onload = () => res(i.naturalWidth); i.onerror = () => res(-1); i.src = '/api/view?filename=ComfyUI_00001_.png&type=output'; });
  out.ws = await new Promise(res => {
    const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws?clientId=browser');
    ws.onmessage = m => { res(JSON.parse(m.data).type); ws.close(); };
    ws.onerror = () => res('error');
  });
  const show = () => { document.getElementById('result').textContent = JSON.stringify(out); };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', show); else show();
})();
`)
}

func (u *Upstream) ossAsset(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	a, ok := u.OSSAssets[r.PathValue("id")]
	u.mu.Unlock()
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		writeJSON(w, map[string]any{"error": map[string]any{"code": "ASSET_NOT_FOUND", "message": "not found", "details": map[string]any{}}})
		return
	}
	writeJSON(w, a)
}

// assetPanel is a page that uses comfyshim's asset API as the web app's
// asset panels do, and reports what happened in <pre id="result">.
func (u *Upstream) assetPanel(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = io.WriteString(w, `<!doctype html><html><head><title>Assets</title><script src="/asset-panel.js"></script></head><body><pre id="result">pending</pre></body></html>`)
}

func (u *Upstream) assetPanelJS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	_, _ = io.WriteString(w, `(async () => {
  const out = {};
  const json = async r => { const t = await r.text(); try { return [r.status, JSON.parse(t)]; } catch (e) { return [r.status, t]; } };
  try {
    const models = [];
    let cursor = '';
    for (let i = 0; i < 20; i++) {
      const q = '/api/assets?include_tags=models,model_type:checkpoints&exclude_tags=missing&limit=1&sort=name&order=asc' + (cursor ? '&after=' + encodeURIComponent(cursor) : '');
      const [st, page] = await json(await fetch(q));
      if (st !== 200) throw new Error('list: ' + st);
      for (const a of page.assets) models.push(a.user_metadata.filename);
      if (!page.has_more) break;
      cursor = page.next_cursor;
    }
    out.models = models;
    const canvas = document.createElement('canvas');
    canvas.width = 3; canvas.height = 2;
    const blob = await new Promise(res => canvas.toBlob(res, 'image/png'));
    const form = new FormData();
    form.append('file', blob, 'drawn.png');
    form.append('tags', 'input');
    const [ust, up] = await json(await fetch('/api/assets', {method: 'POST', body: form}));
    out.upload = [ust, up.name, up.created_new];
    out.img = await new Promise(res => { const i = new Image(); i.onload = () => res(i.naturalWidth); i.onerror = () => res(-1); i.src = up.preview_url; });
    const [pst, put] = await json(await fetch('/api/assets/' + up.id, {method: 'PUT', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({name: 'Renamed drawing'})}));
    out.rename = [pst, put.name];
    out.deleted = (await fetch('/api/assets/' + up.id, {method: 'DELETE'})).status;
    out.after = (await fetch('/api/assets/' + up.id)).status;
  } catch (e) { out.error = String(e); }
  document.getElementById('result').textContent = JSON.stringify(out);
})();
`)
}

// onlyWithJobs serves a /api/jobs route when the fake is a ComfyUI that has
// them (JobsAPI), and answers the empty 404 of an unknown route otherwise.
func (u *Upstream) onlyWithJobs(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !u.JobsAPI {
			emptyNotFound{w}.WriteHeader(http.StatusNotFound)
			return
		}
		h(w, r)
	}
}

// emptyNotFound drops the body net/http writes with a 404, as ComfyUI sends
// none.
type emptyNotFound struct{ http.ResponseWriter }

func (e emptyNotFound) WriteHeader(code int) {
	if code == http.StatusNotFound {
		e.ResponseWriter.Header().Del("Content-Type")
		e.ResponseWriter.Header().Del("X-Content-Type-Options")
	}
	e.ResponseWriter.WriteHeader(code)
}

func (e emptyNotFound) Write(b []byte) (int, error) {
	return len(b), nil // the status line says it all
}
