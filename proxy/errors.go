package proxy

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/comfyshim/comfyshim/proxy/apierror"
)

// ErrorResponse is the Cloud API's error body.
type ErrorResponse = apierror.ErrorResponse

func writeError(w http.ResponseWriter, status int, code, message string) {
	apierror.Write(w, status, code, message)
}

func apiError(c *gin.Context, status int, code, msg string) {
	writeError(c.Writer, status, code, msg)
	c.Abort()
}
