package proxy

import (
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/comfyshim/comfyshim/proxy/apiv2"
	"github.com/comfyshim/comfyshim/proxy/signedurl"
)

// view is GET /api/view. Cloud answers a script's request with a 302 to a
// short-lived signed URL that needs no key; comfyshim does the same for the
// requests view_redirect names, and forwards the rest (browsers' <img>
// tags, ?token= and cookie requests by default) to ComfyUI as before.
func (s *Server) view(c *gin.Context) {
	if !s.redirectView(c.Request) {
		s.forwardHandler(c)
		return
	}
	r := c.Request
	q := s.signer.Sign(http.MethodGet, r.URL.Path, r.URL.RawQuery, time.Now().Add(s.cfg.ViewURLLifetime))
	c.Header("Location", clientOf(r).scheme()+"://"+r.Host+r.URL.Path+"?"+q)
	c.Header("Cache-Control", "no-store")
	c.Status(http.StatusFound)
	c.Abort()
}

func (s *Server) redirectView(r *http.Request) bool {
	if s.signer == nil {
		return false // no keys: nothing to sign with, and no key to keep out of URLs
	}
	switch via := callerOf(r).via; s.cfg.ViewRedirect {
	case "auto":
		return via == viaAPIKeyHeader
	case "always":
		return via == viaAPIKeyHeader || via == viaKey
	}
	return false
}

// serveSigned serves a request whose signed URL is valid, without the
// signature (/api/view is forwarded, v2 content served here), and refuses
// a tampered or expired one.
func (s *Server) serveSigned(c *gin.Context) {
	r := c.Request
	if s.signer == nil || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		apiError(c, http.StatusForbidden, "INVALID_SIGNATURE", "this URL is not a valid signed URL here")
		return
	}
	orig, err := s.signer.Verify(http.MethodGet, r.URL.Path, r.URL.RawQuery, time.Now())
	switch {
	case errors.Is(err, signedurl.ErrExpired):
		apiError(c, http.StatusForbidden, "URL_EXPIRED", "the signed URL has expired; ask /api/view for a new one")
		return
	case err != nil:
		apiError(c, http.StatusForbidden, "INVALID_SIGNATURE", err.Error())
		return
	}
	r.URL.RawQuery = orig
	r.RequestURI = r.URL.RequestURI()
	if apiv2.ContentPath(r.URL.Path) {
		c.Request = withCaller(r, caller{via: viaSigned})
		c.Next()
		return
	}
	s.forwardHandler(c)
	c.Abort()
}

// signContent makes a v2 content URL work without a key until expires.
func (s *Server) signContent(path string, expires time.Time) string {
	if s.signer == nil {
		return ""
	}
	return s.signer.Sign(http.MethodGet, path, "", expires)
}
