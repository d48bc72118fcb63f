package proxy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"path"
	"strings"

	"github.com/gin-gonic/gin"
)

// comfyshim tags "uploaded" what OSS ComfyUI tags so: files that came
// through /upload/image or /upload/mask (seen in ComfyUI's answer, forwarded
// through comfyshim) and the outputs workflows save (seen in the "executed"
// messages of the websockets it carries). The tag is kept in the tags file
// like any other; files that arrived another way carry their defaults.

// uploadedFile is where ComfyUI says a file went.
type uploadedFile struct {
	Filename  string `json:"filename"`
	Name      string `json:"name"`
	Subfolder string `json:"subfolder"`
	Type      string `json:"type"`
}

func (f uploadedFile) rel() string {
	name := f.Filename
	if name == "" {
		name = f.Name
	}
	if name == "" || strings.ContainsAny(name, `/\`) {
		return ""
	}
	return path.Join(strings.ReplaceAll(f.Subfolder, `\`, "/"), name)
}

// markUploaded queues files to tag; a full queue drops (the tag is a
// convenience, the file is unaffected).
func (s *Server) markUploaded(files []uploadedFile) {
	for _, f := range files {
		if rel := f.rel(); rel != "" {
			select {
			case s.uploads <- [2]string{f.Type, rel}:
			default:
			}
		}
	}
}

// uploadedLoop tags the queued files, off the request path.
func (s *Server) uploadedLoop() {
	for {
		select {
		case <-s.stop:
			return
		case f := <-s.uploads:
			if err := s.lib.MarkUploaded(f[0], f[1]); err != nil {
				s.log.Debug("not tagged uploaded", "file", f[0]+"/"+f[1], "err", err)
			}
		}
	}
}

// forwardUpload forwards /upload/image and /upload/mask and notes where
// ComfyUI put the file.
func (s *Server) forwardUpload(c *gin.Context) {
	tee := &teeWriter{ResponseWriter: c.Writer}
	c.Writer = tee
	s.forwardHandler(c)
	if tee.Status() != http.StatusOK {
		return
	}
	var f uploadedFile
	if json.Unmarshal(tee.head.Bytes(), &f) == nil {
		if f.Type == "" {
			f.Type = "input"
		}
		s.markUploaded([]uploadedFile{f})
	}
}

// executedOutputs reads the files of an "executed" message.
func (s *Server) executedOutputs(msg []byte) {
	var m struct {
		Type string `json:"type"`
		Data struct {
			Output map[string]json.RawMessage `json:"output"`
		} `json:"data"`
	}
	if json.Unmarshal(msg, &m) != nil || m.Type != "executed" {
		return
	}
	var files []uploadedFile
	for _, raw := range m.Data.Output {
		if !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("[")) {
			continue
		}
		var items []uploadedFile
		if json.Unmarshal(raw, &items) == nil {
			for _, it := range items {
				if it.Type == "output" || it.Type == "temp" {
					files = append(files, it)
				}
			}
		}
	}
	s.markUploaded(files)
}
