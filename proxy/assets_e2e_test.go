package proxy

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"mime/multipart"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lukechampine.com/blake3"

	"github.com/comfyshim/comfyshim/proxy/internal/comfytest"
)

func TestAssetRoutesAreNeverForwarded(t *testing.T) {
	up, ts := startUpstream(t)
	d := newComfyDir(t)
	id := d.add("output/a.png", "a", 1)
	s := startShim(t, d.config(ts.URL))
	cases := []struct {
		method, path string
		status       int
		code         string
	}{
		{"POST", "/api/assets", 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"PUT", "/api/assets/" + id, 200, ""},
		{"DELETE", "/api/assets/00000000-0000-4000-8000-000000000009", 404, "ASSET_NOT_FOUND"},
		{"POST", "/api/assets/from-hash", 400, "INVALID_HASH"},
		{"GET", "/api/assets/remote-metadata", 501, "NOT_IMPLEMENTED"},
		{"POST", "/api/assets/download", 501, "NOT_IMPLEMENTED"},
		{"PATCH", "/api/assets/" + id, 404, "NOT_FOUND"},
		{"GET", "/api/assets/" + id + "/nothing", 404, "NOT_FOUND"},
		{"POST", "/api/tags", 404, "NOT_FOUND"},
		{"GET", "/api/tags/", 404, "NOT_FOUND"},
	}
	for _, tc := range cases {
		st, body := call(t, tc.method, s.URL+tc.path, `{"name":"x"}`)
		if st == 200 && tc.status == 200 {
			continue
		}
		if e := decode[ErrorResponse](t, body); st != tc.status || e.Code != tc.code {
			t.Errorf("%s %s: %d %s", tc.method, tc.path, st, body)
		}
	}
	resp, err := testClient.Do(mustReq(t, "HEAD", s.URL+"/api/assets/hash/blake3:"+strings.Repeat("a", 64), nil))
	if err != nil || resp.StatusCode != 404 {
		t.Fatalf("HEAD hash: %v %v", resp, err)
	}
	resp.Body.Close()
	for _, seen := range up.Seen() {
		if seen.Method == "GET" && seen.Header.Get("User-Agent") == lookupAgent {
			continue // comfyshim asking ComfyUI about an id it does not know, not the client's request
		}
		if strings.HasPrefix(seen.RawPath, "/api/assets") || strings.HasPrefix(seen.RawPath, "/api/tags") {
			t.Fatalf("forwarded %s %s", seen.Method, seen.RawPath)
		}
	}
}

// TestEndToEnd: a file appears in output/, is listed, tagged, filtered by
// tag, survives a restart, and a hand edit of the sidecar shows up in
// GET /api/tags within a second.
func TestEndToEnd(t *testing.T) {
	_, ts := startUpstream(t)
	d := newComfyDir(t)
	cfg := d.config(ts.URL)
	s := startShim(t, cfg)

	// ComfyUI finishes a generation.
	id := d.add("output/run/ComfyUI_00042_.png", "png-bytes", 10)
	var l listResp
	waitFor(t, func() bool {
		_, body := call(t, "GET", s.URL+"/api/assets?include_tags=output", "")
		l = decode[listResp](t, body)
		return l.Total == 1
	})
	if l.Assets[0].ID != id || l.Assets[0].DisplayName != "run/ComfyUI_00042_.png" {
		t.Fatalf("listed %+v", l.Assets[0])
	}
	if st, body := call(t, "POST", s.URL+"/api/assets/"+id+"/tags", `{"tags":["keeper"]}`); st != 200 {
		t.Fatalf("%d %s", st, body)
	}
	_, body := call(t, "GET", s.URL+"/api/assets?include_tags=keeper", "")
	if l = decode[listResp](t, body); l.Total != 1 || l.Assets[0].ID != id {
		t.Fatalf("filter by new tag: %s", body)
	}

	// Restart on the same folders.
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	s2 := startShim(t, cfg)
	_, body = call(t, "GET", s2.URL+"/api/assets/"+id, "")
	if a := decode[map[string]any](t, body); fmt.Sprint(a["tags"]) != "[keeper output]" {
		t.Fatalf("after restart: %s", body)
	}

	// A person edits the sidecar by hand.
	data, _ := os.ReadFile(d.tagsFile())
	edited := strings.Replace(string(data), `"keeper"`, `"keeper", "hand-made"`, 1)
	if edited == string(data) {
		t.Fatalf("unexpected sidecar layout:\n%s", data)
	}
	tmp := d.tagsFile() + ".swp"
	os.WriteFile(tmp, []byte(edited), 0o644)
	os.Rename(tmp, d.tagsFile())
	start := time.Now()
	for {
		_, body := call(t, "GET", s2.URL+"/api/tags?prefix=hand", "")
		if decode[tagsResp](t, body).String() == "hand-made=1" {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("hand edit not visible after a second: %s", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLargeAssetUploadStreams: a 300 MiB POST /api/assets lands on disk
// byte for byte with its BLAKE3 hash while the heap stays flat.
func TestLargeAssetUploadStreams(t *testing.T) {
	const size = 300 << 20
	_, ts := startUpstream(t)
	d := newComfyDir(t)
	s := startShim(t, d.config(ts.URL))
	h := blake3.New(32, nil)
	if _, err := io.Copy(h, comfytest.Pattern(size)); err != nil {
		t.Fatal(err)
	}
	body, contentType := streamedMultipart([][2]string{{"tags", "models,model_type:checkpoints"}}, "file", "big.safetensors", size)
	stop := heapPeak()
	req := mustReq(t, "POST", s.URL+"/api/assets", body)
	req.Header.Set("Content-Type", contentType)
	var out struct {
		AssetHash string `json:"asset_hash"`
		Size      int64  `json:"size"`
	}
	resp := doJSON(t, req, &out)
	growth := stop()
	if resp.StatusCode != 201 || out.Size != size || out.AssetHash != "blake3:"+hex.EncodeToString(h.Sum(nil)) {
		t.Fatalf("upload answer %d %+v", resp.StatusCode, out)
	}
	f, err := os.Open(filepath.Join(d.Folder("models"), "checkpoints", "big.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	onDisk := blake3.New(32, nil)
	if n, _ := io.Copy(onDisk, f); n != size || !bytes.Equal(onDisk.Sum(nil), h.Sum(nil)) {
		t.Fatal("the file on disk differs from the upload")
	}
	t.Logf("heap growth during a 300 MiB asset upload: %d KiB", growth>>10)
	if growth > 64<<20 {
		t.Fatalf("heap grew by %d MiB while uploading: the body is being buffered", growth>>20)
	}
}

// TestSeed: POST /api/assets/seed rescans in the background and the
// websocket carries assets.seed.started and .completed, as OSS ComfyUI's
// web app waits for; status, cancel and prune answer in OSS's shapes.
func TestSeed(t *testing.T) {
	_, ts := startUpstream(t)
	d := newComfyDir(t)
	d.add("input/a.png", "a", 1)
	s := startShim(t, d.config(ts.URL))
	conn := dialWS(t, wsURL(s.URL, "/ws?clientId=seed-watcher"))
	log := readSocket(t, conn)
	comfytest.WaitFor(t, func() bool { log.mu.Lock(); defer log.mu.Unlock(); return len(log.msgs) > 0 })

	st, body := call(t, "POST", s.URL+"/api/assets/seed", `{"roots":["input","output"]}`)
	if st != 202 || !strings.Contains(string(body), `"started"`) {
		t.Fatalf("seed: %d %s", st, body)
	}
	var types []string
	comfytest.WaitFor(t, func() bool {
		log.mu.Lock()
		defer log.mu.Unlock()
		types = types[:0]
		for _, m := range log.msgs {
			if strings.HasPrefix(m.typ, "assets.seed.") {
				types = append(types, m.typ)
			}
		}
		return len(types) == 2
	})
	if strings.Join(types, ",") != "assets.seed.started,assets.seed.completed" {
		t.Fatalf("seed events: %v", types)
	}
	st, body = call(t, "GET", s.URL+"/api/assets/seed/status", "")
	if st != 200 || !strings.Contains(string(body), `"state":"IDLE"`) || !strings.Contains(string(body), `"total":1`) {
		t.Fatalf("seed status: %d %s", st, body)
	}
	if st, body := call(t, "POST", s.URL+"/api/assets/seed/cancel", ""); st != 200 || !strings.Contains(string(body), `"idle"`) {
		t.Fatalf("cancel when idle: %d %s", st, body)
	}
	if st, body := call(t, "POST", s.URL+"/api/assets/seed?wait=true", ""); st != 200 || !strings.Contains(string(body), `"completed"`) {
		t.Fatalf("seed?wait=true: %d %s", st, body)
	}
	if st, body := call(t, "POST", s.URL+"/api/assets/seed", `{"roots":["elsewhere"]}`); st != 400 {
		t.Fatalf("seed of no valid root: %d %s", st, body)
	}
	if st, body := call(t, "POST", s.URL+"/api/assets/prune", ""); st != 200 || !strings.Contains(string(body), `"marked":0`) {
		t.Fatalf("prune: %d %s", st, body)
	}
}

// TestAdvertiseAssets: the web app learns that the asset API is on from
// /features and from the websocket's feature_flags answer, with ComfyUI's
// other flags kept; advertise_assets: false leaves ComfyUI's answer alone.
func TestAdvertiseAssets(t *testing.T) {
	for _, advertise := range []bool{true, false} {
		_, ts := startUpstream(t)
		cfg := testConfig(t, ts.URL)
		cfg.AdvertiseAssets = advertise
		s := startShim(t, cfg)
		for _, p := range []string{"/features", "/api/features"} {
			var flags map[string]any
			doJSON(t, mustReq(t, "GET", s.URL+p, nil), &flags)
			if flags["assets"] != advertise || flags["supports_preview_metadata"] != true {
				t.Fatalf("advertise=%v: GET %s: %v", advertise, p, flags)
			}
		}
		conn := dialWS(t, wsURL(s.URL, "/ws?clientId=flags"))
		if _, _, err := conn.ReadMessage(); err != nil { // status
			t.Fatal(err)
		}
		if err := conn.WriteJSON(map[string]any{"type": "feature_flags", "data": map[string]bool{"supports_preview_metadata": true}}); err != nil {
			t.Fatal(err)
		}
		var m struct {
			Type string
			Data map[string]any
		}
		for m.Type != "feature_flags" {
			if err := conn.ReadJSON(&m); err != nil {
				t.Fatal(err)
			}
		}
		if m.Data["assets"] != advertise || m.Data["max_upload_size"] == nil {
			t.Fatalf("advertise=%v: feature_flags %v", advertise, m.Data)
		}
	}
}

// TestUploadedTag: files that came through /upload/image and outputs a
// workflow saved are tagged "uploaded", as OSS ComfyUI tags them; a file
// that appeared another way is not.
func TestUploadedTag(t *testing.T) {
	up, ts := startUpstream(t)
	d := newComfyDir(t)
	up.OutputDir = d.Folder("output")
	s := startShim(t, d.config(ts.URL))
	d.add("output/by-hand.png", "h", 1)

	// An upload through comfyshim (the fake answers where it put the file;
	// the file is written here as ComfyUI would).
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	fw, _ := mw.CreateFormFile("image", "photo.png")
	io.WriteString(fw, "png")
	mw.WriteField("subfolder", "pasted")
	mw.Close()
	// (ComfyUI stores it in input/pasted/, as its answer says.)
	req := mustReq(t, "POST", s.URL+"/upload/image", &b)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if resp := doJSON(t, req, nil); resp.StatusCode != 200 {
		t.Fatalf("upload: %d", resp.StatusCode)
	}
	d.add("input/pasted/photo.png", "png", 2)

	// A workflow run on the web app's socket.
	conn := dialWS(t, wsURL(s.URL, "/ws?clientId=tab"))
	log := readSocket(t, conn)
	comfytest.WaitFor(t, func() bool { log.mu.Lock(); defer log.mu.Unlock(); return len(log.msgs) > 0 })
	r := doJSON(t, mustReq(t, "POST", s.URL+"/prompt", strings.NewReader(`{"prompt":{"9":{"class_type":"SaveImage","inputs":{}}},"client_id":"tab"}`)), nil)
	if r.StatusCode != 200 {
		t.Fatal(r.StatusCode)
	}
	comfytest.WaitFor(t, func() bool {
		_, body := call(t, "GET", s.URL+"/api/assets?include_tags=uploaded&sort=name&order=asc", "")
		return decode[comfytest.AssetList](t, body).Names() == "ComfyUI_00001_.png,photo.png"
	})
}

// TestOSSAssetIDsResolve: an asset id from ComfyUI's own asset database
// (--enable-assets puts them in /history outputs) finds the same file
// through comfyshim.
func TestOSSAssetIDsResolve(t *testing.T) {
	up, ts := startUpstream(t)
	d := newComfyDir(t)
	outID := d.add("output/run/ComfyUI_00007_.png", "img", 1)
	modelID := d.add("models/loras/style/x.safetensors", "w", 2)
	ossOut, ossModel := "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
	up.OSSAssets = map[string]map[string]any{
		ossOut:   {"id": ossOut, "name": "ComfyUI_00007_.png", "tags": []string{"output"}, "loader_path": "run/ComfyUI_00007_.png"},
		ossModel: {"id": ossModel, "name": "x.safetensors", "tags": []string{"models", "model_type:loras"}, "loader_path": "style/x.safetensors"},
	}
	s := startShim(t, d.config(ts.URL))
	for oss, ours := range map[string]string{ossOut: outID, ossModel: modelID} {
		st, body := call(t, "GET", s.URL+"/api/assets/"+oss, "")
		if got := decode[struct{ ID string }](t, body); st != 200 || got.ID != ours {
			t.Fatalf("GET /api/assets/%s: %d %s, want asset %s", oss, st, body, ours)
		}
	}
	if st, _ := call(t, "GET", s.URL+"/api/assets/33333333-3333-4333-8333-333333333333", ""); st != 404 {
		t.Fatalf("an id nobody knows: %d", st)
	}
}
