package proxy

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestWithClientID(t *testing.T) {
	cases := []struct {
		body  string
		needs bool
		want  string
	}{
		{`{}`, true, `{"client_id":"c1"}`},
		{` {"prompt": {}} ` + "\n", true, ` {"prompt": {},"client_id":"c1"} ` + "\n"},
		{`{"prompt":{},"client_id":""}`, true, `{"prompt":{},"client_id":"","client_id":"c1"}`},
		{`{"prompt":{},"client_id":"mine"}`, false, ""},
		{`not json`, false, ""},
		{`[1]`, false, ""},
		{`null`, false, ""},
	}
	for _, c := range cases {
		if got := needsClientID([]byte(c.body)); got != c.needs {
			t.Errorf("needsClientID(%q) = %v", c.body, got)
			continue
		}
		if c.needs {
			got := string(withClientID([]byte(c.body), "c1"))
			if got != c.want || clientIDOf([]byte(got)) != "c1" {
				t.Errorf("withClientID(%q) = %q, want %q", c.body, got, c.want)
			}
		}
	}
}

// FuzzWithClientID: whatever object a client sends, the prompt ComfyUI gets
// is the same object plus the client_id.
func FuzzWithClientID(f *testing.F) {
	f.Add([]byte(`{"prompt":{"1":{"class_type":"X"}},"extra_data":{"a":[1,2]}}`))
	f.Add([]byte(`{ }`))
	f.Add([]byte(`{"client_id":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if !needsClientID(body) {
			return
		}
		out := withClientID(body, "comfyshim-x")
		var before, after map[string]any
		if err := json.Unmarshal(body, &before); err != nil {
			t.Skip()
		}
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("%q became invalid: %q", body, out)
		}
		if after["client_id"] != "comfyshim-x" {
			t.Fatalf("client_id not set: %q", out)
		}
		delete(after, "client_id")
		delete(before, "client_id")
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("%q changed: %q", body, out)
		}
	})
}
