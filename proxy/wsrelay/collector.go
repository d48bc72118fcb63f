package wsrelay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/url"
	"time"

	"github.com/gorilla/websocket"
)

// collector is comfyshim's own socket to ComfyUI for one owner: prompts of
// that owner that name no client_id are given its clientId, so their events
// arrive here and can be copied to the owner's sockets.
type collector struct {
	id   string
	conn *websocket.Conn
}

func (c *collector) close() { _ = c.conn.Close() }

var errClosed = errors.New("the websocket hub is closed")

// ClientID returns the clientId to put into owner's prompts that name none,
// connecting the owner's collector first if it is not connected: a prompt's
// events are only seen by a socket open before it runs.
func (h *Hub) ClientID(ctx context.Context, owner string) (string, error) {
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return "", errClosed
		}
		g := h.group(owner)
		if g.col != nil {
			id := g.col.id
			h.mu.Unlock()
			return id, nil
		}
		if wait := g.dialing; wait != nil {
			h.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		done := make(chan struct{})
		g.dialing = done
		h.mu.Unlock()

		col, err := h.dial(ctx)
		h.mu.Lock()
		g.dialing = nil
		close(done)
		if err == nil && h.closed {
			col.close()
			err = errClosed
		}
		if err == nil {
			g.col = col
		}
		h.mu.Unlock()
		if err != nil {
			return "", err
		}
		go h.collect(owner, col)
		return col.id, nil
	}
}

func (h *Hub) dial(ctx context.Context) (*collector, error) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	id := "comfyshim-" + hex.EncodeToString(b[:])
	conn, resp, err := h.opts.Dialer.DialContext(ctx, h.opts.Upstream+"?clientId="+url.QueryEscape(id), nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(64 << 20)
	// ComfyUI answers the handshake before it files the socket under its
	// clientId; its first message ("status", naming the sid) comes after.
	// Until then a prompt's events could go nowhere, so wait for it.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	} else {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	}
	if _, _, err := conn.ReadMessage(); err != nil {
		_ = conn.Close()
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Time{})
	return &collector{id: id, conn: conn}, nil
}

// collect copies what ComfyUI sends the collector to the owner's sockets
// until the socket ends; the next prompt then connects a new one.
func (h *Hub) collect(owner string, col *collector) {
	for {
		kind, data, err := col.conn.ReadMessage()
		if err != nil {
			break
		}
		if h.opts.Collected != nil && (kind == websocket.BinaryMessage || kind == websocket.TextMessage) {
			h.opts.Collected(kind == websocket.BinaryMessage, data)
		}
		switch {
		case kind == websocket.BinaryMessage:
			h.deliver(owner, frame(opBinary, data), nil)
		case kind == websocket.TextMessage && promptID(data) != "":
			h.deliver(owner, frame(opText, data), nil)
			if h.opts.Executed != nil && isExecuted(data) {
				h.opts.Executed(data)
			}
		}
	}
	col.close()
	h.mu.Lock()
	closed := h.closed
	if g := h.owners[owner]; g != nil && g.col == col {
		g.col = nil
	}
	h.mu.Unlock()
	if !closed {
		h.opts.Logger.Warn("collector socket to ComfyUI ended; the next prompt opens another")
	}
}

// promptID reads data.prompt_id from a ComfyUI message, or "".
func promptID(msg []byte) string {
	var m struct {
		Data struct {
			PromptID string `json:"prompt_id"`
		} `json:"data"`
	}
	if json.Unmarshal(msg, &m) != nil {
		return ""
	}
	return m.Data.PromptID
}
