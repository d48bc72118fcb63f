package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
)

// How a request proved who it is.
const (
	viaNone         = iota // no keys configured
	viaAPIKeyHeader        // X-API-Key, the Cloud scheme
	viaKey                 // Authorization or ?token=
	viaCookie              // a signed-in browser
	viaSigned              // a signed URL: good for the one resource it names
)

// caller is who a request acts for: the owner its jobs and websocket events
// belong to ("" when no keys are configured, everyone being the same).
type caller struct {
	owner string
	via   int
}

type callerKey struct{}

func withCaller(r *http.Request, c caller) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
}

func callerOf(r *http.Request) caller {
	c, _ := r.Context().Value(callerKey{}).(caller)
	return c
}

// owner names the key's holder: its ComfyUI user when bound to one (all of
// that user's keys are one owner), else the key itself by its fingerprint.
func (e keyEntry) owner() string {
	if e.user != "" {
		return "user:" + e.user
	}
	return "key:" + hex.EncodeToString(e.fp[:])
}

// userID is the id /api/user reports: derived from the owner, so it is
// stable for a key or user and reveals neither.
func userID(r *http.Request) string {
	o := callerOf(r).owner
	if o == "" {
		return "local"
	}
	sum := sha256.Sum256([]byte("comfyshim user\x00" + o))
	return hex.EncodeToString(sum[:16])
}
