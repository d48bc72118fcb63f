package proxy

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// authenticate requires an API key whenever keys are configured: X-API-Key
// (the Cloud scheme), Authorization: Bearer, HTTP Basic with the key as the
// password, or a token query parameter for websockets and <img src>, where
// browsers cannot set headers. Every copy of every credential is removed
// from the request before anything else sees it, valid or not.
func (s *Server) authenticate(c *gin.Context) {
	r := c.Request
	if !s.keys.required || r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
		c.Next()
		return
	}
	presented := takeCredentials(r)
	c.Header("WWW-Authenticate", `Bearer realm="comfyshim"`)
	if len(presented) == 0 {
		// Not a guess: a browser tab or a misconfigured client. It does
		// not count towards the failure limit.
		apiError(c, http.StatusUnauthorized, "UNAUTHORIZED", "a valid API key is required (X-API-Key header, Authorization: Bearer, or token query parameter)")
		return
	}
	ip := clientOf(r).ip
	release, ok := s.limiter.enter(r.Context(), ip, time.Now())
	if !ok {
		tooMany(c, s.limiter)
		return
	}
	valid := false
	for _, p := range presented {
		valid = s.keys.valid(p) || valid // check them all: same work either way
	}
	if valid {
		release(false)
		c.Next()
		return
	}
	blocked := release(true)
	if blocked {
		tooMany(c, s.limiter)
		return
	}
	apiError(c, http.StatusUnauthorized, "UNAUTHORIZED", "the API key is not valid")
}

func tooMany(c *gin.Context, l *failureLimiter) {
	c.Header("Retry-After", fmt.Sprint(int(l.window.Seconds())))
	apiError(c, http.StatusTooManyRequests, "TOO_MANY_REQUESTS", "too many failed authentications from this address; try again later")
}

// takeCredentials removes every credential comfyshim accepts from r and
// returns the presented values. ComfyUI has no use for them and logs
// requests; a copy left behind would reach it.
func takeCredentials(r *http.Request) []string {
	var out []string
	for _, v := range r.Header.Values("X-Api-Key") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
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
		r.URL.RawQuery = raw
		r.URL.ForceQuery = false
		r.RequestURI = r.URL.RequestURI()
	}
	return out
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

// enter admits a credential check from ip. Under the limit it returns at
// once. While ip is blocked its checks run one at a time, each failure
// holding the line for window/max, so guessing stays at the limit's pace
// while a valid key still gets through; ok is false when too many requests
// from ip are already waiting or the client gave up. release reports the
// outcome and returns whether ip is (now) blocked.
func (l *failureLimiter) enter(ctx context.Context, ip string, now time.Time) (release func(failed bool) bool, ok bool) {
	line := l.lineFor(ip, now)
	if line == nil {
		return func(failed bool) bool {
			if failed {
				l.fail(ip, time.Now()) // answered 401; the next failure finds ip blocked
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
			l.fail(ip, time.Now())
			// Hold the line even if the client hangs up: otherwise a quick
			// valid answer and a slow wrong one would let a guesser cancel
			// and move on at full speed.
			time.Sleep(l.pace)
		}
		<-line.turn
		line.leave()
		return failed
	}, true
}
