package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
)

// keyring holds the accepted API keys as SHA-256 digests, so comparing a
// presented key costs the same whatever its length or prefix.
type keyring struct {
	static []string
	file   string
	log    *slog.Logger

	keys    atomic.Pointer[[][32]byte]
	fileSig string // size and mtime of the key file as last read
}

func newKeyring(static []string, file string, log *slog.Logger) (*keyring, error) {
	k := &keyring{static: static, file: file, log: log}
	if err := k.reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// reload re-reads the key file if it changed. A file that disappears or
// becomes unreadable keeps the keys last read: failing open would drop
// authentication.
func (k *keyring) reload() error {
	keys := make([][32]byte, 0, len(k.static))
	for _, s := range k.static {
		keys = append(keys, sha256.Sum256([]byte(s)))
	}
	if k.file != "" {
		fi, err := os.Stat(k.file)
		if err != nil {
			return fmt.Errorf("api_keys_file %s: %w", k.file, err)
		}
		sig := fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
		if sig == k.fileSig {
			return nil
		}
		data, err := os.ReadFile(k.file)
		if err != nil {
			return fmt.Errorf("api_keys_file %s: %w", k.file, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line != "" && !strings.HasPrefix(line, "#") {
				keys = append(keys, sha256.Sum256([]byte(line)))
			}
		}
		if k.fileSig != "" {
			k.log.Info("API key file reloaded", "keys", len(keys))
		}
		k.fileSig = sig
	}
	k.keys.Store(&keys)
	return nil
}

// watch re-reads the key file every interval until stop is closed.
func (k *keyring) watch(interval time.Duration, stop <-chan struct{}) {
	if k.file == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := k.reload(); err != nil {
				k.log.Warn("API key file not reloaded; keeping the previous keys", "err", err)
			}
		case <-stop:
			return
		}
	}
}

func (k *keyring) enabled() bool { return len(*k.keys.Load()) > 0 }

// valid compares in constant time against every key.
func (k *keyring) valid(presented string) bool {
	if presented == "" {
		return false
	}
	d := sha256.Sum256([]byte(presented))
	ok := 0
	for _, key := range *k.keys.Load() {
		ok |= subtle.ConstantTimeCompare(d[:], key[:])
	}
	return ok == 1
}

// failureLimiter refuses an address after too many failed authentications
// in a window, without touching other addresses.
type failureLimiter struct {
	max    int
	window time.Duration

	mu   sync.Mutex
	byIP map[string]*failures
}

type failures struct {
	count int
	start time.Time
}

func newFailureLimiter(max int, window time.Duration) *failureLimiter {
	return &failureLimiter{max: max, window: window, byIP: map[string]*failures{}}
}

func (l *failureLimiter) blocked(ip string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.byIP[ip]
	if !ok {
		return false
	}
	if now.Sub(f.start) > l.window {
		delete(l.byIP, ip)
		return false
	}
	return f.count >= l.max
}

func (l *failureLimiter) fail(ip string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.byIP[ip]
	if !ok || now.Sub(f.start) > l.window {
		if len(l.byIP) > 100_000 { // bound memory under a spray of addresses
			for k, v := range l.byIP {
				if now.Sub(v.start) > l.window {
					delete(l.byIP, k)
				}
			}
		}
		f = &failures{start: now}
		l.byIP[ip] = f
	}
	f.count++
}

// exemptFromAuth are the routes probes call without credentials.
func exemptFromAuth(r *http.Request) bool {
	return r.URL.Path == "/healthz" || r.URL.Path == "/readyz" ||
		// CORS preflights carry no credentials by design.
		(r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "")
}

// authenticate requires an API key when keys are configured: X-API-Key (the
// Cloud scheme), Authorization: Bearer, or a token query parameter for
// websockets and <img src>, where browsers cannot set headers. The key is
// removed from the request before anything else sees it.
func (s *Server) authenticate(c *gin.Context) {
	r := c.Request
	if !s.keys.enabled() || exemptFromAuth(r) {
		c.Next()
		return
	}
	ip := c.ClientIP()
	now := time.Now()
	if s.limiter.blocked(ip, now) {
		c.Header("Retry-After", fmt.Sprint(int(s.limiter.window.Seconds())))
		apiError(c, http.StatusTooManyRequests, "TOO_MANY_REQUESTS", "too many failed authentications; try again later")
		return
	}
	presented := r.Header.Get("X-API-Key")
	bearer := false
	if presented == "" {
		if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			presented, bearer = strings.TrimSpace(v), true
		}
	}
	rawQuery, token := stripQueryParam(r.URL.RawQuery, "token")
	if presented == "" {
		presented = token
	}
	if !s.keys.valid(presented) {
		s.limiter.fail(ip, now)
		c.Header("WWW-Authenticate", `Bearer realm="comfyshim"`)
		apiError(c, http.StatusUnauthorized, "UNAUTHORIZED", "a valid API key is required (X-API-Key header, Authorization: Bearer, or token query parameter)")
		return
	}
	// Never forward the key: ComfyUI has no use for it and logs requests.
	r.Header.Del("X-API-Key")
	if bearer {
		r.Header.Del("Authorization")
	}
	if token != "" {
		r.URL.RawQuery = rawQuery
		r.URL.ForceQuery = false
		r.RequestURI = r.URL.RequestURI()
	}
	c.Next()
}

// stripQueryParam removes every name=value pair from a raw query, leaving
// the rest byte for byte, and returns the (unescaped) value of the first.
func stripQueryParam(raw, name string) (string, string) {
	if raw == "" || !strings.Contains(raw, name+"=") {
		return raw, ""
	}
	var kept []string
	value := ""
	for _, part := range strings.Split(raw, "&") {
		k, v, _ := strings.Cut(part, "=")
		if k == name {
			if value == "" {
				value = unescapeQuery(v)
			}
			continue
		}
		kept = append(kept, part)
	}
	return strings.Join(kept, "&"), value
}

func unescapeQuery(v string) string {
	if u, err := url.QueryUnescape(v); err == nil {
		return u
	}
	return v
}
