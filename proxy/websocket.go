package proxy

import (
	"bufio"
	"net"
	"net/http"
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
// close it.
type trackingWriter struct {
	http.ResponseWriter
	s    *Server
	conn net.Conn
}

func (w *trackingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.conn = conn
		w.s.track(conn)
	}
	return conn, brw, err
}

func (w *trackingWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
