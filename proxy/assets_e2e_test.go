package proxy

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
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
		{"POST", "/api/assets", 501, "NOT_IMPLEMENTED"},
		{"PUT", "/api/assets/" + id, 200, ""},
		{"DELETE", "/api/assets/" + id, 501, "NOT_IMPLEMENTED"},
		{"POST", "/api/assets/from-hash", 501, "NOT_IMPLEMENTED"},
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
	if err != nil || resp.StatusCode != 501 {
		t.Fatalf("HEAD hash: %v %v", resp, err)
	}
	resp.Body.Close()
	for _, seen := range up.Seen() {
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
