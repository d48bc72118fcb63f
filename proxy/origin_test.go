package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

func TestBrowserOriginRules(t *testing.T) {
	up, ts := startUpstream(t)
	cfg := testConfig(t, ts.URL)
	cfg.AllowedOrigins = []string{"http://app.example:3000"}
	s := startShim(t, cfg)

	// Without comfyshim's rewrite the upstream refuses a browser served from
	// the shim's address: the Origin names the shim, the Host names ComfyUI.
	direct := mustReq(t, "POST", ts.URL+"/prompt", strings.NewReader(`{"prompt":{"9":{"class_type":"SaveImage","inputs":{}}}}`))
	direct.Header.Set("Origin", s.URL)
	if resp := doJSON(t, direct, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("fake upstream does not check origins (status %d): this test would prove nothing", resp.StatusCode)
	}

	cases := []struct {
		name    string
		origin  string
		secSite string
		want    int
	}{
		{"same origin", s.URL, "same-origin", 200},
		{"same origin, other case", strings.ToUpper(s.URL[:4]) + s.URL[4:], "", 200},
		{"no origin (scripts, curl)", "", "", 200},
		{"null origin", "null", "", 200},
		{"allowed origin", "http://app.example:3000", "cross-site", 200},
		{"cross-site origin", "http://evil.example", "cross-site", 403},
		{"other port on same host", "http://" + strings.Split(s.Host, ":")[0] + ":1", "same-site", 403},
		{"cross-site flag without origin", "", "cross-site", 403},
		{"lookalike of an allowed origin", "http://app.example:3001", "", 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(up.Seen())
			req := mustReq(t, "POST", s.URL+"/api/prompt", strings.NewReader(`{"prompt":{"9":{"class_type":"SaveImage","inputs":{}}}}`))
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			if tc.secSite != "" {
				req.Header.Set("Sec-Fetch-Site", tc.secSite)
			}
			var e ErrorResponse
			resp := doJSON(t, req, &e)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d (%+v)", resp.StatusCode, tc.want, e)
			}
			if tc.want == 403 {
				if e.Code != "FORBIDDEN_ORIGIN" {
					t.Fatalf("refusal body %+v", e)
				}
				if len(up.Seen()) != before {
					t.Fatal("a refused request reached the upstream")
				}
			}
		})
	}

	t.Run("websocket", func(t *testing.T) {
		h := http.Header{"Origin": {s.URL}}
		conn, _, err := websocket.DefaultDialer.Dial(wsURL(s.URL, "/ws?clientId=o"), h)
		if err != nil {
			t.Fatalf("same-origin websocket refused: %v", err)
		}
		conn.Close()
		_, resp, err := websocket.DefaultDialer.Dial(wsURL(s.URL, "/ws?clientId=o"), http.Header{"Origin": {"http://evil.example"}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("cross-site websocket: err %v resp %v", err, resp)
		}
	})
}
