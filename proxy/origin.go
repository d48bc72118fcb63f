package proxy

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/gin-gonic/gin"
)

// originGuard applies ComfyUI's browser same-origin rule at comfyshim's own
// address: a request whose Origin names another host than the one it was sent
// to, or that the browser marks cross-site, is refused unless its origin is in
// allowed. ComfyUI only checks loopback hosts; comfyshim checks every host,
// because the forwarder turns any request into one for a loopback upstream.
func originGuard(allowed []string) gin.HandlerFunc {
	allow := make(map[string]bool, len(allowed))
	for _, o := range allowed {
		allow[strings.ToLower(o)] = true
	}
	return func(c *gin.Context) {
		if reason := refuseOrigin(c.Request, allow); reason != "" {
			writeError(c.Writer, http.StatusForbidden, "FORBIDDEN_ORIGIN", reason)
			c.Abort()
			return
		}
		c.Next()
	}
}

func refuseOrigin(r *http.Request, allow map[string]bool) string {
	origin := r.Header.Get("Origin")
	originHost := ""
	if origin != "" {
		if u, err := url.Parse(origin); err == nil {
			originHost = strings.ToLower(u.Host)
		}
	}
	allowed := originHost != "" && allow[strings.ToLower(origin)]
	if strings.EqualFold(r.Header.Get("Sec-Fetch-Site"), "cross-site") && !allowed && !isNavigation(r) {
		return "cross-site request refused"
	}
	// An Origin of "null" (sandboxed frames, file:// pages) has no host and
	// passes, as it does in ComfyUI.
	if originHost != "" && originHost != strings.ToLower(r.Host) && !allowed {
		return "origin " + origin + " is not allowed"
	}
	return ""
}

// isNavigation is a person following a link or an SSO redirect to a page: a
// top-level GET or HEAD for a document. It carries no body and, with
// SameSite=Lax cookies, no more authority than typing the address; cross-site
// fetches, subresources, unsafe methods and websocket upgrades are not.
func isNavigation(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		strings.EqualFold(r.Header.Get("Sec-Fetch-Mode"), "navigate") &&
		strings.EqualFold(r.Header.Get("Sec-Fetch-Dest"), "document") &&
		!isUpgrade(r)
}
