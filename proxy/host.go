package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/gin-gonic/gin"
)

// hostGuard defends against DNS rebinding: a page on attacker.example that
// re-points its name at 127.0.0.1 sends Host: attacker.example and a
// matching Origin, which passes every origin check. Only Host names that
// cannot be re-pointed by a stranger are accepted: IP literals, localhost,
// the listen address's host, and the configured allowed_hosts.
func hostGuard(listen string, allowed []string) gin.HandlerFunc {
	allow := map[string]bool{"localhost": true}
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" {
		allow[normalHost(h)] = true
	}
	anyHost := false
	for _, h := range allowed {
		if h == "*" {
			anyHost = true
		}
		allow[normalHost(h)] = true
	}
	return func(c *gin.Context) {
		if anyHost {
			c.Next()
			return
		}
		h := hostName(c.Request.Host)
		if _, err := netip.ParseAddr(h); err == nil || allow[h] {
			c.Next()
			return
		}
		writeError(c.Writer, http.StatusForbidden, "FORBIDDEN_HOST",
			"host "+quoteHost(c.Request.Host)+" is not accepted; add it to allowed_hosts if this is comfyshim's public name")
		c.Abort()
	}
}

// hostName is the lower-case name of a Host header without port, brackets
// or trailing dot.
func hostName(hostport string) string {
	h := hostport
	if sh, _, err := net.SplitHostPort(hostport); err == nil {
		h = sh
	}
	return normalHost(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
}

func normalHost(h string) string { return strings.TrimSuffix(strings.ToLower(h), ".") }

func quoteHost(h string) string {
	if len(h) > 100 {
		h = h[:100] + "..."
	}
	return "\"" + strings.ToValidUTF8(h, "?") + "\""
}
