package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// comfyshim serves ComfyUI's asset API itself, so it tells the web app so:
// "assets": true in GET /features and in the websocket's feature_flags
// message (advertise_assets), whatever ComfyUI was started with. The stock
// web app then uses the asset API for its model library and asset panels.

// features answers GET /features and /api/features: ComfyUI's flags with
// "assets" set.
func (s *Server) features(c *gin.Context) {
	if !s.cfg.AdvertiseAssets {
		s.forwardHandler(c)
		return
	}
	req, err := http.NewRequestWithContext(c.Request.Context(), http.MethodGet, strings.TrimSuffix(s.cfg.Upstream.String(), "/")+c.Request.URL.Path, nil)
	if err != nil {
		apiError(c, http.StatusInternalServerError, "INTERNAL_ERROR", err.Error())
		return
	}
	resp, err := s.upstreamClient.Do(req)
	if err != nil {
		apiError(c, http.StatusBadGateway, "UPSTREAM_UNAVAILABLE", upstreamErrorText(err))
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var flags map[string]any
	if err != nil || resp.StatusCode != http.StatusOK || json.Unmarshal(body, &flags) != nil || flags == nil {
		apiError(c, http.StatusBadGateway, "UPSTREAM_UNAVAILABLE", "ComfyUI's /features did not answer a JSON object")
		return
	}
	flags["assets"] = true
	c.JSON(http.StatusOK, flags)
}

// advertiseAssets rewrites ComfyUI's feature_flags websocket message; any
// other message is returned as it is.
func advertiseAssets(msg []byte) []byte {
	var m struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	if json.Unmarshal(msg, &m) != nil || m.Type != "feature_flags" || m.Data == nil {
		return msg
	}
	m.Data["assets"] = true
	out, err := json.Marshal(map[string]any{"type": m.Type, "data": m.Data})
	if err != nil {
		return msg
	}
	return out
}
