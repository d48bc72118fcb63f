package proxy

import (
	"bufio"
	"net"
	"net/http"
	"strings"

	"github.com/comfyshim/comfyshim/proxy/wsrelay"
)

// Websockets are hijacked connections: http.Server neither tracks nor
// closes them, so comfyshim does, for shutdown and the open-sockets gauge.

func (s *Server) track(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		_ = c.Close()
		return
	}
	s.hijacked[c] = struct{}{}
	s.metrics.websockets.Inc()
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	if _, ok := s.hijacked[c]; ok {
		delete(s.hijacked, c)
		s.metrics.websockets.Dec()
	}
	s.mu.Unlock()
}

// closeHijacked ends every open websocket. http.Server.Shutdown does not
// know hijacked connections, and ComfyUI's socket never ends by itself.
func (s *Server) closeHijacked() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	for c := range s.hijacked {
		_ = c.Close()
	}
}

// trackingWriter records a websocket's hijacked connection so shutdown can
// close it, and hands the forwarder a relay in its place when the
// connection is a websocket.
type trackingWriter struct {
	http.ResponseWriter
	s     *Server
	conn  net.Conn
	relay *wsrelay.ConnOptions // set for websockets
}

func (w *trackingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return conn, brw, err
	}
	w.conn = conn
	w.s.track(conn)
	if w.relay != nil {
		// The forwarder writes the 101 through brw, on the raw connection;
		// only what follows the handshake goes through the relay.
		return w.s.hub.Wrap(conn, *w.relay), brw, nil
	}
	return conn, brw, nil
}

// reservedClientID is the prefix of comfyshim's own collector sockets; a
// client taking such an id would take over another owner's job events.
const reservedClientID = "comfyshim-"

// prepareWebsocket sets up the relay of a websocket upgrade. ComfyUI's own
// /ws joins its owner's group. An authenticated owner's sockets share their
// job events, which means reading ComfyUI's messages, so they are asked for
// without compression.
func (s *Server) prepareWebsocket(r *http.Request, tw *trackingWriter) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return // another protocol: spliced as it is
	}
	who := callerOf(r)
	opts := wsrelay.ConnOptions{Owner: who.owner}
	if r.URL.Path == "/ws" || r.URL.Path == "/api/ws" {
		opts.Member = true
		opts.Share = who.via != viaNone
		if s.cfg.AdvertiseAssets {
			opts.Rewrite = advertiseAssets
		}
	}
	if opts.Share || opts.Rewrite != nil {
		// Reading ComfyUI's messages needs them uncompressed.
		r.Header.Del("Sec-WebSocket-Extensions")
	}
	tw.relay = &opts
}

func (w *trackingWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
