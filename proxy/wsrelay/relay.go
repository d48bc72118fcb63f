// Package wsrelay carries ComfyUI's /ws sockets frame by frame, so comfyshim
// can add frames of its own between ComfyUI's: keep-alive pings for proxies
// that cut idle sockets, and a user's job events on every socket that user
// has open, as Comfy Cloud delivers them.
//
// ComfyUI sends a prompt's execution events only to the socket whose
// clientId equals the prompt's client_id, and none at all when the prompt has
// none (Cloud scripts send none). The Hub gives each owner (an API key's
// user, or everyone when no keys are configured) a socket of its own to
// ComfyUI, the collector, whose clientId is put into that owner's prompts
// that name none; what arrives there is copied to every socket of the owner.
// For authenticated owners, the events of a prompt that names its own
// client_id reach that socket from ComfyUI as before and are copied to the
// owner's other sockets.
package wsrelay

import (
	"bytes"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Options configure a Hub.
type Options struct {
	// Upstream is ComfyUI's websocket URL (ws://host:port/ws).
	Upstream string
	// Ping is how often each socket gets a ping; 0 disables pings.
	Ping time.Duration
	// Queue bounds the frames waiting to be slipped into one socket; beyond
	// it, copies are dropped (and counted) rather than held in memory.
	Queue  int
	Logger *slog.Logger
	// Dialer reaches ComfyUI for collectors (a default one if nil).
	Dialer *websocket.Dialer
	// Executed, when set, sees every "executed" message ComfyUI sends a
	// member socket or a collector (a node's outputs). It must not block.
	Executed func(msg []byte)
	// Collected, when set, sees every message a collector socket receives
	// (binary frames and the JSON messages naming a prompt). The data is
	// the reader's: copy what is kept. It must not block.
	Collected func(binary bool, msg []byte)
}

// Hub knows every relayed socket by owner and runs the collectors.
type Hub struct {
	opts    Options
	mu      sync.Mutex
	owners  map[string]*group
	closed  bool
	dropped atomic.Int64
}

type group struct {
	sockets map[*Conn]struct{}
	col     *collector
	dialing chan struct{} // closed when a dial in progress ends
}

// NewHub returns a hub; Close ends its collectors.
func NewHub(opts Options) *Hub {
	if opts.Queue <= 0 {
		opts.Queue = 256
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Dialer == nil {
		opts.Dialer = &websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	}
	return &Hub{opts: opts, owners: map[string]*group{}}
}

// Dropped counts frames not delivered because a socket's queue was full.
func (h *Hub) Dropped() int64 { return h.dropped.Load() }

// Close ends every collector. Relayed sockets end with their connections.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	var cols []*collector
	for _, g := range h.owners {
		if g.col != nil {
			cols = append(cols, g.col)
		}
	}
	h.mu.Unlock()
	for _, c := range cols {
		c.close()
	}
}

func (h *Hub) group(owner string) *group {
	g := h.owners[owner]
	if g == nil {
		g = &group{sockets: map[*Conn]struct{}{}}
		h.owners[owner] = g
	}
	return g
}

// ConnOptions describe one relayed socket.
type ConnOptions struct {
	Owner string
	// Member puts the socket in its owner's group: it receives the owner's
	// collected events. Only ComfyUI's own /ws is a member.
	Member bool
	// Share copies the events ComfyUI sends this socket to the owner's other
	// sockets (authenticated owners only; the stock web app's tabs of an
	// unauthenticated ComfyUI stay as they are).
	Share bool
	// Rewrite, when set, may change each of the first few text messages
	// ComfyUI sends (whole, unfragmented, up to 64 KiB); it returns the
	// message to send instead. Later messages pass untouched.
	Rewrite func(msg []byte) []byte
	// RewriteFirst is how many messages Rewrite sees (8 if 0).
	RewriteFirst int
}

// Conn is the client side of a relayed websocket after the handshake. What
// ComfyUI sends goes through Write, parsed for frame boundaries; the
// client's own frames (Read) pass untouched.
type Conn struct {
	net.Conn
	hub  *Hub
	opts ConnOptions

	mu          sync.Mutex
	cond        *sync.Cond // signalled at every frame boundary and on close
	p           parser
	closed      bool
	held        bool   // the current message is held back for Rewrite
	rewriteLeft int    // messages Rewrite may still see
	out0        []byte // reused write buffer

	out  chan []byte // frames waiting for a boundary
	done chan struct{}
	once sync.Once
}

// Wrap relays c, the client connection of a websocket whose handshake has
// been answered.
func (h *Hub) Wrap(c net.Conn, opts ConnOptions) *Conn {
	w := &Conn{Conn: c, hub: h, opts: opts, out: make(chan []byte, h.opts.Queue), done: make(chan struct{})}
	w.cond = sync.NewCond(&w.mu)
	w.p.maxKeep = 4 << 20
	if opts.Rewrite != nil {
		w.rewriteLeft = opts.RewriteFirst
		if w.rewriteLeft <= 0 {
			w.rewriteLeft = 8
		}
	}
	w.p.keep = func(op byte) bool {
		// Called at a message's first frame, its header parsed.
		small := op == opText && w.p.fin && w.p.remain <= 64<<10
		w.held = w.rewriteLeft > 0 && small
		return w.held || (opts.Share && h.hasSiblings(w)) || (small && opts.Member && h.opts.Executed != nil)
	}
	if opts.Member {
		h.mu.Lock()
		h.group(opts.Owner).sockets[w] = struct{}{}
		h.mu.Unlock()
	}
	go w.run()
	return w
}

func (h *Hub) hasSiblings(c *Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.owners[c.opts.Owner]
	return g != nil && len(g.sockets) > 1
}

// deliver queues a frame for every member socket of owner except skip.
func (h *Hub) deliver(owner string, f []byte, skip *Conn) {
	h.mu.Lock()
	g := h.owners[owner]
	var to []*Conn
	if g != nil {
		to = make([]*Conn, 0, len(g.sockets))
		for c := range g.sockets {
			if c != skip {
				to = append(to, c)
			}
		}
	}
	h.mu.Unlock()
	h.enqueue(to, f)
}

// enqueue queues f for each socket without waiting: a socket whose queue is
// full (its client stopped reading) loses the frame, counted.
func (h *Hub) enqueue(to []*Conn, f []byte) {
	for _, c := range to {
		select {
		case c.out <- f:
		case <-c.done:
		default:
			h.dropped.Add(1)
		}
	}
}

// Broadcast sends a text message to every ComfyUI /ws socket, whoever owns
// it (comfyshim's own events, as ComfyUI broadcasts its status).
func (h *Hub) Broadcast(msg []byte) {
	f := frame(opText, msg)
	h.mu.Lock()
	var to []*Conn
	for _, g := range h.owners {
		for c := range g.sockets {
			to = append(to, c)
		}
	}
	h.mu.Unlock()
	h.enqueue(to, f)
}

// Write carries ComfyUI's bytes to the client, noting frame boundaries.
// Nothing is slipped in during a Write (the lock is held), so b goes out in
// one write whatever frames it holds. A frame's header goes out once it is
// complete, so a message to rewrite can be held back whole.
func (c *Conn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var shared [][]byte
	boundary := false
	out := c.out0[:0]
	for rest := b; len(rest) > 0; {
		startsFrame := c.p.idle() || c.p.inHdr
		n, frameEnd, msg, op := c.p.feed(rest)
		chunk := rest[:n]
		rest = rest[n:]
		switch {
		case c.p.inHdr:
			// the header is not complete: its bytes wait in the parser
		case startsFrame:
			if !c.holding() {
				out = append(out, c.p.hdr[:c.p.hlen]...)
			}
		case !c.holding():
			out = append(out, chunk...)
		}
		if !frameEnd {
			continue
		}
		boundary = true
		if c.held && c.p.op < 0x8 && c.p.fin {
			// A held message ends: out it goes, rewritten.
			c.held = false
			c.rewriteLeft--
			if msg == nil {
				msg = []byte{} // an empty message
			}
			msg = c.opts.Rewrite(msg)
			out = append(out, frame(opText, msg)...)
		}
		if msg != nil && c.opts.Share && shareable(op, msg) {
			shared = append(shared, frame(op, msg))
		}
		if msg != nil && op == opText && c.opts.Member && c.hub.opts.Executed != nil && isExecuted(msg) {
			c.hub.opts.Executed(bytes.Clone(msg))
		}
	}
	if cap(out) <= 256<<10 { // one copy buffer or two; a rare larger write is not kept
		c.out0 = out
	}
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	for _, f := range shared {
		c.hub.deliver(c.opts.Owner, f, c)
	}
	if boundary {
		c.cond.Broadcast()
	}
	return len(b), nil
}

// isExecuted spots ComfyUI's "executed" message without decoding JSON.
func isExecuted(msg []byte) bool {
	return bytes.Contains(msg, []byte(`"executed"`)) && bytes.Contains(msg, []byte(`"output"`))
}

// holding says the current frame belongs to a message held for rewriting.
func (c *Conn) holding() bool { return c.held && c.p.op < 0x8 }

// shareable is a message about a prompt: a text message whose data names a
// prompt_id, or a binary preview.
func shareable(op byte, msg []byte) bool {
	if op == opBinary {
		return true
	}
	return promptID(msg) != ""
}

// run slips queued frames and pings into the stream at boundaries.
func (c *Conn) run() {
	var tick <-chan time.Time
	if c.hub.opts.Ping > 0 {
		t := time.NewTicker(c.hub.opts.Ping)
		defer t.Stop()
		tick = t.C
	}
	ping := frame(opPing, nil)
	for {
		select {
		case <-c.done:
			return
		case f := <-c.out:
			c.insert(f, true)
		case <-tick:
			c.insert(ping, false)
		}
	}
}

// insert writes f once the stream stands between frames (and, for a data
// frame, between messages: a message's fragments must stay together).
func (c *Conn) insert(f []byte, data bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.closed && !c.p.closed && !(c.p.idle() && (!data || !c.p.inMsg)) {
		c.cond.Wait()
	}
	if c.closed || c.p.closed {
		return
	}
	_, _ = c.Conn.Write(f)
}

// Close ends the relay and closes the connection.
func (c *Conn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		close(c.done)
		// The connection first: a Write blocked on a client that stopped
		// reading holds the lock until it fails.
		err = c.Conn.Close()
		c.hub.mu.Lock()
		if g := c.hub.owners[c.opts.Owner]; g != nil {
			delete(g.sockets, c)
		}
		c.hub.mu.Unlock()
		c.mu.Lock()
		c.closed = true
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	return err
}
