package assetapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/comfyshim/comfyshim/proxy/internal/comfytest"
	"github.com/comfyshim/comfyshim/tagstore"
	"github.com/comfyshim/comfyshim/tagstore/assets"
)

// fixture is a ComfyUI folder with a known set of files, served by a shim.
type fixture struct {
	*comfyDir
	s   *shim
	ids map[string]string // name -> id
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	d := newComfyDir(t)
	ids := map[string]string{
		"photo.png":          d.add("input/photo.png", "aa", 1),
		"Cat.JPG":            d.add("input/sub/Cat.JPG", "ccc", 2),
		"ComfyUI_00001_.png": d.add("output/ComfyUI_00001_.png", "fffff", 3),
		"ComfyUI_00002_.png": d.add("output/ComfyUI_00002_.png", "g", 4),
		"page.html":          d.add("output/page.html", "<script>alert(1)</script>", 5),
		"sd15.safetensors":   d.add("models/checkpoints/sd15.safetensors", "0123456789", 6),
		"style.safetensors":  d.add("models/loras/sub/style.safetensors", "llll", 7),
	}
	d.add("models/checkpoints/put_checkpoints_here", "", 8)
	d.add("output/.hidden.png", "h", 9)
	s := serveDir(t, d)
	return &fixture{comfyDir: d, s: s, ids: ids}
}

func (f *fixture) url(p string) string { return f.s.URL + p }

func TestListAssets(t *testing.T) {
	f := newFixture(t)
	st, body := call(t, "GET", f.url("/api/assets"), "")
	if st != 200 {
		t.Fatalf("%d %s", st, body)
	}
	l := decode[listResp](t, body)
	if l.Total != 7 || l.HasMore || len(l.Assets) != 7 {
		t.Fatalf("total %d has_more %v len %d", l.Total, l.HasMore, len(l.Assets))
	}
	// Default order: created_at desc.
	if got := l.Names(); got != "style.safetensors,sd15.safetensors,page.html,ComfyUI_00002_.png,ComfyUI_00001_.png,Cat.JPG,photo.png" {
		t.Fatalf("order %s", got)
	}
	byName := map[string]int{}
	for i, a := range l.Assets {
		byName[a.Name] = i
	}
	lora := l.Assets[byName["style.safetensors"]]
	if lora.ID != f.ids["style.safetensors"] || !reflect.DeepEqual(lora.Tags, []string{"model_type:loras", "models"}) ||
		lora.DisplayName != "loras/sub/style.safetensors" || lora.LoaderPath != "sub/style.safetensors" || lora.Size != 4 || lora.PreviewURL != "" {
		t.Fatalf("model asset %+v", lora)
	}
	cat := l.Assets[byName["Cat.JPG"]]
	if !reflect.DeepEqual(cat.Tags, []string{"input"}) || cat.MimeType != "image/jpeg" || cat.DisplayName != "sub/Cat.JPG" || cat.LoaderPath != "sub/Cat.JPG" ||
		cat.PreviewURL != "/api/view?filename=Cat.JPG&subfolder=sub&type=input" || cat.UpdatedAt != "2026-11-01T00:02:00.000Z" {
		t.Fatalf("input asset %+v", cat)
	}
}

func TestListAssetsQueries(t *testing.T) {
	f := newFixture(t)
	// Give a few assets tags to filter on.
	for name, tags := range map[string]string{"photo.png": "portrait,Fav", "ComfyUI_00001_.png": "fav", "sd15.safetensors": "Fav,base"} {
		body, _ := json.Marshal(map[string]any{"tags": strings.Split(tags, ",")})
		if st, b := call(t, "POST", f.url("/api/assets/"+f.ids[name]+"/tags"), string(body)); st != 200 {
			t.Fatalf("tagging %s: %d %s", name, st, b)
		}
	}
	cases := []struct {
		query string
		want  string
		total int
		more  bool
	}{
		{"include_tags=Fav", "sd15.safetensors,photo.png", 2, false},
		{"include_tags=fav", "ComfyUI_00001_.png", 1, false}, // case kept: Fav and fav differ
		{"include_tags=Fav,models", "sd15.safetensors", 1, false},
		{"include_tags=Fav&include_tags=input", "photo.png", 1, false},
		{"exclude_tags=models,input", "page.html,ComfyUI_00002_.png,ComfyUI_00001_.png", 3, false},
		{"tags_any=portrait,base&sort=name&order=asc", "photo.png,sd15.safetensors", 2, false},
		{"tags_all=output&tags_none=fav", "page.html,ComfyUI_00002_.png", 2, false},
		{"name_contains=COMFYUI", "ComfyUI_00002_.png,ComfyUI_00001_.png", 2, false},
		{"name_contains=cat", "Cat.JPG", 1, false},
		{"sort=name&order=asc", "Cat.JPG,ComfyUI_00001_.png,ComfyUI_00002_.png,page.html,photo.png,sd15.safetensors,style.safetensors", 7, false},
		{"sort=size&order=asc&limit=3", "ComfyUI_00002_.png,photo.png,Cat.JPG", 7, true},
		{"sort=size&order=desc&limit=2&offset=1", "sd15.safetensors,ComfyUI_00001_.png", 7, true},
		{"sort=updated_at&order=asc&offset=6", "style.safetensors", 7, false},
		{"offset=50", "", 7, false},
		{"metadata_filter=%7B%22a%22%3A1%7D", "", 0, false},
		{"include_tags=nothing-has-this", "", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			st, body := call(t, "GET", f.url("/api/assets?"+tc.query), "")
			if st != 200 {
				t.Fatalf("%d %s", st, body)
			}
			l := decode[listResp](t, body)
			if l.Names() != tc.want || l.Total != tc.total || l.HasMore != tc.more {
				t.Fatalf("got %s total %d more %v; want %s total %d more %v", l.Names(), l.Total, l.HasMore, tc.want, tc.total, tc.more)
			}
		})
	}
}

func TestSortTiesBrokenByID(t *testing.T) {
	d := newComfyDir(t)
	var ids []string
	for i := 0; i < 6; i++ {
		ids = append(ids, d.add(fmt.Sprintf("output/same_%d.png", i), "x", 1))
	}
	s := serveDir(t, d)
	for _, order := range []string{"asc", "desc"} {
		st, body := call(t, "GET", s.URL+"/api/assets?sort=size&order="+order, "")
		if st != 200 {
			t.Fatal(st)
		}
		l := decode[listResp](t, body)
		if len(l.Assets) != len(ids) {
			t.Fatalf("order=%s: %d assets, want %d", order, len(l.Assets), len(ids))
		}
		for i := 1; i < len(l.Assets); i++ {
			a, b := l.Assets[i-1].ID, l.Assets[i].ID
			if (order == "asc" && a > b) || (order == "desc" && a < b) {
				t.Fatalf("order=%s: ties not ordered by id: %s then %s", order, a, b)
			}
		}
	}
}

func TestInvalidQueries(t *testing.T) {
	f := newFixture(t)
	for _, q := range []string{
		"/api/assets?limit=0", "/api/assets?limit=501", "/api/assets?limit=ten", "/api/assets?offset=-1",
		"/api/assets?sort=colour", "/api/assets?order=up", "/api/assets?include_public=maybe", "/api/assets?metadata_filter=nope",
		"/api/tags?limit=0", "/api/tags?limit=1001", "/api/tags?order=count_asc", "/api/tags?include_zero=perhaps", "/api/tags?offset=x",
		"/api/assets/tags/refine?limit=1001",
	} {
		st, body := call(t, "GET", f.url(q), "")
		e := decode[ErrorResponse](t, body)
		if st != 400 || e.Code != "INVALID_QUERY" {
			t.Errorf("%s: %d %s", q, st, body)
		}
	}
	// The largest allowed values are fine.
	for _, q := range []string{"/api/assets?limit=500", "/api/tags?limit=1000", "/api/assets?limit=1&offset=0"} {
		if st, body := call(t, "GET", f.url(q), ""); st != 200 {
			t.Errorf("%s: %d %s", q, st, body)
		}
	}
}

func TestGetAssetAndContent(t *testing.T) {
	f := newFixture(t)
	id := f.ids["ComfyUI_00001_.png"]
	st, body := call(t, "GET", f.url("/api/assets/"+id), "")
	a := decode[map[string]any](t, body)
	if st != 200 || a["id"] != id || a["name"] != "ComfyUI_00001_.png" || a["mime_type"] != "image/png" {
		t.Fatalf("%d %s", st, body)
	}
	if st, body := call(t, "GET", f.url("/api/assets/"+strings.ToUpper(id)), ""); st != 200 {
		t.Fatalf("upper-case id: %d %s", st, body)
	}
	for path, want := range map[string]string{
		"/api/assets/not-a-uuid":                                   "ASSET_NOT_FOUND",
		"/api/assets/00000000-0000-4000-8000-000000000000":         "ASSET_NOT_FOUND",
		"/api/assets/00000000-0000-4000-8000-000000000000/content": "ASSET_NOT_FOUND",
		"/api/assets/zzz/content":                                  "ASSET_NOT_FOUND",
	} {
		st, body := call(t, "GET", f.url(path), "")
		if e := decode[ErrorResponse](t, body); e.Code != want || st != 404 {
			t.Errorf("%s: %d %s", path, st, body)
		}
	}

	resp, err := testClient.Get(f.url("/api/assets/" + id + "/content"))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(data) != "fffff" || resp.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("content: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), data)
	}
	req := mustReq(t, "GET", f.url("/api/assets/"+id+"/content"), nil)
	req.Header.Set("Range", "bytes=1-2")
	resp, err = testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || string(data) != "ff" {
		t.Fatalf("range: %d %q", resp.StatusCode, data)
	}

	// HTML is never rendered from comfyshim's origin.
	resp, err = testClient.Get(f.url("/api/assets/" + f.ids["page.html"] + "/content"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct == "text/html" || strings.Contains(ct, "html") ||
		!strings.HasPrefix(resp.Header.Get("Content-Disposition"), "attachment") ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "sandbox") {
		t.Fatalf("html served inline: %v", resp.Header)
	}
}

func TestAddAndRemoveTags(t *testing.T) {
	f := newFixture(t)
	id := f.ids["sd15.safetensors"]
	u := f.url("/api/assets/" + id + "/tags")
	steps := []struct {
		method, body string
		want         map[string][]string
	}{
		{"POST", `{"tags":[" b ","a","b","Portrait","portrait","models"]}`,
			map[string][]string{"added": {"Portrait", "a", "b", "portrait"}, "already_present": {"models"}, "total_tags": {"Portrait", "a", "b", "model_type:checkpoints", "models", "portrait"}}},
		{"POST", `{"tags":["a"]}`,
			map[string][]string{"added": {}, "already_present": {"a"}, "total_tags": {"Portrait", "a", "b", "model_type:checkpoints", "models", "portrait"}}},
		{"DELETE", `{"tags":["portrait","nope","models"]}`,
			map[string][]string{"removed": {"models", "portrait"}, "not_present": {"nope"}, "total_tags": {"Portrait", "a", "b", "model_type:checkpoints"}}},
		{"DELETE", `{"tags":["zzz"]}`,
			map[string][]string{"removed": {}, "not_present": {"zzz"}, "total_tags": {"Portrait", "a", "b", "model_type:checkpoints"}}},
	}
	for i, st := range steps {
		code, body := call(t, st.method, u, st.body)
		if code != 200 {
			t.Fatalf("step %d: %d %s", i, code, body)
		}
		if got := decode[map[string][]string](t, body); !reflect.DeepEqual(got, st.want) {
			t.Fatalf("step %d: got %s", i, body)
		}
	}
	_, body := call(t, "GET", f.url("/api/assets/"+id), "")
	if a := decode[map[string]any](t, body); fmt.Sprint(a["tags"]) != "[Portrait a b model_type:checkpoints]" {
		t.Fatalf("asset after edits: %s", body)
	}
	entries, err := tagstore.Parse(f.sidecar(t))
	if err != nil || !reflect.DeepEqual(entries[id].Tags, []string{"Portrait", "a", "b", "model_type:checkpoints"}) || entries[id].Path != "models/checkpoints/sd15.safetensors" {
		t.Fatalf("sidecar: %v %+v", err, entries)
	}
}

func TestTagBodyErrorsChangeNothing(t *testing.T) {
	f := newFixture(t)
	id := f.ids["photo.png"]
	if st, _ := call(t, "POST", f.url("/api/assets/"+id+"/tags"), `{"tags":["keep"]}`); st != 200 {
		t.Fatal(st)
	}
	before := f.sidecar(t)
	long := strings.Repeat("é", 129)
	many := `{"tags":[` + strings.Repeat(`"x",`, 256) + `"y"]}`
	cases := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"not json", "POST", id, `{"tags":[`, 400, "INVALID_JSON"},
		{"not json at all", "DELETE", id, `tags=a`, 400, "INVALID_JSON"},
		{"empty body", "POST", id, ``, 400, "INVALID_JSON"},
		{"two values", "POST", id, `{"tags":["a"]} {}`, 400, "INVALID_JSON"},
		{"array body", "POST", id, `["a"]`, 400, "INVALID_BODY"},
		{"missing tags", "POST", id, `{"tag":["a"]}`, 400, "INVALID_BODY"},
		{"tags not array", "POST", id, `{"tags":"a"}`, 400, "INVALID_BODY"},
		{"non-string item", "POST", id, `{"tags":["a",1]}`, 400, "INVALID_BODY"},
		{"null item", "DELETE", id, `{"tags":[null]}`, 400, "INVALID_BODY"},
		{"empty list", "POST", id, `{"tags":[]}`, 400, "INVALID_BODY"},
		{"blank after trim", "POST", id, `{"tags":["  ", ""]}`, 400, "INVALID_BODY"},
		{"too long", "POST", id, `{"tags":["` + long + `"]}`, 400, "INVALID_BODY"},
		{"control char", "POST", id, `{"tags":["a\u0000b"]}`, 400, "INVALID_BODY"},
		{"too many", "POST", id, many, 400, "INVALID_BODY"},
		{"malformed id", "POST", "nope", `{"tags":["a"]}`, 404, "ASSET_NOT_FOUND"},
		{"unknown id", "DELETE", "00000000-0000-4000-8000-000000000000", `{"tags":["a"]}`, 404, "ASSET_NOT_FOUND"},
		{"oversized", "POST", id, `{"tags":["` + strings.Repeat("a", 2<<20) + `"]}`, 413, "PAYLOAD_TOO_LARGE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, body := call(t, tc.method, f.url("/api/assets/"+tc.path+"/tags"), tc.body)
			e := decode[ErrorResponse](t, body)
			if st != tc.status || e.Code != tc.code || e.Message == "" {
				t.Fatalf("got %d %s, want %d %s", st, body, tc.status, tc.code)
			}
		})
	}
	after := f.sidecar(t)
	if string(before) != string(after) {
		t.Fatal("a rejected request changed the sidecar")
	}
	// 128 characters is fine.
	if st, body := call(t, "POST", f.url("/api/assets/"+id+"/tags"), `{"tags":["`+strings.Repeat("é", 128)+`"]}`); st != 200 {
		t.Fatalf("128 characters: %d %s", st, body)
	}
}

func TestListTagsAndRefine(t *testing.T) {
	f := newFixture(t)
	tag := func(name, tags string) {
		body, _ := json.Marshal(map[string]any{"tags": strings.Split(tags, ",")})
		if st, b := call(t, "POST", f.url("/api/assets/"+f.ids[name]+"/tags"), string(body)); st != 200 {
			t.Fatalf("%d %s", st, b)
		}
	}
	tag("photo.png", "Fav,model_typo")
	tag("ComfyUI_00001_.png", "Fav")
	tag("ComfyUI_00002_.png", "fav,gone-soon")
	// A tagged file that disappears: its tags stay in the sidecar but are not counted.
	if st, _ := call(t, "POST", f.url("/api/assets/"+f.ids["page.html"]+"/tags"), `{"tags":["orphan"]}`); st != 200 {
		t.Fatal(st)
	}
	os.Remove(filepath.Join(f.Base, "output", "page.html"))
	waitFor(t, func() bool {
		_, body := call(t, "GET", f.url("/api/assets?include_tags=orphan"), "")
		return decode[listResp](t, body).Total == 0
	})
	// Still addressable by id, tagged "missing", with no content.
	st, body := call(t, "GET", f.url("/api/assets/"+f.ids["page.html"]), "")
	if gone := decode[listResp](t, []byte(`{"assets":[`+string(body)+`]}`)).Assets[0]; st != 200 || strings.Join(gone.Tags, ",") != "missing,orphan,output" || gone.PreviewURL != "" || gone.Name != "page.html" {
		t.Fatalf("a tagged asset whose file is gone: %d %s", st, body)
	}
	if st, body := call(t, "GET", f.url("/api/assets/"+f.ids["page.html"]+"/content"), ""); st != 404 {
		t.Fatalf("content of a missing asset: %d %s", st, body)
	}

	cases := []struct{ query, want string }{
		{"", "Fav=2,input=2,models=2,output=2,fav=1,gone-soon=1,model_type:checkpoints=1,model_type:loras=1,model_typo=1"},
		{"order=name_asc", "Fav=2,fav=1,gone-soon=1,input=2,model_type:checkpoints=1,model_type:loras=1,model_typo=1,models=2,output=2"},
		{"prefix=model_type:", "model_type:checkpoints=1,model_type:loras=1"},
		{"prefix=Model", ""}, // case-sensitive
		{"prefix=f", "fav=1"},
		{"prefix=model_type%25", ""}, // literal, no wildcards
		{"limit=2&offset=1", "input=2,models=2"},
		{"include_zero=true&prefix=o", "output=2,orphan=0"},
		{"include_zero=false&prefix=o", "output=2"},
	}
	for _, tc := range cases {
		t.Run("tags?"+tc.query, func(t *testing.T) {
			st, body := call(t, "GET", f.url("/api/tags?"+tc.query), "")
			if st != 200 {
				t.Fatalf("%d %s", st, body)
			}
			if got := decode[tagsResp](t, body).String(); got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
	_, body = call(t, "GET", f.url("/api/tags?limit=2"), "")
	if r := decode[tagsResp](t, body); r.Total != 9 || !r.HasMore {
		t.Fatalf("paging: %s", body)
	}

	refine := []struct{ query, want string }{
		{"include_tags=output", `{"Fav":1,"fav":1,"gone-soon":1,"output":2}`},
		{"exclude_tags=output,models", `{"Fav":1,"input":2,"model_typo":1}`},
		{"name_contains=safetensors", `{"model_type:checkpoints":1,"model_type:loras":1,"models":2}`},
		{"include_tags=nothing", `{}`},
		{"limit=1", `{"Fav":2}`},
	}
	for _, tc := range refine {
		st, body := call(t, "GET", f.url("/api/assets/tags/refine?"+tc.query), "")
		var got map[string]map[string]int
		json.Unmarshal(body, &got)
		want := map[string]map[string]int{}
		json.Unmarshal([]byte(`{"tag_counts":`+tc.want+`}`), &want)
		if st != 200 || !reflect.DeepEqual(got, want) {
			t.Errorf("refine?%s: %d %s, want %s", tc.query, st, body, tc.want)
		}
	}
}

func TestBrokenSidecarAnswers503(t *testing.T) {
	f := newFixture(t)
	u := f.url("/api/assets/" + f.ids["photo.png"] + "/tags")
	if st, _ := call(t, "POST", u, `{"tags":["before"]}`); st != 200 {
		t.Fatal(st)
	}
	broken := "{\n  \"version\": 1,\n  \"assets\": {\n    \"" + f.ids["photo.png"] + "\": {\"tags\": [\"before\",\n"
	if err := os.WriteFile(f.tagsFile(), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	var e ErrorResponse
	waitFor(t, func() bool {
		st, body := call(t, "POST", u, `{"tags":["during"]}`)
		e = decode[ErrorResponse](t, body)
		return st == http.StatusServiceUnavailable
	})
	if e.Code != "SIDECAR_INVALID" || !strings.Contains(e.Message, "line") {
		t.Fatalf("%+v", e)
	}
	if data, _ := os.ReadFile(f.tagsFile()); string(data) != broken {
		t.Fatal("the broken file was overwritten")
	}
	// Reads keep serving the last good state.
	_, body := call(t, "GET", f.url("/api/assets/"+f.ids["photo.png"]), "")
	if a := decode[map[string]any](t, body); fmt.Sprint(a["tags"]) != "[before input]" {
		t.Fatalf("last good state: %s", body)
	}
}

func FuzzParseTagsBody(f *testing.F) {
	for _, s := range []string{`{"tags":["a"," b ","a"]}`, `{"tags":[]}`, `[]`, `{"tags":[1]}`, `{"tags":["\u0000"]}`, `{`, `{"tags":["a"]}x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		tags, err := parseTagsBody(body)
		if err != nil {
			if code := err.(*Error).Code; code != "INVALID_JSON" && code != "INVALID_BODY" {
				t.Fatalf("code %q", code)
			}
			return
		}
		if len(tags) == 0 || len(tags) > assets.MaxTagsPerRequest {
			t.Fatalf("%d tags accepted", len(tags))
		}
		seen := map[string]bool{}
		for _, tg := range tags {
			if tagstore.CheckTag(tg) != nil || seen[tg] {
				t.Fatalf("accepted bad or duplicate tag %q", tg)
			}
			seen[tg] = true
		}
	})
}

// The conformance check itself must catch a response that breaks the spec.
func TestConformanceCheckCatchesViolations(t *testing.T) {
	h := http.Header{"Content-Type": {"application/json"}}
	id := "0b9e5f4c-1d2a-4c3b-8e7f-112233445566"
	bad := []struct{ method, path, body string }{
		{"GET", "/api/tags", `{"tags":[{"name":"a","count":1}],"has_more":false}`},             // no total
		{"GET", "/api/tags", `{"tags":[{"name":"a","count":"1"}],"total":1,"has_more":false}`}, // count a string
		{"GET", "/api/assets", `{"assets":[{"id":"` + id + `","name":"a"}],"total":1,"has_more":false}`},
		{"DELETE", "/api/assets/" + id + "/tags", `{"removed":["a"]}`}, // no total_tags
		{"GET", "/api/assets/tags/refine", `{"tag_counts":{"a":"x"}}`},
	}
	for _, b := range bad {
		req := mustReq(t, b.method, "http://127.0.0.1:1"+b.path, nil)
		if err := comfytest.ValidateAgainstSpec(t, req, "", 200, h, []byte(b.body)); err == nil {
			t.Errorf("%s %s accepted %s", b.method, b.path, b.body)
		}
	}
	good := mustReq(t, "GET", "http://127.0.0.1:1/api/tags", nil)
	if err := comfytest.ValidateAgainstSpec(t, good, "", 200, h, []byte(`{"tags":[],"total":0,"has_more":false}`)); err != nil {
		t.Fatalf("valid body refused: %v", err)
	}
}

// TestCursorPaging pages every sort both ways by cursor and gets exactly the
// offset listing, with next_cursor while has_more; bad cursors are 400.
func TestCursorPaging(t *testing.T) {
	f := newFixture(t)
	for _, sort := range assets.SortKeys {
		for _, order := range []string{"asc", "desc"} {
			base := "/api/assets?sort=" + sort + "&order=" + order
			_, body := call(t, "GET", f.url(base+"&limit=100"), "")
			want := comfytest.Decode[listResp](t, body).Names()
			var got []string
			cursor := ""
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatalf("%s: cursor paging does not end", base)
				}
				q := base + "&limit=2"
				if cursor != "" {
					q += "&after=" + cursor
				}
				st, body := call(t, "GET", f.url(q), "")
				l := comfytest.Decode[listResp](t, body)
				if st != 200 || l.Total != 7 || l.HasMore != (l.NextCursor != "") {
					t.Fatalf("%s: %d %s", q, st, body)
				}
				if l.Names() != "" {
					got = append(got, l.Names())
				}
				if !l.HasMore {
					break
				}
				cursor = l.NextCursor
			}
			if strings.Join(got, ",") != want {
				t.Errorf("%s by cursor: %s\nwant %s", base, strings.Join(got, ","), want)
			}
		}
	}
	_, body := call(t, "GET", f.url("/api/assets?sort=name&order=asc&limit=2"), "")
	next := comfytest.Decode[listResp](t, body).NextCursor
	for _, c := range []struct{ q, code string }{
		{"sort=name&order=desc&after=" + next, "INVALID_CURSOR"},
		{"sort=size&order=asc&after=" + next, "INVALID_CURSOR"},
		{"sort=name&order=asc&offset=2&after=" + next, "INVALID_QUERY"},
		{"after=not-a-cursor", "INVALID_CURSOR"},
		{"after=" + strings.Repeat("A", 5000), "INVALID_CURSOR"},
		{"tags_all=a&tags_none=a", "INVALID_TAG_FILTER"},
		{"include_tags=a&exclude_tags=b,a", "INVALID_TAG_FILTER"},
	} {
		st, body := call(t, "GET", f.url("/api/assets?"+c.q), "")
		if e := comfytest.Decode[ErrorResponse](t, body); st != 400 || e.Code != c.code {
			t.Errorf("%s: %d %s, want 400 %s", c.q, st, body, c.code)
		}
	}
}

// TestAssetFieldsAsOSS: every asset has user_metadata.filename and
// loader_path (the value a loader or LoadImage widget takes), metadata,
// is_immutable, and a relative preview_url for what /view serves.
func TestAssetFieldsAsOSS(t *testing.T) {
	f := newFixture(t)
	_, body := call(t, "GET", f.url("/api/assets?limit=100"), "")
	for _, a := range comfytest.Decode[listResp](t, body).Assets {
		if a.UserMetadata["filename"] != a.LoaderPath || a.LoaderPath == "" || strings.Contains(a.LoaderPath, "\\") || a.Metadata == nil || a.IsImmutable == nil {
			t.Errorf("%s: loader_path %q, user_metadata %v, metadata %v, is_immutable %v", a.Name, a.LoaderPath, a.UserMetadata, a.Metadata, a.IsImmutable)
		}
		if isModel := strings.Contains(strings.Join(a.Tags, ","), "models"); isModel != (a.PreviewURL == "") || (!isModel && !strings.HasPrefix(a.PreviewURL, "/api/view?")) {
			t.Errorf("%s: preview_url %q", a.Name, a.PreviewURL)
		}
	}
}

// TestLoaderValuesAreComfyUIs: a model's user_metadata.filename is one of
// the options ComfyUI's /object_info lists for its loader.
func TestLoaderValuesAreComfyUIs(t *testing.T) {
	f := newFixture(t)
	up := comfytest.New()
	up.ModelsDir = f.Folder("models")
	var info map[string]struct {
		Input struct {
			Required map[string][]json.RawMessage `json:"required"`
		} `json:"input"`
	}
	rec := httptestGet(t, up, "/api/object_info")
	if err := json.Unmarshal(rec, &info); err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct{ category, node, input string }{{"checkpoints", "CheckpointLoaderSimple", "ckpt_name"}, {"loras", "LoraLoader", "lora_name"}} {
		var options []string
		if err := json.Unmarshal(info[l.node].Input.Required[l.input][0], &options); err != nil {
			t.Fatal(err)
		}
		_, body := call(t, "GET", f.url("/api/assets?include_tags=models,model_type:"+l.category), "")
		list := comfytest.Decode[listResp](t, body)
		if len(list.Assets) == 0 {
			t.Fatalf("no %s", l.category)
		}
		for _, a := range list.Assets {
			if name, _ := a.UserMetadata["filename"].(string); !slices.Contains(options, name) {
				t.Errorf("%s: filename %q is not among %s's options %q", a.Name, name, l.node, options)
			}
		}
	}
}

// TestUpdateAsset: PUT sets the name, the complete tag list and
// user_metadata, durably; metadata_filter finds assets by it; bad bodies
// are 400 and change nothing.
func TestUpdateAsset(t *testing.T) {
	f := newFixture(t)
	id := f.ids["photo.png"]
	st, body := call(t, "PUT", f.url("/api/assets/"+id), `{"name":" Holiday photo ","tags":["trip","input"],"user_metadata":{"rating":5,"by":["ann"]}}`)
	var got struct {
		Name         string
		Tags         []string
		UserMetadata map[string]any `json:"user_metadata"`
	}
	_ = json.Unmarshal(body, &got)
	if st != 200 || got.Name != "Holiday photo" || strings.Join(got.Tags, ",") != "input,trip" || got.UserMetadata["rating"] != 5.0 || got.UserMetadata["filename"] != "photo.png" {
		t.Fatalf("PUT: %d %s", st, body)
	}
	// The listing shows it; metadata_filter selects by it.
	for q, want := range map[string]string{
		`{"rating":5}`:      "Holiday photo",
		`{"rating":[4,5]}`:  "Holiday photo",
		`{"by":["ann"]}`:    "Holiday photo",
		`{"rating":4}`:      "",
		`{"missing_key":1}`: "",
		`{}`:                "ComfyUI_00002_.png,ComfyUI_00001_.png,Cat.JPG,Holiday photo",
	} {
		_, body := call(t, "GET", f.url("/api/assets?include_tags=&exclude_tags=models&metadata_filter="+url.QueryEscape(q)), "")
		if names := decode[listResp](t, body).Names(); names != strings.Replace(want, "ComfyUI_00002_.png,ComfyUI_00001_.png", "page.html,ComfyUI_00002_.png,ComfyUI_00001_.png", 1) {
			t.Errorf("metadata_filter=%s: %s", q, names)
		}
	}
	before := f.sidecar(t)
	for _, bad := range []string{`{}`, `[]`, `{"name":""}`, `{"name":5}`, `{"tags":"x"}`, `{"user_metadata":[1]}`, `{"mime_type":"image/png"}`, `{"name":"a\u0000b"}`, `not json`} {
		if st, body := call(t, "PUT", f.url("/api/assets/"+id), bad); st != 400 {
			t.Errorf("PUT %s: %d %s", bad, st, body)
		}
	}
	if after := f.sidecar(t); !bytes.Equal(before, after) {
		t.Fatalf("a rejected PUT changed the tags file:\n%s\n%s", before, after)
	}
	if !strings.Contains(string(before), `"name": "Holiday photo"`) || !strings.Contains(string(before), `"user_metadata": {"rating":5,"by":["ann"]}`) {
		t.Fatalf("the tags file lacks the name or metadata:\n%s", before)
	}
	if st, _ := call(t, "PUT", f.url("/api/assets/"+"00000000-0000-4000-8000-000000000009"), `{"name":"x"}`); st != 404 {
		t.Fatalf("PUT on an unknown asset: %d", st)
	}
}
