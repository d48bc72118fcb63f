// Package deploy holds deployment recipes; its tests check that they parse
// and agree with the server (routes probed, configuration keys, paths).
package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/comfyshim/comfyshim/config"
)

func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		docs = append(docs, d)
	}
}

func dig(v any, keys ...any) any {
	for _, k := range keys {
		switch x := v.(type) {
		case map[string]any:
			v = x[k.(string)]
		case []any:
			v = x[k.(int)]
		default:
			return nil
		}
	}
	return v
}

func TestKubernetesManifests(t *testing.T) {
	docs := yamlDocs(t, "kubernetes/comfyshim.yaml")
	kinds := map[string]map[string]any{}
	for _, d := range docs {
		kinds[d["kind"].(string)] = d
	}
	for _, k := range []string{"ConfigMap", "Deployment", "Service"} {
		if kinds[k] == nil {
			t.Fatalf("no %s", k)
		}
	}
	// The ConfigMap's configuration is one comfyshim accepts.
	cfgText := dig(kinds["ConfigMap"], "data", "config.yaml").(string)
	p := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(p, []byte(cfgText), 0o644)
	cfg, err := config.Load([]string{"--config", p}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("ConfigMap config: %v", err)
	}
	c := dig(kinds["Deployment"], "spec", "template", "spec", "containers", 0)
	if dig(c, "readinessProbe", "httpGet", "path") != "/readyz" || dig(c, "livenessProbe", "httpGet", "path") != "/healthz" {
		t.Fatal("probes must use /readyz and /healthz")
	}
	port := dig(c, "ports", 0, "containerPort").(int)
	if !strings.HasSuffix(cfg.Listen, ":"+strconv.Itoa(port)) || !strings.HasPrefix(cfg.Listen, "0.0.0.0") {
		t.Fatalf("listen %s does not match containerPort %d", cfg.Listen, port)
	}
	// In-cluster clients reach it by the Service's name.
	if svc := dig(kinds["Service"], "metadata", "name").(string); !slices.Contains(cfg.AllowedHosts, svc) {
		t.Fatalf("allowed_hosts %q lacks the Service name %q", cfg.AllowedHosts, svc)
	}
	if dig(kinds["Deployment"], "spec", "template", "spec", "securityContext", "runAsNonRoot") != true {
		t.Fatal("must run as non-root")
	}
}

func TestCompose(t *testing.T) {
	docs := yamlDocs(t, "compose.yaml")
	svc := dig(docs[0], "services", "comfyshim")
	env := dig(svc, "environment").(map[string]any)
	getenv := func(k string) string { v, _ := env[k].(string); return v }
	cfg, err := config.Load(nil, getenv, io.Discard)
	if err != nil {
		t.Fatalf("compose environment: %v", err)
	}
	if cfg.Upstream.Host != "comfyui:8188" || cfg.ComfyUIDir != "/ComfyUI" || cfg.APIKeysFile == "" || !slices.Contains(cfg.AllowedHosts, "comfyshim") {
		t.Fatalf("compose environment not applied: %+v", cfg)
	}
	if dig(svc, "build", "dockerfile") != "deploy/Dockerfile" {
		t.Fatal("compose builds from deploy/Dockerfile")
	}
	if !strings.Contains(dig(docs[0], "services", "comfyui", "image").(string), "COMFYUI_IMAGE") {
		t.Fatal("ComfyUI's image must be a variable")
	}
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, want := range []string{"AS build", "COPY --from=build /out/comfyshim /usr/local/bin/comfyshim", "USER nonroot", `ENTRYPOINT ["/usr/local/bin/comfyshim"]`, "./cmd/comfyshim"} {
		if !strings.Contains(text, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

func TestSystemdUnit(t *testing.T) {
	data, err := os.ReadFile("comfyshim.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/usr/local/bin/comfyshim --config", "DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "KillSignal=SIGTERM"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
}
