package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --check-config fails exactly when starting would.
func TestCheckConfigChecksWhatStartChecks(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "keys")
	os.WriteFile(good, []byte("k1\n"), 0o600)
	empty := filepath.Join(dir, "empty-keys")
	os.WriteFile(empty, []byte("# none\n"), 0o600)
	notAFolder := filepath.Join(dir, "file")
	os.WriteFile(notAFolder, []byte("x"), 0o600)
	brokenTags := filepath.Join(dir, "broken.json")
	os.WriteFile(brokenTags, []byte(`{"version":1,"assets":{`), 0o600)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	tags := "--tags-file=" + filepath.Join(dir, "new", "tags.json")
	cases := []struct {
		name string
		args []string
		code int
		says string
	}{
		{"fine", []string{"--listen=127.0.0.1:0", tags, "--api-keys-file=" + good}, 0, ""},
		{"key file holds no keys", []string{"--listen=127.0.0.1:0", tags, "--api-keys-file=" + empty}, 1, "holds no keys"},
		{"key file missing", []string{"--listen=127.0.0.1:0", tags, "--api-keys-file=" + filepath.Join(dir, "nope")}, 1, "api_keys_file"},
		{"listen address taken", []string{"--listen=" + busy.Addr().String(), tags}, 1, "listen"},
		{"tags folder is a file", []string{"--listen=127.0.0.1:0", "--tags-file=" + filepath.Join(notAFolder, "tags.json")}, 1, "not a folder"},
		{"tags file broken", []string{"--listen=127.0.0.1:0", "--tags-file=" + brokenTags}, 1, "line 1"},
		{"open without keys", []string{"--listen=0.0.0.0:0", tags}, 2, "allow_unauthenticated"},
	}
	for _, tc := range cases {
		var out, errOut bytes.Buffer
		code := run(append([]string{"--check-config"}, tc.args...), func(string) string { return "" }, &out, &errOut)
		if code != tc.code || !strings.Contains(errOut.String(), tc.says) {
			t.Errorf("%s: exit %d (want %d), stderr %q", tc.name, code, tc.code, errOut.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); !os.IsNotExist(err) {
		t.Error("--check-config created the tags folder")
	}
}
