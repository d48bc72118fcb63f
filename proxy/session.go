package proxy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// sessionCookie is the browser session's cookie. Its value names the key it
// was made from only by an HMAC of the key's digest, so it reveals nothing
// about the key, and it stops working when that key is removed.
const sessionCookie = "comfyshim_session"

// sessions signs and checks session cookies with the server secret.
type sessions struct {
	secret   []byte
	lifetime time.Duration
}

// fingerprint names a key in cookies: HMAC(secret, SHA-256(key)).
func (ss *sessions) fingerprint(digest [32]byte) [16]byte {
	m := hmac.New(sha256.New, ss.secret)
	m.Write([]byte("comfyshim key fingerprint\x00"))
	m.Write(digest[:])
	var fp [16]byte
	copy(fp[:], m.Sum(nil))
	return fp
}

func (ss *sessions) mac(payload []byte) []byte {
	m := hmac.New(sha256.New, ss.secret)
	m.Write([]byte("comfyshim session v1\x00"))
	m.Write(payload)
	return m.Sum(nil)
}

// issue returns a cookie value for the key with fingerprint fp.
func (ss *sessions) issue(fp [16]byte, now time.Time) string {
	payload := make([]byte, 8, 24)
	binary.BigEndian.PutUint64(payload, uint64(now.Add(ss.lifetime).Unix()))
	payload = append(payload, fp[:]...)
	enc := base64.RawURLEncoding
	return "v1." + enc.EncodeToString(payload) + "." + enc.EncodeToString(ss.mac(payload))
}

// check returns the key fingerprint a valid, unexpired cookie value carries.
func (ss *sessions) check(value string, now time.Time) ([16]byte, bool) {
	var fp [16]byte
	rest, ok := strings.CutPrefix(value, "v1.")
	if !ok {
		return fp, false
	}
	p64, m64, ok := strings.Cut(rest, ".")
	enc := base64.RawURLEncoding
	payload, err1 := enc.DecodeString(p64)
	mac, err2 := enc.DecodeString(m64)
	if !ok || err1 != nil || err2 != nil || len(payload) != 24 || !hmac.Equal(mac, ss.mac(payload)) {
		return fp, false
	}
	if now.Unix() >= int64(binary.BigEndian.Uint64(payload)) {
		return fp, false
	}
	copy(fp[:], payload[8:])
	return fp, true
}

// cookie builds the Set-Cookie for value; an empty value clears it.
func (ss *sessions) cookie(value string, secure bool) *http.Cookie {
	c := &http.Cookie{
		Name: sessionCookie, Value: value, Path: "/",
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode,
		MaxAge: int(ss.lifetime.Seconds()),
	}
	if value == "" {
		c.MaxAge = -1
	}
	return c
}

// takeSessionCookie removes comfyshim's cookie from the request's Cookie
// headers (ComfyUI never sees it) and returns its value.
func takeSessionCookie(r *http.Request) string {
	lines := r.Header.Values("Cookie")
	if len(lines) == 0 {
		return ""
	}
	value := ""
	var kept []string
	for _, line := range lines {
		for _, part := range strings.Split(line, ";") {
			name, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			if name == sessionCookie {
				if value == "" {
					value = v
				}
				continue
			}
			if strings.TrimSpace(part) != "" {
				kept = append(kept, strings.TrimSpace(part))
			}
		}
	}
	r.Header.Del("Cookie")
	if len(kept) > 0 {
		r.Header.Set("Cookie", strings.Join(kept, "; "))
	}
	return value
}

// loadSecret reads the server secret from path, creating it (32 random
// bytes, hex, mode 0600) on first use. It signs session cookies, so it
// must survive restarts and stay private.
func loadSecret(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		secret, derr := hex.DecodeString(strings.TrimSpace(string(data)))
		if derr != nil || len(secret) < 32 {
			return nil, fmt.Errorf("secret file %s: want at least 64 hex digits", path)
		}
		return secret, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("secret file %s: %w", path, err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("secret file %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return loadSecret(path) // another process made it first
	}
	if err != nil {
		return nil, fmt.Errorf("secret file %s: %w", path, err)
	}
	_, err = f.WriteString(hex.EncodeToString(secret) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("secret file %s: %w", path, err)
	}
	return secret, nil
}
