package proxy

import (
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// cors answers every CORS preflight itself, so none is forwarded and none
// needs a key, and marks responses for the configured cross-origin
// frontends. Only origins in allowed get Access-Control-Allow-* headers; a
// cross-site origin not in the list never gets here (originGuard refuses it).
func cors(allowed []string) gin.HandlerFunc {
	allow := map[string]bool{}
	for _, o := range allowed {
		allow[strings.ToLower(o)] = true
	}
	return func(c *gin.Context) {
		r := c.Request
		origin := r.Header.Get("Origin")
		ok := origin != "" && allow[strings.ToLower(origin)]
		h := c.Writer.Header()
		if ok {
			h.Add("Vary", "Origin")
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Credentials", "true")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if ok {
				h.Add("Vary", "Access-Control-Request-Method, Access-Control-Request-Headers")
				h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
				if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
					h.Set("Access-Control-Allow-Headers", req)
				}
				h.Set("Access-Control-Max-Age", "600")
			}
			c.AbortWithStatus(http.StatusNoContent)
			return
		}
		if ok {
			h.Set("Access-Control-Expose-Headers", "Content-Disposition, Content-Length")
		}
		c.Next()
	}
}

// stripUpstreamCORS drops ComfyUI's own CORS headers (--enable-cors-header
// sends "*"): comfyshim's policy is the one that applies.
func stripUpstreamCORS(res *http.Response) error {
	for k := range res.Header {
		if strings.HasPrefix(k, "Access-Control-") {
			res.Header.Del(k)
		}
	}
	return nil
}
