package assetapi

import (
	"bytes"
	"encoding/hex"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lukechampine.com/blake3"

	"github.com/comfyshim/comfyshim/proxy/internal/comfytest"
)

type part struct{ name, filename, value string }

// multipartBody encodes parts in order, as a client sends them.
func multipartBody(t *testing.T, parts ...part) (string, *bytes.Buffer) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for _, p := range parts {
		var pw io.Writer
		var err error
		if p.filename != "" {
			pw, err = w.CreateFormFile(p.name, p.filename)
		} else {
			pw, err = w.CreateFormField(p.name)
		}
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(pw, p.value)
	}
	w.Close()
	return w.FormDataContentType(), &b
}

func upload(t *testing.T, url string, parts ...part) (int, []byte) {
	t.Helper()
	ct, body := multipartBody(t, parts...)
	bodyText := body.String()
	req := mustReq(t, "POST", url, body)
	req.Header.Set("Content-Type", ct)
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	comfytest.Conform(t, comfytest.NewRequest(t, "POST", url, strings.NewReader(bodyText)), "", resp, data)
	return resp.StatusCode, data
}

func blake3Of(b string) string {
	h := blake3.Sum256([]byte(b))
	return "blake3:" + hex.EncodeToString(h[:])
}

type created struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	Tags       []string `json:"tags"`
	AssetHash  string   `json:"asset_hash"`
	CreatedNew bool     `json:"created_new"`
	Size       int64    `json:"size"`
	LoaderPath string   `json:"loader_path"`
}

// TestUpload: files land in the folder their tags choose, byte for byte,
// hashed with BLAKE3, tagged "uploaded" with their defaults and the tags
// asked for, never replacing a file; bad uploads are refused and leave
// nothing behind.
func TestUpload(t *testing.T) {
	d := newComfyDir(t)
	s := serveDirOpts(t, d, Options{MaxBody: 1 << 20, MaxUpload: 1 << 20})
	url := s.URL + "/api/assets"
	content := "\x89PNG fake image bytes"

	st, body := upload(t, url, part{"tags", "", "portrait, Fav"}, part{"file", "cat.png", content}, part{"user_metadata", "", `{"source":"test"}`})
	c := decode[created](t, body)
	if st != 201 || !c.CreatedNew || c.AssetHash != blake3Of(content) || c.Size != int64(len(content)) || c.Name != "cat.png" ||
		strings.Join(c.Tags, ",") != "Fav,input,portrait,uploaded" || c.LoaderPath != "cat.png" {
		t.Fatalf("upload: %d %s", st, body)
	}
	if got, _ := os.ReadFile(filepath.Join(d.Folder("input"), "cat.png")); string(got) != content {
		t.Fatalf("file on disk: %q", got)
	}
	// The listing shows it once the folder watch sees it, with its tags.
	waitFor(t, func() bool {
		_, body := call(t, "GET", s.URL+"/api/assets?include_tags=uploaded", "")
		l := decode[listResp](t, body)
		return l.Total == 1 && l.Assets[0].ID == c.ID && l.Assets[0].UserMetadata["source"] == "test"
	})

	// The same content again: the existing asset, with the new tags.
	st, body = upload(t, url, part{"file", "copy.png", content}, part{"tags", "", "again"})
	if dup := decode[created](t, body); st != 200 || dup.CreatedNew || dup.ID != c.ID || !strings.Contains(strings.Join(dup.Tags, ","), "again") {
		t.Fatalf("duplicate content: %d %s", st, body)
	}
	if _, err := os.Stat(filepath.Join(d.Folder("input"), "copy.png")); err == nil {
		t.Fatal("duplicate content was stored again")
	}
	// Same name again: a new file beside it, never a replacement.
	st, body = upload(t, url, part{"file", "cat.png", "other bytes"})
	if c2 := decode[created](t, body); st != 201 || c2.Name != "cat (1).png" || c2.ID == c.ID {
		t.Fatalf("second cat.png: %d %s", st, body)
	}
	if got, _ := os.ReadFile(filepath.Join(d.Folder("input"), "cat.png")); string(got) != content {
		t.Fatal("an upload replaced a file")
	}

	// Tags choose the folder; name overrides the part's file name.
	st, body = upload(t, url, part{"file", "x.bin", "lora"}, part{"tags", "", `["models","model_type:loras"]`}, part{"name", "", "style.safetensors"})
	if c3 := decode[created](t, body); st != 201 || c3.LoaderPath != "style.safetensors" || strings.Join(c3.Tags, ",") != "model_type:loras,models,uploaded" {
		t.Fatalf("model upload: %d %s", st, body)
	}
	if _, err := os.Stat(filepath.Join(d.Folder("models"), "loras", "style.safetensors")); err != nil {
		t.Fatal(err)
	}
	st, body = upload(t, url, part{"file", "o.png", "out"}, part{"tags", "", "output"})
	if st != 201 || !strings.Contains(string(body), `"loader_path":"o.png"`) {
		t.Fatalf("output upload: %d %s", st, body)
	}
	// An id names an existing asset: returned as it is.
	st, body = upload(t, url, part{"id", "", c.ID}, part{"file", "ignored.png", "x"})
	if again := decode[created](t, body); st != 200 || again.CreatedNew || again.ID != c.ID {
		t.Fatalf("idempotent id: %d %s", st, body)
	}

	bad := []struct {
		parts []part
		want  int
	}{
		{[]part{{"tags", "", "a"}}, 400},                              // no file
		{[]part{{"file", ".hidden", "x"}}, 400},                       // hidden name
		{[]part{{"file", "a.png", "x"}, {"tags", "", "models"}}, 400}, // a model needs its category
		{[]part{{"file", "a.png", "x"}, {"tags", "", "models,model_type:../x"}}, 400},
		{[]part{{"file", "a.png", "x"}, {"user_metadata", "", "[1]"}}, 400}, // not an object
		{[]part{{"file", "a.png", "x"}, {"bogus", "", "1"}}, 400},
		{[]part{{"file", "a.png", "x"}, {"id", "", "00000000-0000-4000-8000-000000000009"}}, 400},
		{[]part{{"file", "big.bin", strings.Repeat("b", 1<<20+1)}}, 413},
		{[]part{{"file", "a.png", "x"}, {"file", "b.png", "y"}}, 400},
	}
	for i, b := range bad {
		if st, body := upload(t, url, b.parts...); st != b.want {
			t.Errorf("bad upload %d: %d %s, want %d", i, st, body, b.want)
		}
	}
	if st, body := call(t, "POST", url, `{"url":"http://example.com/a.png","name":"a.png"}`); st != 415 {
		t.Errorf("JSON upload: %d %s", st, body)
	}
	leftovers, _ := filepath.Glob(filepath.Join(d.Folder("input"), ".comfyshim-upload-*"))
	entries, _ := os.ReadDir(d.Folder("input"))
	if len(leftovers) != 0 || len(entries) != 2 {
		t.Fatalf("refused uploads left files behind: %v, %d entries", leftovers, len(entries))
	}
	if _, err := os.Stat(filepath.Join(d.Folder("input"), "a.png")); err == nil {
		t.Fatal("a refused upload was placed")
	}
	_ = http.StatusOK
}

// TestDeleteAsset: an input or output asset goes with its file and tags, at
// once for the next read; a model file only on explicit request; a
// missing asset's entry alone; unknown ids are 404.
func TestDeleteAsset(t *testing.T) {
	f := newFixture(t)
	id := f.ids["photo.png"]
	if st, body := call(t, "POST", f.url("/api/assets/"+id+"/tags"), `{"tags":["doomed"]}`); st != 200 {
		t.Fatalf("%d %s", st, body)
	}
	if st, body := call(t, "DELETE", f.url("/api/assets/"+id), ""); st != 204 {
		t.Fatalf("DELETE: %d %s", st, body)
	}
	if _, err := os.Stat(filepath.Join(f.Folder("input"), "photo.png")); !os.IsNotExist(err) {
		t.Fatalf("the file is still there: %v", err)
	}
	if st, _ := call(t, "GET", f.url("/api/assets/"+id), ""); st != 404 {
		t.Fatalf("GET after DELETE: %d", st)
	}
	if _, body := call(t, "GET", f.url("/api/tags?include_zero=true&prefix=doomed"), ""); strings.Contains(string(body), "doomed") {
		t.Fatalf("its tags are still in the tags file: %s", body)
	}
	if st, _ := call(t, "DELETE", f.url("/api/assets/"+id), ""); st != 404 {
		t.Fatalf("second DELETE: %d", st)
	}
	// A model: refused without delete_content, file and tags untouched.
	model := f.ids["sd15.safetensors"]
	if st, body := call(t, "DELETE", f.url("/api/assets/"+model), ""); st != 409 {
		t.Fatalf("DELETE of a model without delete_content: %d %s", st, body)
	}
	if _, err := os.Stat(filepath.Join(f.Folder("models"), "checkpoints", "sd15.safetensors")); err != nil {
		t.Fatal("a refused DELETE removed the model")
	}
	if st, body := call(t, "DELETE", f.url("/api/assets/"+model+"?delete_content=true"), ""); st != 204 {
		t.Fatalf("DELETE of a model with delete_content: %d %s", st, body)
	}
	// A missing asset (its file removed by hand): its entry goes.
	out := f.ids["ComfyUI_00001_.png"]
	call(t, "POST", f.url("/api/assets/"+out+"/tags"), `{"tags":["kept"]}`)
	os.Remove(filepath.Join(f.Folder("output"), "ComfyUI_00001_.png"))
	waitFor(t, func() bool {
		_, body := call(t, "GET", f.url("/api/assets/"+out), "")
		return strings.Contains(string(body), `"missing"`)
	})
	if st, body := call(t, "DELETE", f.url("/api/assets/"+out), ""); st != 204 {
		t.Fatalf("DELETE of a missing asset: %d %s", st, body)
	}
	if st, _ := call(t, "GET", f.url("/api/assets/"+out), ""); st != 404 {
		t.Fatalf("GET of a deleted missing asset: %d", st)
	}
}

// TestHashLookups: model files are hashed in the background and uploads as
// they arrive; HEAD /api/assets/hash finds them, from-hash copies one into
// a new asset, unknown or malformed hashes are 404 and 400.
func TestHashLookups(t *testing.T) {
	f := newFixture(t)
	if !f.s.lib.WaitHashed(10 * time.Second) {
		t.Fatal("the models were not hashed")
	}
	head := func(h string) int {
		resp, err := testClient.Do(mustReq(t, "HEAD", f.url("/api/assets/hash/"+h), nil))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	model := blake3Of("0123456789") // sd15.safetensors
	if st := head(model); st != 200 {
		t.Fatalf("HEAD of a model's hash: %d", st)
	}
	if st := head(blake3Of("nothing has this")); st != 404 {
		t.Fatalf("HEAD of an unknown hash: %d", st)
	}
	if st := head("blake3:XYZ"); st != 400 {
		t.Fatalf("HEAD of a malformed hash: %d", st)
	}
	_, body := call(t, "GET", f.url("/api/assets/"+f.ids["sd15.safetensors"]), "")
	if !strings.Contains(string(body), `"asset_hash":"`+model+`"`) {
		t.Fatalf("a hashed asset lacks its asset_hash: %s", body)
	}
	// An upload is known by its hash at once (input files are not hashed in
	// the background here).
	content := "uploaded content"
	upload(t, f.url("/api/assets"), part{"file", "u.png", content})
	if st := head(blake3Of(content)); st != 200 {
		t.Fatalf("HEAD of an upload's hash: %d", st)
	}
	st, body := call(t, "POST", f.url("/api/assets/from-hash"), `{"hash":"`+model+`","name":"copy.safetensors","tags":["models","model_type:loras","mine"]}`)
	c := decode[created](t, body)
	if st != 201 || c.AssetHash != model || c.LoaderPath != "copy.safetensors" || !strings.Contains(strings.Join(c.Tags, ","), "mine") {
		t.Fatalf("from-hash: %d %s", st, body)
	}
	if got, _ := os.ReadFile(filepath.Join(f.Folder("models"), "loras", "copy.safetensors")); string(got) != "0123456789" {
		t.Fatalf("from-hash content: %q", got)
	}
	for _, bad := range []struct {
		body string
		want int
	}{
		{`{"hash":"` + blake3Of("none") + `","tags":["input"]}`, 404},
		{`{"hash":"sha1:00","tags":["input"]}`, 400},
		{`{"hash":"` + model + `","tags":[]}`, 400},
		{`{"hash":"` + model + `","tags":["input"],"extra":1}`, 400},
	} {
		if st, body := call(t, "POST", f.url("/api/assets/from-hash"), bad.body); st != bad.want {
			t.Errorf("from-hash %s: %d %s", bad.body, st, body)
		}
	}
}
