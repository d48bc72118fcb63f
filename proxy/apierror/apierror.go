// Package apierror writes the Cloud API's error body, the one shape every
// error comfyshim answers itself has.
package apierror

import (
	"encoding/json"
	"net/http"
)

// ErrorResponse is the Cloud API's error body.
type ErrorResponse struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Write answers with an ErrorResponse. It works on a bare
// http.ResponseWriter so the forwarder's error hook can use it too.
func Write(w http.ResponseWriter, status int, code, message string) {
	body, _ := json.Marshal(ErrorResponse{Code: code, Message: message})
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
