package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// sdkDir is where the official TypeScript SDK is installed for the tests
// (testdata/sdk, from its package-lock.json); installed here when missing.
func sdkDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "sdk"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("Node.js is needed to run the official SDK against comfyshim (.ci/run installs it)")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@comfyorg", "sdk", "package.json")); err != nil {
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
		}
	}
	return dir
}

// TestOfficialSDK runs Comfy's own TypeScript SDK (@comfyorg/sdk, unchanged)
// against comfyshim in front of the fake ComfyUI: upload an input (the same
// bytes again dedup), run a workflow referencing it, stream its events to
// the terminal status, list and download the outputs, cancel a long job,
// retry a submission with the same Idempotency-Key (one execution) and with
// another body (refused), typed errors, delete. Without keys, and with a
// key sent as Bearer by the SDK.
func TestOfficialSDK(t *testing.T) {
	dir := sdkDir(t)
	for _, key := range []string{"", "sdk-key-0123456789abcdef"} {
		name := map[bool]string{true: "no keys", false: "key"}[key == ""]
		t.Run(name, func(t *testing.T) {
			var keys []string
			if key != "" {
				keys = []string{key}
			}
			up, d, s := v2Setup(t, keys...)
			cmd := exec.Command("node", "flow.mjs")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "COMFY_BASE_URL="+s.URL, "COMFY_API_KEY="+key, "COMFYSHIM_OUTPUT_DIR="+d.Folder("output"))
			var stdout, stderr bytes.Buffer
			pipe, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// "PROCEED <job>": the flow's event stream is open; release the
			// job's Wait node.
			sc := bufio.NewScanner(pipe)
			for sc.Scan() {
				line := sc.Text()
				stdout.WriteString(line + "\n")
				if id, ok := strings.CutPrefix(line, "PROCEED "); ok {
					up.Proceed(id)
				}
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("the SDK flow failed: %v\n%s\n%s", err, stdout.String(), stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			var sum struct {
				Events                                   []string
				Job, Output, Asset, Canceled, Idempotent string
			}
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil || sum.Job == "" {
				t.Fatalf("no summary from the SDK flow: %v\n%s", err, stdout.String())
			}
			t.Logf("events the SDK saw: %s", strings.Join(sum.Events, " "))
			// Four jobs ran and one submission failed ComfyUI's validation:
			// five prompts. The idempotent retry was not sent again.
			if n := up.Count("/prompt"); n != 5 {
				t.Fatalf("ComfyUI got %d prompts, want 5", n)
			}
			if _, err := os.Stat(filepath.Join(d.Folder("output"), sum.Output)); err != nil {
				t.Fatalf("the output the SDK downloaded: %v", err)
			}
			if _, err := os.Stat(filepath.Join(d.Folder("input"), "sdk-input.png")); !os.IsNotExist(err) {
				t.Fatalf("the input the SDK deleted is still there: %v", err)
			}
		})
	}
}
