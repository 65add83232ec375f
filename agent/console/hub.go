package console

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/coder/websocket"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/compute"
)

const (
	// viewerBuffer is how many chunks of output a viewer may fall behind
	// before it is dropped, so one stalled browser tab cannot hold up the
	// guest's serial port for everyone.
	viewerBuffer = 256
	// maxInput bounds one message of keystrokes (a paste).
	maxInput = 64 << 10
	// writeTimeout ends a viewer that stopped reading altogether: its
	// websocket is closed rather than left holding a goroutine.
	writeTimeout = 30 * time.Second
)

// hub is the agent's one connection to a VM's console socket, shared by
// every viewer attached to it. The handler's mutex guards its fields.
type hub struct {
	dir     string
	conn    net.Conn
	viewers map[*viewer]struct{}
	closed  bool
}

// viewer is one attached websocket. Its out channel is closed when it is
// detached; code and reason, set before that, say why.
type viewer struct {
	out    chan []byte
	code   websocket.StatusCode
	reason string
}

func (h *handler) serveConsole(w http.ResponseWriter, r *http.Request) {
	_, dir, ok := h.vmDir(w, r)
	if !ok {
		return
	}
	hb, v, st := h.attach(dir)
	if st != nil {
		writeError(w, st)
		return
	}
	// The console outlives the request's deadlines (net/http clears them
	// when Accept takes the connection over); writes have their own
	// timeout, and the server pings.
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		h.leave(hb, v) // Accept has answered the request
		return
	}
	c.SetReadLimit(maxInput)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	// Output: the hub's chunks, then a close frame saying why it ended.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := range v.out {
			wctx, wcancel := context.WithTimeout(ctx, writeTimeout)
			err := c.Write(wctx, websocket.MessageBinary, b)
			wcancel()
			if err != nil {
				cancel()
				return
			}
		}
		c.Close(v.code, v.reason)
		cancel()
	}()
	// Input: every message goes to the guest as it is.
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			break
		}
		if _, err := hb.conn.Write(data); err != nil {
			break // the hub is ending; its viewers hear why
		}
	}
	h.leave(hb, v)
	<-done
	c.CloseNow()
}

// attach adds a viewer to the VM's hub, connecting to the console socket
// if nobody is attached yet.
func (h *handler) attach(dir string) (*hub, *viewer, *api.Status) {
	h.mu.Lock()
	defer h.mu.Unlock()
	hb := h.hubs[dir]
	if hb == nil {
		// A unix socket connects at once or not at all, so holding the
		// lock for it is fine.
		conn, err := net.DialTimeout("unix", filepath.Join(dir, compute.ConsoleSocket), 5*time.Second)
		if err != nil {
			return nil, nil, api.NewUnavailable("the VM's console is not available (%v): is the VM running?", err)
		}
		hb = &hub{dir: dir, conn: conn, viewers: map[*viewer]struct{}{}}
		h.hubs[dir] = hb
		go h.pump(hb)
	}
	v := &viewer{out: make(chan []byte, viewerBuffer), code: websocket.StatusNormalClosure}
	hb.viewers[v] = struct{}{}
	return hb, v, nil
}

// pump copies the console's output to every viewer until the socket ends
// (the VM stopped, or the last viewer left).
func (h *handler) pump(hb *hub) {
	buf := make([]byte, 32<<10)
	for {
		n, err := hb.conn.Read(buf)
		if n > 0 {
			chunk := bytes.Clone(buf[:n])
			h.mu.Lock()
			for v := range hb.viewers {
				select {
				case v.out <- chunk:
				default:
					h.dropLocked(hb, v, websocket.StatusPolicyViolation, "this viewer fell behind the console's output and was dropped")
				}
			}
			h.mu.Unlock()
		}
		if err != nil {
			h.mu.Lock()
			h.closeLocked(hb, websocket.StatusNormalClosure, "the console closed: the VM stopped or restarted")
			h.mu.Unlock()
			return
		}
	}
}

// leave detaches a viewer; the last one to leave closes the socket, which
// QEMU then offers to the next client.
func (h *handler) leave(hb *hub, v *viewer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropLocked(hb, v, websocket.StatusNormalClosure, "")
	if len(hb.viewers) == 0 {
		h.closeLocked(hb, websocket.StatusNormalClosure, "")
	}
}

func (h *handler) dropLocked(hb *hub, v *viewer, code websocket.StatusCode, reason string) {
	if _, ok := hb.viewers[v]; !ok {
		return
	}
	delete(hb.viewers, v)
	v.code, v.reason = code, reason
	close(v.out)
}

func (h *handler) closeLocked(hb *hub, code websocket.StatusCode, reason string) {
	if hb.closed {
		return
	}
	hb.closed = true
	for v := range hb.viewers {
		h.dropLocked(hb, v, code, reason)
	}
	if h.hubs[hb.dir] == hb {
		delete(h.hubs, hb.dir)
	}
	hb.conn.Close()
}
