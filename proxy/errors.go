package proxy

import (
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/comfyshim/comfyshim/proxy/apierror"
	"github.com/comfyshim/comfyshim/proxy/apiv2"
)

// ErrorResponse is the Cloud API's error body.
type ErrorResponse = apierror.ErrorResponse

func writeError(w http.ResponseWriter, status int, code, message string) {
	apierror.Write(w, status, code, message)
}

func apiError(c *gin.Context, status int, code, msg string) {
	if apiv2.Owns(c.Request.URL.Path) {
		// Comfy API v2 spells its codes in lower case ("unauthorized").
		code = strings.ToLower(code)
	}
	writeError(c.Writer, status, code, msg)
	c.Abort()
}
