package proxy

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/gin-gonic/gin"
)

// clientInfo is who sent a request, as far as comfyshim can tell.
type clientInfo struct {
	ip      string // the peer's address, or the client's from X-Forwarded-For when the peer is trusted
	https   bool   // the client reached comfyshim (or the trusted proxy before it) over https
	trusted bool   // the peer is one of trusted_proxies
	peer    string // the connection's own address
}

type clientKey struct{}

// clientOf returns what identifyClient found; requests that did not pass
// through it (tests calling handlers directly) are described from the
// connection alone.
func clientOf(r *http.Request) clientInfo {
	if ci, ok := r.Context().Value(clientKey{}).(clientInfo); ok {
		return ci
	}
	peer := peerIP(r)
	return clientInfo{ip: peer, peer: peer, https: r.TLS != nil}
}

func peerIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// trustedNets are the reverse proxies whose forwarded headers are believed.
type trustedNets []netip.Prefix

func (t trustedNets) contains(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// identify works out the client's address and scheme. Forwarded headers
// count only from a trusted peer: anyone else could write them. The client
// is the right-most X-Forwarded-For hop that is not itself a trusted proxy.
func (t trustedNets) identify(r *http.Request) clientInfo {
	peer := peerIP(r)
	ci := clientInfo{ip: peer, peer: peer, https: r.TLS != nil}
	if len(t) == 0 || !t.contains(peer) {
		return ci
	}
	ci.trusted = true
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h := strings.TrimSpace(hops[i])
		a, err := netip.ParseAddr(h)
		if err != nil {
			break // a malformed hop ends what can be believed
		}
		ci.ip = a.Unmap().String()
		if !t.contains(ci.ip) {
			break
		}
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p != "" {
		first, _, _ := strings.Cut(p, ",")
		ci.https = strings.EqualFold(strings.TrimSpace(first), "https")
	}
	return ci
}

// identifyClient records the client's identity for every later step
// (failure limit, access log, URLs comfyshim builds, forwarding).
func (s *Server) identifyClient(c *gin.Context) {
	ci := s.trusted.identify(c.Request)
	c.Request = c.Request.WithContext(context.WithValue(c.Request.Context(), clientKey{}, ci))
	c.Next()
}

// scheme is the URL scheme the client used.
func (ci clientInfo) scheme() string {
	if ci.https {
		return "https"
	}
	return "http"
}
