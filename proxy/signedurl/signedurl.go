// Package signedurl makes and checks short-lived signed URLs: an HMAC over
// the method, path, query and expiry, so a URL handed to a client works
// without a key until it expires and not at all once altered.
package signedurl

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Query parameters a signed URL carries after its own.
const (
	ExpiresParam   = "expires"
	SignatureParam = "signature"
)

var (
	// ErrInvalid is a signature that does not match (tampered, or made with
	// another secret) or a malformed signed URL.
	ErrInvalid = errors.New("the URL's signature is not valid")
	// ErrExpired is a valid signature past its expiry.
	ErrExpired = errors.New("the signed URL has expired")
)

// Signer signs and verifies URLs with a key derived from a server secret.
type Signer struct{ key []byte }

// New derives the signing key from secret, so the same secret can serve
// other purposes without the two ever producing the same MAC.
func New(secret []byte) *Signer {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("comfyshim signed url v1"))
	return &Signer{key: m.Sum(nil)}
}

func (s *Signer) mac(method, path, query string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(method))
	m.Write([]byte{0})
	m.Write([]byte(path))
	m.Write([]byte{0})
	m.Write([]byte(query))
	return m.Sum(nil)
}

// Sign returns rawQuery extended with the expiry and the signature.
func (s *Signer) Sign(method, path, rawQuery string, expires time.Time) string {
	q := rawQuery
	if q != "" {
		q += "&"
	}
	q += ExpiresParam + "=" + strconv.FormatInt(expires.Unix(), 10)
	return q + "&" + SignatureParam + "=" + base64.RawURLEncoding.EncodeToString(s.mac(method, path, q))
}

// Signed says whether rawQuery carries a signature at all.
func Signed(rawQuery string) bool {
	return strings.HasPrefix(rawQuery, SignatureParam+"=") || strings.Contains(rawQuery, "&"+SignatureParam+"=")
}

// Verify checks a signed query for method and path and returns the query as
// it was before signing.
func (s *Signer) Verify(method, path, rawQuery string, now time.Time) (string, error) {
	// The signature is the last parameter and covers everything before it,
	// byte for byte.
	i := strings.LastIndex(rawQuery, "&"+SignatureParam+"=")
	if i < 0 {
		return "", ErrInvalid
	}
	signed, sig := rawQuery[:i], rawQuery[i+len(SignatureParam)+2:]
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(method, path, signed)) {
		return "", ErrInvalid
	}
	j := strings.LastIndex(signed, ExpiresParam+"=")
	if j < 0 || (j > 0 && signed[j-1] != '&') {
		return "", ErrInvalid
	}
	exp, err := strconv.ParseInt(signed[j+len(ExpiresParam)+1:], 10, 64)
	if err != nil {
		return "", ErrInvalid
	}
	if now.Unix() >= exp {
		return "", ErrExpired
	}
	return strings.TrimSuffix(signed[:j], "&"), nil
}
