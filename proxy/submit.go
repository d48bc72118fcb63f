package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/comfyshim/comfyshim/proxy/jobs"
)

// maxPromptBody bounds a prompt comfyshim reads before forwarding it:
// ComfyUI's own default request limit.
const maxPromptBody = 100 << 20

// submitPrompt forwards POST /prompt. A prompt that names no client_id (as
// Cloud scripts send it) gets its owner's collector socket as client_id, so
// its events reach the owner's websockets; an accepted prompt is remembered
// for the job API.
func (s *Server) submitPrompt(c *gin.Context) {
	r := c.Request
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPromptBody+1))
	if err != nil {
		apiError(c, http.StatusBadRequest, "INVALID_BODY", "the request body could not be read")
		return
	}
	if len(body) > maxPromptBody {
		apiError(c, http.StatusRequestEntityTooLarge, "BODY_TOO_LARGE", fmt.Sprintf("a prompt may be at most %d bytes", maxPromptBody))
		return
	}
	who := callerOf(r)
	if id := clientIDOf(body); strings.HasPrefix(id, reservedClientID) {
		apiError(c, http.StatusBadRequest, "RESERVED_CLIENT_ID", "client_ids starting with "+reservedClientID+" are comfyshim's own")
		return
	}
	if needsClientID(body) {
		if id, err := s.hub.ClientID(r.Context(), who.owner); err != nil {
			s.log.Warn("prompt forwarded without a client_id: no socket to ComfyUI for its events", "err", err)
		} else {
			body = withClientID(body, id)
		}
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	r.Header.Del("Transfer-Encoding")
	tee := &teeWriter{ResponseWriter: c.Writer}
	c.Writer = tee
	s.forwardHandler(c)
	if tee.Status() == http.StatusOK {
		var ok struct {
			PromptID string `json:"prompt_id"`
		}
		if json.Unmarshal(tee.head.Bytes(), &ok) == nil && ok.PromptID != "" {
			s.registry.Add(ok.PromptID, jobs.Submission{Owner: who.owner, Created: time.Now()})
		}
	}
}

// needsClientID: a JSON object whose client_id is absent or empty.
func needsClientID(body []byte) bool {
	var p map[string]json.RawMessage
	if json.Unmarshal(body, &p) != nil || p == nil {
		return false // ComfyUI answers what it cannot read (and "null")
	}
	var id string
	raw, ok := p["client_id"]
	return !ok || (json.Unmarshal(raw, &id) == nil && id == "")
}

// clientIDOf reads a prompt's client_id (the last one, as ComfyUI does).
func clientIDOf(body []byte) string {
	var p struct {
		ClientID any `json:"client_id"`
	}
	_ = json.Unmarshal(body, &p)
	id, _ := p.ClientID.(string)
	return id
}

// withClientID adds "client_id" as the object's last member, leaving the
// client's bytes as they were (a last duplicate wins in ComfyUI's parser).
func withClientID(body []byte, id string) []byte {
	end := bytes.LastIndexByte(body, '}')
	head := bytes.TrimRight(body[:end], " \t\r\n")
	enc, _ := json.Marshal(id)
	out := make([]byte, 0, len(body)+len(enc)+16)
	out = append(out, head...)
	if !bytes.HasSuffix(head, []byte("{")) {
		out = append(out, ',')
	}
	out = append(out, `"client_id":`...)
	out = append(out, enc...)
	return append(out, body[end:]...)
}

// teeWriter keeps the start of a response as it is written.
type teeWriter struct {
	gin.ResponseWriter
	head bytes.Buffer
}

func (w *teeWriter) Write(b []byte) (int, error) {
	if room := 64<<10 - w.head.Len(); room > 0 {
		w.head.Write(b[:min(room, len(b))])
	}
	return w.ResponseWriter.Write(b)
}
