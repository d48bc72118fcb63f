package assetapi

import (
	"bytes"
	"encoding/json"
	"testing"
)

// A listing's answer is exactly what json.Encoder would write for it.
func TestListEncodingMatchesEncodingJSON(t *testing.T) {
	odd := []string{"", "plain", `quo"te \ back`, "<b>&amp;</b>", "tab\tnl\ncr\rbs\bff\f", "\x00\x01\x1f\x7f",
		"ünïcödé ✓ 🎨", "line\u2028para\u2029", "bad \xff\xfe utf8", "\xe2\x80", "a\u00a0b"}
	var items []assetJSON
	for i, s := range odd {
		x := assetJSON{ID: "id-" + s, Name: s, Size: int64(i) * -12345, MimeType: s, Tags: []string{s, "t"},
			UserMetadata: json.RawMessage(`{"filename":` + mustMarshal(t, s) + `}`), Metadata: emptyObject,
			CreatedAt: s, UpdatedAt: "2026-11-29T00:00:00.000Z", LastAccessTime: s, DisplayName: s, LoaderPath: s,
			IsImmutable: i%2 == 0}
		if i%3 == 0 {
			x.PreviewURL, x.AssetHash = "/api/view?filename="+s, "blake3:"+s
		}
		if i%4 == 0 {
			x.Tags = []string{}
		}
		if i == 5 {
			x.Tags, x.UserMetadata, x.Metadata = nil, nil, nil
		}
		items = append(items, x)
	}
	for _, l := range []listJSON{
		{},
		{Assets: []assetJSON{}, Total: 0},
		{Assets: items, Total: 1 << 40, HasMore: true, NextCursor: "abc<>&"},
		{Assets: items[:1], Total: 1},
	} {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(l); err != nil {
			t.Fatal(err)
		}
		if got := l.appendJSON(nil); string(got) != want.String() {
			t.Fatalf("got\n%s\nwant\n%s", got, want.String())
		}
	}
}

func mustMarshal(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a<b>&c", "\u2028", "\xff", "é\x00", `"\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); string(got) != string(want) {
			t.Fatalf("%q: got %s, want %s", s, got, want)
		}
	})
}
