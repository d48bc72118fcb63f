package wsrelay

import (
	"io"
	"net"
	"testing"
)

// BenchmarkRelayMessage measures what carrying one ComfyUI message costs on
// top of writing it to the client's socket: "raw" writes the frame to the
// connection directly, "relay" through a Conn (frame boundaries followed),
// "relay_shared" through a Conn whose owner has a second socket, so each
// message is kept and read for a prompt_id as well.
func BenchmarkRelayMessage(b *testing.B) {
	msgs := map[string][]byte{
		"progress_text": frame(opText, []byte(`{"type":"progress","data":{"value":7,"max":20,"prompt_id":"6f1c6a52-5b8e-4bd5-9a0e-8f6ad2f1d2c3","node":"3"}}`)),
		"preview_64KiB": frame(opBinary, make([]byte, 64<<10)),
	}
	for name, msg := range msgs {
		for _, mode := range []string{"raw", "relay", "relay_shared"} {
			b.Run(name+"/"+mode, func(b *testing.B) {
				client, server := tcpPair(b)
				go func() { _, _ = io.Copy(io.Discard, client) }()
				var w io.Writer = server
				if mode != "raw" {
					h := NewHub(Options{Upstream: "ws://127.0.0.1:1/ws"})
					c := h.Wrap(server, ConnOptions{Owner: "o", Member: true, Share: mode == "relay_shared"})
					defer c.Close()
					if mode == "relay_shared" {
						other, peer := tcpPair(b)
						go func() { _, _ = io.Copy(io.Discard, other) }()
						sib := h.Wrap(peer, ConnOptions{Owner: "o", Member: true})
						defer sib.Close()
					}
					w = c
				}
				b.SetBytes(int64(len(msg)))
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if _, err := w.Write(msg); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func tcpPair(b testing.TB) (client, server net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}
