package apiv2

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseSubmission(t *testing.T) {
	cases := []struct {
		name, body, code string
		nodes            int
	}{
		{"api format", `{"workflow":{"3":{"class_type":"KSampler","inputs":{"seed":1}},"9":{"class_type":"SaveImage","inputs":{}}}}`, "", 2},
		{"partner key", `{"workflow":{"9":{"class_type":"SaveImage"}},"extra_data":{"api_key_comfy_org":"k"}}`, "", 1},
		{"null extra_data", `{"workflow":{"9":{"class_type":"SaveImage"}},"extra_data":null}`, "", 1},
		{"ui format", `{"workflow":{"last_node_id":9,"nodes":[{"id":9}],"links":[]}}`, codeWorkflowFormatUI, 0},
		{"nodes without links is a node named nodes", `{"workflow":{"nodes":{"class_type":"SaveImage"}}}`, "", 1},
		{"no class_type", `{"workflow":{"1":{"inputs":{}}}}`, codeInvalidWorkflow, 0},
		{"inputs not an object", `{"workflow":{"1":{"class_type":"X","inputs":[1]}}}`, codeInvalidWorkflow, 0},
		{"node not an object", `{"workflow":{"1":7}}`, codeInvalidWorkflow, 0},
		{"empty", `{"workflow":{}}`, codeInvalidWorkflow, 0},
		{"missing", `{"extra_data":{}}`, codeInvalidRequest, 0},
		{"array", `[]`, codeInvalidRequest, 0},
		{"null", `null`, codeInvalidRequest, 0},
		{"reserved", `{"workflow":{"9":{"class_type":"SaveImage"}},"webhook_url":"x"}`, codeInvalidRequest, 0},
		{"unknown field", `{"workflow":{"9":{"class_type":"SaveImage"}},"client_id":"x"}`, codeInvalidRequest, 0},
		{"extra_data other key", `{"workflow":{"9":{"class_type":"SaveImage"}},"extra_data":{"x":"y"}}`, codeInvalidRequest, 0},
		{"extra_data not strings", `{"workflow":{"9":{"class_type":"SaveImage"}},"extra_data":{"api_key_comfy_org":1}}`, codeInvalidRequest, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parseSubmission([]byte(tc.body))
			var re *requestError
			switch {
			case tc.code == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.code == "" && len(s.nodes) != tc.nodes:
				t.Fatalf("%d nodes, want %d", len(s.nodes), tc.nodes)
			case tc.code != "" && (!errors.As(err, &re) || re.code != tc.code):
				t.Fatalf("got %v, want %s", err, tc.code)
			}
		})
	}
}

func TestComfyValidation(t *testing.T) {
	body := `{"error":{"type":"prompt_outputs_failed_validation","message":"Prompt outputs failed validation","details":"","extra_info":{}},
	"node_errors":{"12":{"errors":[{"type":"required_input_missing","message":"Required input is missing","details":"model","extra_info":{"input_name":"model"}}],"class_type":"KSampler"},
	"3":{"errors":[{"type":"value_not_in_list","message":"Value not in list","details":"ckpt_name: 'x' not in []","extra_info":{"input_name":"ckpt_name"}}],"class_type":"CheckpointLoaderSimple"}}}`
	e := comfyValidation([]byte(body))
	if e.code != codeInvalidWorkflow || !strings.HasPrefix(e.msg, "Node 3 (CheckpointLoaderSimple): Value not in list") {
		t.Fatalf("%s: %s", e.code, e.msg)
	}
	ne := e.details["node_errors"].(map[string]any)
	if l := ne["12"].([]map[string]any); len(l) != 1 || l[0]["field"] != "model" || l[0]["reason"] != "required_input_missing" {
		t.Fatalf("node 12: %v", ne["12"])
	}
	if e := comfyValidation([]byte("<html>")); e.code != codeInvalidWorkflow || e.details["node_errors"] == nil {
		t.Fatalf("unreadable answer: %+v", e)
	}
}

func TestPlacement(t *testing.T) {
	cases := []struct{ in, root, cat, name string }{
		{"photo.png", "input", "", "photo.png"},
		{"input/photo.png", "input", "", "photo.png"},
		{"output/x.png", "output", "", "x.png"},
		{"models/checkpoints/x.safetensors", "models", "checkpoints", "x.safetensors"},
		{`models\loras\y.safetensors`, "models", "loras", "y.safetensors"},
		{"../photo.png", "", "", ""},
		{"input/../../etc/passwd", "", "", ""},
		{"models/../x.safetensors", "", "", ""},
		{"models/..", "", "", ""},
		{"temp/x.png", "", "", ""},
		{"a/b.png", "", "", ""},
		{".hidden", "", "", ""},
		{"", "", "", ""},
		{"x:y.png", "", "", ""},
	}
	for _, tc := range cases {
		root, cat, name, err := placement(tc.in)
		if tc.root == "" {
			if err == nil {
				t.Errorf("%q accepted as %s/%s/%s", tc.in, root, cat, name)
			}
			continue
		}
		if err != nil || root != tc.root || cat != tc.cat || name != tc.name {
			t.Errorf("%q: %s %s %s %v", tc.in, root, cat, name, err)
		}
	}
}

// FuzzPlacement: whatever file_path says, an accepted placement names a
// known root and plain names (no separators, no dot names).
func FuzzPlacement(f *testing.F) {
	for _, s := range []string{"photo.png", "models/checkpoints/x.safetensors", "../x", "output/a.png", `models\..\x`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, fp string) {
		root, cat, name, err := placement(fp)
		if err != nil {
			return
		}
		if root != "input" && root != "output" && root != "models" {
			t.Fatalf("root %q", root)
		}
		for _, part := range []string{cat, name} {
			if strings.ContainsAny(part, `/\`) || part == "." || part == ".." || strings.HasPrefix(part, ".") {
				t.Fatalf("%q placed as %q/%q", fp, cat, name)
			}
		}
		if name == "" || (root == "models") != (cat != "") {
			t.Fatalf("%q placed as %s %q %q", fp, root, cat, name)
		}
	})
}

// FuzzParseSubmission: any body is accepted with nodes that all have a
// class type, or refused with a 422 code of the contract.
func FuzzParseSubmission(f *testing.F) {
	for _, s := range []string{`{"workflow":{"9":{"class_type":"SaveImage","inputs":{}}}}`, `{"workflow":{"nodes":[],"links":[]}}`, `null`, `{"workflow":{"1":{"class_type":"A","inputs":{"x":{"__type":"core/ASSET","info":{"id":"y"}}}}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := parseSubmission(body)
		if err != nil {
			var re *requestError
			if !errors.As(err, &re) || (re.code != codeInvalidRequest && re.code != codeInvalidWorkflow && re.code != codeWorkflowFormatUI) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if len(s.nodes) == 0 || len(s.nodes) != len(s.workflow) {
			t.Fatalf("%d nodes of %d", len(s.nodes), len(s.workflow))
		}
		for id, c := range s.nodes {
			if c == "" {
				t.Fatalf("node %s without class", id)
			}
		}
		if !json.Valid(s.raw) {
			t.Fatal("raw workflow is not JSON")
		}
	})
}

// FuzzComfyValidation: ComfyUI's 400 answer, whatever it holds, becomes an
// invalid_workflow refusal with node_errors.
func FuzzComfyValidation(f *testing.F) {
	f.Add([]byte(`{"error":{"message":"m"},"node_errors":{"1":{"errors":[{"type":"t","message":"x"}],"class_type":"C"}}}`))
	f.Add([]byte(`{"node_errors":{"1":null}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e := comfyValidation(body)
		if e.code != codeInvalidWorkflow || e.msg == "" || e.details["node_errors"] == nil {
			t.Fatalf("%+v", e)
		}
		if _, err := json.Marshal(e.details); err != nil {
			t.Fatal(err)
		}
	})
}
