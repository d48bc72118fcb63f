package config

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsWithoutAnyFile(t *testing.T) {
	c, err := Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8189" || c.Upstream.String() != "http://127.0.0.1:8188" {
		t.Fatalf("defaults: listen %q upstream %q", c.Listen, c.Upstream)
	}
	if c.TagsFile != "comfyshim-tags.json" || c.InputDir != "" {
		t.Fatalf("no comfyui_dir: tags %q input %q", c.TagsFile, c.InputDir)
	}
}

func TestPrecedenceFlagsOverEnvOverFile(t *testing.T) {
	file := writeFile(t, "listen: 127.0.0.1:1000\nupstream: http://file:1\ncomfyui_dir: /srv/comfy\nshutdown_grace: 3s\n")
	c, err := Load(
		[]string{"--config", file, "--listen", "127.0.0.1:3000"},
		env(map[string]string{"COMFYSHIM_LISTEN": "127.0.0.1:2000", "COMFYSHIM_UPSTREAM": "http://env:2"}),
		io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:3000" {
		t.Errorf("listen = %q, want flag value", c.Listen)
	}
	if c.Upstream.Host != "env:2" {
		t.Errorf("upstream = %q, want env value", c.Upstream)
	}
	if c.ShutdownGrace != 3*time.Second {
		t.Errorf("shutdown_grace = %v, want file value", c.ShutdownGrace)
	}
	if c.InputDir != filepath.Join("/srv/comfy", "input") || c.ModelsDir != filepath.Join("/srv/comfy", "models") {
		t.Errorf("derived dirs: %q %q", c.InputDir, c.ModelsDir)
	}
	if c.TagsFile != filepath.Join("/srv/comfy", "user", "comfyshim-tags.json") {
		t.Errorf("derived tags file: %q", c.TagsFile)
	}
}

func TestAllowedOriginsListOrString(t *testing.T) {
	file := writeFile(t, "allowed_origins:\n  - http://Example.com:8080\n  - https://b.test\n")
	c, err := Load([]string{"--config", file}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.AllowedOrigins, " ") != "http://example.com:8080 https://b.test" {
		t.Fatalf("origins %q", c.AllowedOrigins)
	}
	c, err = Load(nil, env(map[string]string{"COMFYSHIM_ALLOWED_ORIGINS": "http://a.test, http://b.test"}), io.Discard)
	if err != nil || len(c.AllowedOrigins) != 2 {
		t.Fatalf("env origins %q %v", c.AllowedOrigins, err)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		name string
		file string
		args []string
		env  map[string]string
		want string
	}{
		{name: "unknown key", file: "listen: 127.0.0.1:1\nlisten_adress: x\n", want: `line 2: unknown key "listen_adress"`},
		{name: "bad upstream in file", file: "upstream: ftp://x\n", want: `key "upstream"`},
		{name: "upstream without host", args: []string{"--upstream", "http://"}, want: "--upstream"},
		{name: "bad listen flag", args: []string{"--listen", "nope"}, want: "listen"},
		{name: "bad port", args: []string{"--listen", "127.0.0.1:99999"}, want: "listen"},
		{name: "bad env duration", env: map[string]string{"COMFYSHIM_SHUTDOWN_GRACE": "soon"}, want: "COMFYSHIM_SHUTDOWN_GRACE"},
		{name: "bad origin", args: []string{"--allowed-origins", "example.com"}, want: "--allowed-origins"},
		{name: "not a mapping", file: "- a\n- b\n", want: "mapping"},
		{name: "nested value", file: "listen:\n  a: b\n", want: `key "listen"`},
		{name: "bad log level", file: "log_level: loud\n", want: `key "log_level"`},
		{name: "stray argument", args: []string{"serve"}, want: "unexpected argument"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", writeFile(t, tc.file)}, args...)
			}
			_, err := Load(args, env(tc.env), io.Discard)
			if err == nil {
				t.Fatal("want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestMissingConfigFile(t *testing.T) {
	_, err := Load([]string{"--config", filepath.Join(t.TempDir(), "none.yaml")}, env(nil), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "none.yaml") {
		t.Fatalf("want error naming the file, got %v", err)
	}
}

// The example file documents every key and is itself a valid configuration.
func TestExampleConfigIsValidAndComplete(t *testing.T) {
	data, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load([]string{"--config", "../config.example.yaml"}, env(nil), io.Discard); err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	for _, s := range settings {
		if !strings.Contains(string(data), s.key+":") {
			t.Errorf("config.example.yaml does not mention %s", s.key)
		}
	}
}

// Listening beyond loopback with no keys is refused unless asked for.
func TestNonLoopbackListenNeedsKeys(t *testing.T) {
	cases := []struct {
		listen string
		extra  map[string]string
		ok     bool
	}{
		{"127.0.0.1:8189", nil, true},
		{"[::1]:8189", nil, true},
		{"localhost:8189", nil, true},
		{"0.0.0.0:8189", nil, false},
		{":8189", nil, false},
		{"[::]:8189", nil, false},
		{"192.168.1.5:8189", nil, false},
		{"comfy.lan:8189", nil, false},
		{"0.0.0.0:8189", map[string]string{"COMFYSHIM_API_KEYS": "k"}, true},
		{"0.0.0.0:8189", map[string]string{"COMFYSHIM_API_KEYS_FILE": "/k"}, true},
		{"0.0.0.0:8189", map[string]string{"COMFYSHIM_ALLOW_UNAUTHENTICATED": "true"}, true},
	}
	for _, tc := range cases {
		e := map[string]string{"COMFYSHIM_LISTEN": tc.listen}
		for k, v := range tc.extra {
			e[k] = v
		}
		c, err := Load(nil, env(e), io.Discard)
		if (err == nil) != tc.ok {
			t.Errorf("%s %v: err %v, want ok=%v", tc.listen, tc.extra, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "allow_unauthenticated") {
			t.Errorf("%s: error does not say how to proceed: %v", tc.listen, err)
		}
		if err == nil && tc.extra["COMFYSHIM_ALLOW_UNAUTHENTICATED"] != "" && !c.Unprotected() {
			t.Errorf("%s: Unprotected() false in allow_unauthenticated mode", tc.listen)
		}
	}
}

func TestAllowedHostsAndTrustedProxies(t *testing.T) {
	file := writeFile(t, "allowed_hosts:\n  - Comfy.Example.com.\n  - '*'\ntrusted_proxies: [10.0.0.0/8, 127.0.0.1, '::1']\n")
	c, err := Load([]string{"--config", file}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.AllowedHosts, " ") != "comfy.example.com *" {
		t.Errorf("hosts %q", c.AllowedHosts)
	}
	var nets []string
	for _, p := range c.TrustedProxies {
		nets = append(nets, p.String())
	}
	if strings.Join(nets, " ") != "10.0.0.0/8 127.0.0.1/32 ::1/128" {
		t.Errorf("trusted %q", nets)
	}
	for _, bad := range []map[string]string{
		{"COMFYSHIM_TRUSTED_PROXIES": "10.0.0.0/33"},
		{"COMFYSHIM_TRUSTED_PROXIES": "proxy.lan"},
		{"COMFYSHIM_ALLOWED_HOSTS": "http://comfy.example.com"},
		{"COMFYSHIM_ALLOWED_HOSTS": "comfy.example.com:443"},
		{"COMFYSHIM_ALLOWED_HOSTS": "*.example.com"},
		{"COMFYSHIM_ALLOW_UNAUTHENTICATED": "maybe"},
	} {
		if _, err := Load(nil, env(bad), io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
