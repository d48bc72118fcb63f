// Package apierror writes the Cloud API's error body, the one shape every
// error comfyshim answers itself has.
package apierror

import (
	"encoding/json"
	"net/http"
)

// ErrorResponse is the Cloud API's error body, flat {code, message}, with
// the same error in OSS ComfyUI's envelope {"error":{code,message,details}}
// beside it, so clients written for either read it.
type ErrorResponse struct {
	Code    string    `json:"code"`
	Message string    `json:"message"`
	Error   *Envelope `json:"error,omitempty"`
}

// Envelope is OSS ComfyUI's (and Comfy API v2's) error object.
type Envelope struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details"`
}

// Write answers with an ErrorResponse. It works on a bare
// http.ResponseWriter so the forwarder's error hook can use it too.
func Write(w http.ResponseWriter, status int, code, message string) {
	body, _ := json.Marshal(ErrorResponse{Code: code, Message: message, Error: &Envelope{Code: code, Message: message, Details: map[string]any{}}})
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
