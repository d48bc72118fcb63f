package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/comfyshim/comfyshim/proxy/apiv2"
	"github.com/comfyshim/comfyshim/proxy/signedurl"
)

// authenticate requires a credential whenever keys are configured: an API
// key in X-API-Key (the Cloud scheme), Authorization: Bearer, HTTP Basic
// (the key as the password) or a token query parameter (websockets and
// <img src>, where browsers cannot set headers), or a browser session
// cookie. Every copy of every credential is removed from the request before
// anything else sees it, valid or not. A key bound to a ComfyUI user sets
// comfy-user; the client's own is dropped.
func (s *Server) authenticate(c *gin.Context) {
	r := c.Request
	if !s.keys.required || r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || isSignInRoute(r) {
		c.Next()
		return
	}
	if (r.URL.Path == "/api/view" || apiv2.ContentPath(r.URL.Path)) && signedurl.Signed(r.URL.RawQuery) {
		// A signed URL is its own credential; any other is stripped.
		takeCredentials(r)
		takeSessionCookie(r)
		s.serveSigned(c)
		return
	}
	presented, fromQuery, fromAPIKey := takeCredentials(r)
	cookie := takeSessionCookie(r)
	if len(presented) == 0 {
		if cookie != "" {
			if fp, ok := s.sessions.check(cookie, time.Now()); ok {
				if e, ok := s.keys.bySession(fp); ok {
					actAs(r, e.user)
					c.Request = withCaller(r, caller{owner: e.owner(), via: viaCookie})
					c.Next()
					return
				}
			}
			// An expired or revoked session is not a guess either.
		}
		s.unauthorized(c, "a valid API key is required (X-API-Key header, Authorization: Bearer, or token query parameter)")
		return
	}
	// From a blocked address, a key seen valid from it before is checked at
	// once; any other waits its turn in the address's line, so the answers
	// to guesses stay paced (a quick "yes" next to a slow "no" would let a
	// guesser test keys at full speed).
	ip := clientOf(r).ip
	digests := make([][32]byte, len(presented))
	for i, p := range presented {
		digests[i] = sha256.Sum256([]byte(p))
	}
	release, ok := s.limiter.enter(r.Context(), ip, digests)
	if !ok {
		tooMany(c, s.limiter)
		return
	}
	var found keyEntry
	var foundDigest [32]byte
	valid, headerKey := false, false
	for i := range digests {
		if e, ok := s.keys.matchDigest(digests[i]); ok && !valid { // check them all: same work either way
			found, foundDigest, valid, headerKey = e, digests[i], true, fromAPIKey[i]
		}
	}
	if valid {
		release(false)
		s.limiter.remember(ip, foundDigest)
		if fromQuery && wantsPage(r) {
			// ?token= on a page signs the browser in; the key leaves the
			// address bar, history and Referer at once.
			s.signIn(c, found, r.URL.RequestURI())
			return
		}
		actAs(r, found.user)
		via := viaKey
		if headerKey {
			via = viaAPIKeyHeader
		}
		c.Request = withCaller(r, caller{owner: found.owner(), via: via})
		c.Next()
		return
	}
	if blocked := release(true); blocked {
		tooMany(c, s.limiter)
		return
	}
	s.unauthorized(c, "the API key is not valid")
}

// unauthorized answers 401: the sign-in page to a browser asking for a
// page, the JSON ErrorResponse to everything else.
func (s *Server) unauthorized(c *gin.Context, msg string) {
	if wantsPage(c.Request) {
		s.signInPage(c, http.StatusUnauthorized, c.Request.URL.RequestURI(), "")
		return
	}
	c.Header("WWW-Authenticate", `Bearer realm="comfyshim"`)
	apiError(c, http.StatusUnauthorized, "UNAUTHORIZED", msg)
}

// wantsPage is a browser loading a page, not a script or an SDK.
func wantsPage(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) && !isUpgrade(r) &&
		strings.Contains(r.Header.Get("Accept"), "text/html")
}

// actAs binds the request to the key's ComfyUI user (--multi-user).
func actAs(r *http.Request, user string) {
	if user != "" {
		r.Header.Del("Comfy-User")
		r.Header.Set("Comfy-User", user)
	}
}

func tooMany(c *gin.Context, l *failureLimiter) {
	c.Header("Retry-After", fmt.Sprint(int(l.window.Seconds())))
	apiError(c, http.StatusTooManyRequests, "TOO_MANY_REQUESTS", "too many failed authentications from this address; try again later")
}

// takeCredentials removes every credential comfyshim accepts from r and
// returns the presented values, whether one came from the query, and which
// came from the X-API-Key header. ComfyUI has no use for them and logs
// requests; a copy left behind would reach it.
func takeCredentials(r *http.Request) (out []string, fromQuery bool, fromAPIKey []bool) {
	for _, v := range r.Header.Values("X-Api-Key") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
			fromAPIKey = append(fromAPIKey, true)
		}
	}
	r.Header.Del("X-Api-Key")
	for _, v := range r.Header.Values("Authorization") {
		if k := keyFromAuthorization(v); k != "" {
			out = append(out, k)
		}
	}
	r.Header.Del("Authorization")
	if raw, tokens := stripQueryParam(r.URL.RawQuery, "token"); len(tokens) > 0 {
		out = append(out, tokens...)
		fromQuery = true
		r.URL.RawQuery = raw
		r.URL.ForceQuery = false
		r.RequestURI = r.URL.RequestURI()
	}
	for len(fromAPIKey) < len(out) {
		fromAPIKey = append(fromAPIKey, false)
	}
	return out, fromQuery, fromAPIKey
}

// keyFromAuthorization reads a key from "Bearer KEY" or "Basic
// base64(user:KEY)" (the user name is ignored).
func keyFromAuthorization(v string) string {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
	rest = strings.TrimSpace(rest)
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		return rest
	case strings.EqualFold(scheme, "Basic"):
		dec, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return ""
		}
		_, pass, ok := strings.Cut(string(dec), ":")
		if !ok {
			return ""
		}
		return pass
	}
	return ""
}

// stripQueryParam removes every name=value pair from a raw query, leaving
// the rest byte for byte, and returns the (unescaped) values removed. Names
// are compared unescaped, so "%74oken=" is a token too.
func stripQueryParam(raw, name string) (string, []string) {
	if raw == "" {
		return raw, nil
	}
	var kept []string
	var values []string
	for _, part := range strings.Split(raw, "&") {
		k, v, _ := strings.Cut(part, "=")
		if k == name || unescapeQuery(k) == name {
			if v = unescapeQuery(v); v != "" {
				values = append(values, v)
			} else {
				values = append(values, "\x00empty") // an empty token is still a (wrong) credential
			}
			continue
		}
		kept = append(kept, part)
	}
	if values == nil {
		return raw, nil
	}
	return strings.Join(kept, "&"), values
}

func unescapeQuery(v string) string {
	if u, err := url.QueryUnescape(v); err == nil {
		return u
	}
	return v
}

// enter admits a credential check from ip. Under the limit, or for a key
// already seen valid from ip, it returns at once. While ip is blocked other
// checks run one at a time, each failure holding the line for window/max,
// so guessing stays at the limit's pace; ok is false when too many requests
// from ip are already waiting or the client gave up. release reports the
// outcome and returns whether ip is (now) blocked.
func (l *failureLimiter) enter(ctx context.Context, ip string, digests [][32]byte) (release func(failed bool) bool, ok bool) {
	line := l.lineFor(ip)
	if line == nil || l.known(ip, digests) {
		return func(failed bool) bool {
			if failed {
				l.fail(ip) // answered 401; the failure that reaches the limit blocks ip
			}
			return false
		}, true
	}
	if !line.join() {
		return nil, false
	}
	select {
	case line.turn <- struct{}{}:
	case <-ctx.Done():
		line.leave()
		return nil, false
	}
	return func(failed bool) bool {
		if failed {
			l.fail(ip)
			// Hold the line even if the client hangs up: a guesser that
			// cancels after a moment must not free it for the next guess.
			time.Sleep(l.pace)
		}
		<-line.turn
		line.leave()
		return failed
	}, true
}
