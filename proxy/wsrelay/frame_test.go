package wsrelay

import (
	"bytes"
	"strings"
	"testing"
)

// stream is a server's byte stream: a text message, a large binary one, a
// text message in two fragments with a ping between them, a masked text
// frame, a compressed one (carried, never kept), and a close.
func stream() (wire []byte, frames int, want []string) {
	big := bytes.Repeat([]byte("p"), 70_000)
	mid := bytes.Repeat([]byte("m"), 300)
	add := func(b []byte) { wire = append(wire, b...); frames++ }
	add(frame(opText, []byte(`{"type":"status"}`)))
	add(frame(opBinary, big))
	first := frame(opText, []byte(`{"type":"exec`))
	first[0] &^= 0x80 // not FIN
	add(first)
	add(frame(opPing, []byte("hi")))
	add(frame(opContinuation, []byte(`uted"}`)))
	add(frame(opBinary, mid))
	masked := []byte{0x81, 0x80 | 3, 1, 2, 3, 4, 'a' ^ 1, 'b' ^ 2, 'c' ^ 3}
	add(masked)
	compressed := frame(opText, []byte{0x4b, 0x4c, 0x4a})
	compressed[0] |= 0x40
	add(compressed)
	add(frame(opClose, []byte{0x03, 0xe8}))
	return wire, frames, []string{`{"type":"status"}`, string(big), `{"type":"executed"}`, string(mid), "abc"}
}

func feedAll(t *testing.T, wire []byte, chunk func(i int) int) (ends int, kept []string, p *parser) {
	p = &parser{keep: func(byte) bool { return true }, maxKeep: 1 << 20}
	var out []byte
	for i := 0; len(wire) > 0; i++ {
		c := min(max(chunk(i), 1), len(wire))
		b := wire[:c]
		wire = wire[c:]
		for len(b) > 0 {
			n, end, msg, _ := p.feed(b)
			if n == 0 && !end {
				t.Fatal("feed made no progress")
			}
			out = append(out, b[:n]...)
			b = b[n:]
			if end {
				ends++
			}
			if msg != nil {
				kept = append(kept, string(msg))
			}
		}
	}
	_ = out
	return ends, kept, p
}

func TestParserFollowsFrames(t *testing.T) {
	wire, frames, want := stream()
	for _, size := range []int{1, 2, 3, 7, 100, 65_536, len(wire)} {
		ends, kept, p := feedAll(t, wire, func(int) int { return size })
		if ends != frames {
			t.Errorf("chunks of %d: %d frame ends, want %d", size, ends, frames)
		}
		if strings.Join(kept, "|") != strings.Join(want, "|") {
			t.Errorf("chunks of %d: kept %d messages %.60q, want %.60q", size, len(kept), kept, want)
		}
		if !p.idle() || p.inMsg || !p.closed {
			t.Errorf("chunks of %d: end state idle=%v inMsg=%v closed=%v", size, p.idle(), p.inMsg, p.closed)
		}
	}
}

func TestParserKeepsNothingTooLarge(t *testing.T) {
	p := &parser{keep: func(byte) bool { return true }, maxKeep: 10}
	wire := append(frame(opText, []byte(strings.Repeat("x", 11))), frame(opText, []byte("short"))...)
	var kept []string
	for len(wire) > 0 {
		n, _, msg, _ := p.feed(wire)
		wire = wire[n:]
		if msg != nil {
			kept = append(kept, string(msg))
		}
	}
	if len(kept) != 1 || kept[0] != "short" {
		t.Fatalf("kept %q", kept)
	}
}

func FuzzParser(f *testing.F) {
	f.Add([]byte{1, 2, 3, 200, 5})
	f.Add([]byte{255})
	wire, frames, want := stream()
	f.Fuzz(func(t *testing.T, sizes []byte) {
		if len(sizes) == 0 {
			return
		}
		ends, kept, _ := feedAll(t, wire, func(i int) int { return int(sizes[i%len(sizes)]) * 17 })
		if ends != frames || strings.Join(kept, "|") != strings.Join(want, "|") {
			t.Fatalf("ends %d kept %d", ends, len(kept))
		}
	})
}

func FuzzParserAnyBytes(f *testing.F) {
	f.Add([]byte{0x81, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, wire []byte) {
		// Whatever a server sends, the parser consumes it all, keeps within
		// its bound, and never stalls.
		p := &parser{keep: func(byte) bool { return true }, maxKeep: 64}
		for len(wire) > 0 {
			n, end, msg, _ := p.feed(wire)
			if n == 0 && !end {
				t.Fatal("no progress")
			}
			if len(msg) > 64 {
				t.Fatal("kept beyond the bound")
			}
			wire = wire[n:]
		}
	})
}
