package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// upstreamProbe checks that ComfyUI answers, remembering the result briefly
// so frequent probes do not load it.
type upstreamProbe struct {
	url    string
	client *http.Client

	mu      sync.Mutex
	checked time.Time
	err     error
}

func (p *upstreamProbe) check(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.checked) < time.Second {
		return p.err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err == nil {
		var resp *http.Response
		if resp, err = p.client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode >= 500 {
				err = fmt.Errorf("ComfyUI answered %s", resp.Status)
			}
		}
	}
	p.err, p.checked = err, time.Now()
	return err
}

const unprotectedWarning = "allow_unauthenticated: comfyshim listens on a non-loopback address with no API keys; anyone who can reach it controls ComfyUI"

func (s *Server) healthz(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

func (s *Server) readyz(c *gin.Context) {
	check := func(err error) gin.H {
		if err != nil {
			return gin.H{"ok": false, "error": err.Error()}
		}
		return gin.H{"ok": true}
	}
	upErr := s.probe.check(c.Request.Context())
	tagErr := s.lib.Err()
	keyErr := s.keys.Err()
	status, word := http.StatusOK, "ready"
	if upErr != nil || tagErr != nil || keyErr != nil {
		status, word = http.StatusServiceUnavailable, "not_ready"
	}
	body := gin.H{"status": word, "checks": gin.H{"upstream": check(upErr), "sidecar": check(tagErr), "api_keys": check(keyErr)}}
	if s.cfg.Unprotected() {
		s.log.Warn(unprotectedWarning, "listen", s.cfg.Listen)
		body["warnings"] = []string{unprotectedWarning}
	}
	c.JSON(status, body)
}
