package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// A client's own malformed or cut-short body is its error (400), not an
// unreachable ComfyUI (502).
func TestMalformedClientBodyIsNot502(t *testing.T) {
	_, ts := startUpstream(t)
	s := startShim(t, testConfig(t, ts.URL))
	for name, raw := range map[string]string{
		"bad chunk size":             "POST /api/echo HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
		"chunk longer than declared": "POST /api/echo HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
	} {
		conn, err := net.Dial("tcp", s.Host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, raw, s.Host)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var e ErrorResponse
		json.NewDecoder(resp.Body).Decode(&e)
		conn.Close()
		if resp.StatusCode != 400 || e.Code != "INVALID_BODY" {
			t.Errorf("%s: %d %+v", name, resp.StatusCode, e)
		}
	}
}

func TestBadQueryAndBodyInput(t *testing.T) {
	_, ts := startUpstream(t)
	d := newComfyDir(t)
	id := d.add("output/a.png", "a", 1)
	s := startShim(t, d.config(ts.URL))
	for _, q := range []string{
		"/api/tags?offset=9223372036854775000",
		"/api/tags?offset=10000001",
		"/api/assets?offset=9223372036854775807",
		"/api/assets?include_tags=" + url.QueryEscape("a\xffb"),
		"/api/assets?tags_any=" + strings.Repeat("t,", 101),
	} {
		if st, body := call(t, "GET", s.URL+q, ""); st != 400 {
			t.Errorf("%s: %d %s", q, st, body)
		}
	}
	for name, body := range map[string]string{
		"invalid UTF-8":      "{\"tags\":[\"ok\",\"bad\xff\"]}",
		"unpaired surrogate": `{"tags":["x\ud800y"]}`,
	} {
		if st, resp := call(t, "POST", s.URL+"/api/assets/"+id+"/tags", body); st != 400 {
			t.Errorf("%s: %d %s", name, st, resp)
		}
	}
	// A real U+FFFD, literal or escaped, is a character like any other.
	if st, resp := call(t, "POST", s.URL+"/api/assets/"+id+"/tags", `{"tags":["\ufffd-tag", "�"]}`); st != 200 {
		t.Errorf("U+FFFD: %d %s", st, resp)
	}
	// The per-asset cap answers 400 and leaves the asset as it was.
	tags := make([]string, 256)
	for i := range tags {
		tags[i] = fmt.Sprintf("%q", fmt.Sprint("t", i))
	}
	if st, resp := call(t, "POST", s.URL+"/api/assets/"+id+"/tags", `{"tags":[`+strings.Join(tags, ",")+`]}`); st != 400 {
		t.Errorf("over the per-asset cap: %d %s", st, resp)
	}
}

// FuzzAssetQueries sends arbitrary query strings to every listing: none may
// panic or answer 5xx.
func FuzzAssetQueries(f *testing.F) {
	for _, seed := range []string{
		"", "offset=9223372036854775807&limit=1", "limit=-1", "offset=-5", "order=sideways",
		"include_tags=a,b&exclude_tags=b", "tags_any=%ff", "name_contains=%00", "sort=size&order=asc",
		"metadata_filter=%7B%22a%22%3A1%7D", "metadata_filter=[", "prefix=%ff&include_zero=maybe",
		"offset=10000000&limit=1000", "limit=500&offset=1", "include_public=false", "a=%zz;b",
	} {
		f.Add(seed)
	}
	d := newComfyDir(f)
	d.add("output/a.png", "a", 1)
	d.add("models/checkpoints/m.safetensors", "m", 2)
	cfg := d.config("http://127.0.0.1:1")
	srv, err := New(cfg, Options{Logger: testLogger(f)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, q string) {
		for _, p := range []string{"/api/assets", "/api/tags", "/api/assets/tags/refine"} {
			req := httptest.NewRequest("GET", "http://127.0.0.1"+p, nil)
			req.URL.RawQuery = q
			req.RequestURI = req.URL.RequestURI()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code >= 500 || (rec.Code != 200 && rec.Code != 400) {
				t.Fatalf("%s?%s: %d %s", p, q, rec.Code, rec.Body)
			}
			if !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("%s?%s: body not JSON: %q", p, q, rec.Body)
			}
		}
	})
}
