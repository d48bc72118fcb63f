package wsrelay

import "encoding/binary"

// Websocket opcodes (RFC 6455, 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
)

// parser follows the frame boundaries of the server-to-client byte stream,
// so whole frames can be slipped in between ComfyUI's without ever cutting
// one. It never changes the bytes; it can keep a copy of a message's payload.
type parser struct {
	hdr    [14]byte
	hlen   int // header bytes held
	need   int // header length once known (2 until the second byte)
	remain uint64
	inHdr  bool

	op     byte // opcode of the current frame
	fin    bool
	rsv1   bool // compressed (permessage-deflate)
	masked bool
	mask   [4]byte
	off    uint64 // payload offset within the frame, for unmasking

	inMsg bool // a fragmented data message continues past this frame
	msgOp byte // opcode of the message being carried

	// keep, when set at a message's first frame, keeps its payload (up to
	// maxKeep bytes) for onMessage.
	keep     func(op byte) bool
	kept     []byte
	keeping  bool
	overflow bool
	maxKeep  int
	closed   bool // a close frame went by: nothing may follow it
}

// idle says the stream stands between frames.
func (p *parser) idle() bool { return !p.inHdr && p.remain == 0 }

// feed consumes bytes of b up to the end of the current frame at most and
// returns how many, and whether a frame ended there; when a data message
// ended with that frame, msg is its kept payload (nil if none was kept).
func (p *parser) feed(b []byte) (n int, frameEnd bool, msg []byte, msgOp byte) {
	if p.idle() {
		p.inHdr, p.hlen, p.need = true, 0, 2
	}
	if p.inHdr {
		for n < len(b) && p.hlen < p.need {
			p.hdr[p.hlen] = b[n]
			p.hlen++
			n++
			if p.hlen == 2 {
				p.need = 2
				switch p.hdr[1] & 0x7f {
				case 126:
					p.need += 2
				case 127:
					p.need += 8
				}
				if p.hdr[1]&0x80 != 0 {
					p.need += 4
				}
			}
		}
		if p.hlen < p.need {
			return n, false, nil, 0
		}
		p.inHdr = false
		p.startFrame()
		if p.remain == 0 {
			msg, msgOp = p.endFrame()
			return n, true, msg, msgOp
		}
		return n, false, nil, 0
	}
	k := uint64(len(b))
	if k > p.remain {
		k = p.remain
	}
	// Control frames may come between a message's fragments; they are not
	// part of it.
	if p.keeping && !p.overflow && p.op < 0x8 {
		if len(p.kept)+int(k) > p.maxKeep {
			p.overflow, p.kept = true, nil
		} else {
			start := len(p.kept)
			p.kept = append(p.kept, b[:k]...)
			if p.masked {
				for i := start; i < len(p.kept); i++ {
					p.kept[i] ^= p.mask[p.off%4]
					p.off++
				}
			}
		}
	}
	p.remain -= k
	if p.remain == 0 {
		msg, msgOp = p.endFrame()
		return int(k), true, msg, msgOp
	}
	return int(k), false, nil, 0
}

func (p *parser) startFrame() {
	h := p.hdr[:p.hlen]
	p.fin = h[0]&0x80 != 0
	p.rsv1 = h[0]&0x40 != 0
	p.op = h[0] & 0x0f
	p.masked = h[1]&0x80 != 0
	p.off = 0
	i := 2
	switch l := h[1] & 0x7f; l {
	case 126:
		p.remain = uint64(binary.BigEndian.Uint16(h[2:]))
		i += 2
	case 127:
		p.remain = binary.BigEndian.Uint64(h[2:])
		i += 8
	default:
		p.remain = uint64(l)
	}
	if p.masked {
		copy(p.mask[:], h[i:i+4])
	}
	switch p.op {
	case opText, opBinary: // a new data message
		p.msgOp = p.op
		p.kept, p.overflow = p.kept[:0], false
		// A compressed message cannot be read here; it is carried, not kept.
		p.keeping = p.keep != nil && !p.rsv1 && p.keep(p.op)
	case opClose:
		p.closed = true
	}
}

// endFrame updates the message state at a frame's end and returns the kept
// payload of a data message that ended with it.
func (p *parser) endFrame() ([]byte, byte) {
	if p.op >= 0x8 {
		return nil, 0
	}
	if !p.fin {
		p.inMsg = true
		return nil, 0
	}
	p.inMsg = false
	if !p.keeping || p.overflow {
		p.keeping = false
		return nil, 0
	}
	p.keeping = false
	return p.kept, p.msgOp
}

// frame encodes a server-to-client (unmasked) frame.
func frame(op byte, payload []byte) []byte {
	var hdr []byte
	switch n := len(payload); {
	case n < 126:
		hdr = []byte{0x80 | op, byte(n)}
	case n <= 0xffff:
		hdr = []byte{0x80 | op, 126, byte(n >> 8), byte(n)}
	default:
		hdr = make([]byte, 10)
		hdr[0], hdr[1] = 0x80|op, 127
		binary.BigEndian.PutUint64(hdr[2:], uint64(n))
	}
	return append(hdr, payload...)
}
