package wsrelay

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// TestRewriteHoldsWholeMessages: a message held for rewriting goes out
// rewritten as one frame, whatever chunks its header and payload arrive in;
// control frames, binary frames and later messages pass untouched.
func TestRewriteHoldsWholeMessages(t *testing.T) {
	upper := func(m []byte) []byte { return bytes.ToUpper(m) }
	first := frame(opText, []byte(`{"type":"status"}`))
	ping := frame(opPing, []byte("p"))
	bin := frame(opBinary, bytes.Repeat([]byte{1}, 300))
	third := frame(opText, []byte(`{"type":"later"}`))
	frag := frame(opText, []byte("frag-"))
	frag[0] &^= 0x80
	fragEnd := frame(opContinuation, []byte("ment"))
	in := bytes.Join([][]byte{first, ping, bin, frag, fragEnd, third}, nil)
	want := bytes.Join([][]byte{frame(opText, []byte(`{"TYPE":"STATUS"}`)), ping, bin, frag, fragEnd, third}, nil)
	for _, chunk := range []int{1, 2, 3, 5, 64, len(in)} {
		client, server := tcpPair(t)
		h := NewHub(Options{Upstream: "ws://127.0.0.1:1/ws"})
		c := h.Wrap(server, ConnOptions{Owner: "o", Member: true, Rewrite: upper, RewriteFirst: 1})
		got := make(chan []byte, 1)
		go func() {
			b := make([]byte, len(want))
			_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _ := io.ReadFull(client, b)
			got <- b[:n]
		}()
		for rest := in; len(rest) > 0; {
			k := min(chunk, len(rest))
			if _, err := c.Write(rest[:k]); err != nil {
				t.Fatal(err)
			}
			rest = rest[k:]
		}
		if g := <-got; !bytes.Equal(g, want) {
			t.Fatalf("chunks of %d: got %q\nwant %q", chunk, g, want)
		}
		c.Close()
	}
}
