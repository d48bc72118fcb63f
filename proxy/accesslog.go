package proxy

import (
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/gin-gonic/gin"
)

// accessLog writes one structured line per request, after it ends (for a
// websocket, when the socket closes).
func (s *Server) accessLog(c *gin.Context) {
	start := time.Now()
	defer func() {
		kind := c.GetString(kindKey)
		if kind == "" {
			kind = "local"
		}
		status := c.Writer.Status()
		if c.GetBool(upgradedKey) {
			status = http.StatusSwitchingProtocols
		}
		d := time.Since(start)
		group := kind
		if p := c.Request.URL.Path; p == "/healthz" || p == "/readyz" || p == "/metrics" {
			group = "internal"
		}
		s.metrics.observe(group, status, d)
		if !s.log.Enabled(c.Request.Context(), slog.LevelInfo) {
			return
		}
		s.log.LogAttrs(c.Request.Context(), slog.LevelInfo, "request",
			slog.String("method", c.Request.Method),
			slog.String("path", c.Request.URL.EscapedPath()),
			slog.Int("status", status),
			slog.Int("bytes", max(c.Writer.Size(), 0)),
			slog.Duration("duration", d),
			slog.String("route", kind),
			slog.String("remote", clientOf(c.Request).ip),
		)
	}()
	c.Next()
}

// recovery turns a panic into a 500, except http.ErrAbortHandler: the
// forwarder raises it when a stream breaks after the headers were sent, and
// it must reach net/http so the client sees a broken response, not a
// truncated one that looks complete.
func (s *Server) recovery(c *gin.Context) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler {
			panic(v)
		}
		s.log.Error("panic serving request", "path", c.Request.URL.Path, "panic", v, "stack", string(debug.Stack()))
		if !c.Writer.Written() {
			writeError(c.Writer, http.StatusInternalServerError, "INTERNAL_ERROR", "internal error")
		}
		c.Abort()
	}()
	c.Next()
}
