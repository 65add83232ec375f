package compute

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

// QMPClient speaks the QEMU Machine Protocol over a VM's control socket.
//
// QEMU serves one QMP client per socket at a time: a second client's
// connection is accepted by the kernel but QEMU does not greet it until the
// first one hangs up. The driver therefore dials, runs a few commands and
// closes; anyone else who keeps a QMP connection open to a VM blocks the
// driver (its calls then fail when their context ends).
type QMPClient struct {
	conn net.Conn
	r    *bufio.Reader

	mu     sync.Mutex // serialises Execute
	nextID int
	// oob is whether out-of-band execution is on (dialQMP with oob):
	// QEMU then reads commands on its monitor thread, and runs those
	// that allow it (yank) at once, even while its main loop is stuck.
	oob bool
}

// QMPError is an error QEMU answered to a command.
type QMPError struct {
	Command string
	Class   string
	Desc    string
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// qmpMessage is any message QEMU sends: a greeting, a reply or an event.
type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string          `json:"event"`
	ID    json.RawMessage `json:"id"`
}

// DialQMP connects to the QMP socket at path, reads QEMU's greeting and
// leaves capability negotiation mode, so the client is ready for commands.
// ctx bounds the whole handshake.
func DialQMP(ctx context.Context, path string) (*QMPClient, error) {
	return dialQMP(ctx, path, false)
}

// dialQMP is DialQMP, with out-of-band execution turned on if oob and
// QEMU offers it (ExecuteOOB).
func dialQMP(ctx context.Context, path string, oob bool) (*QMPClient, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: connect %s: %w", path, err)
	}
	c := &QMPClient{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	if err := c.handshake(ctx, oob); err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: %s: %w", path, err)
	}
	return c, nil
}

func (c *QMPClient) handshake(ctx context.Context, oob bool) error {
	stop := c.watch(ctx)
	defer stop()
	var greeting struct {
		Capabilities []string `json:"capabilities"`
	}
	for {
		var m qmpMessage
		if err := c.read(ctx, &m); err != nil {
			return fmt.Errorf("read greeting: %w", err)
		}
		if m.QMP != nil {
			_ = json.Unmarshal(m.QMP, &greeting)
			break
		}
	}
	if oob && slices.Contains(greeting.Capabilities, "oob") {
		if err := c.executeLocked(ctx, "qmp_capabilities", map[string]any{"enable": []string{"oob"}}, nil, false); err != nil {
			return err
		}
		c.oob = true
		return nil
	}
	return c.executeLocked(ctx, "qmp_capabilities", nil, nil, false)
}

// Close hangs up, which lets the next QMP client in.
func (c *QMPClient) Close() error { return c.conn.Close() }

// Execute runs one command with optional arguments and decodes its
// "return" value into result (unless result is nil). Events QEMU sends in
// between are dropped. A context that ends makes the connection unusable.
func (c *QMPClient) Execute(ctx context.Context, command string, args, result any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	stop := c.watch(ctx)
	defer stop()
	return c.executeLocked(ctx, command, args, result, false)
}

// ExecuteOOB is Execute out of band ("exec-oob"), for the few commands
// QEMU allows so (yank): QEMU runs it at once, even while its main loop
// is stuck or earlier commands wait. It fails unless the client was
// dialled with out-of-band execution on and QEMU offered it.
func (c *QMPClient) ExecuteOOB(ctx context.Context, command string, args, result any) error {
	if !c.oob {
		return fmt.Errorf("qmp %s: out-of-band execution is not on", command)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	stop := c.watch(ctx)
	defer stop()
	return c.executeLocked(ctx, command, args, result, true)
}

func (c *QMPClient) executeLocked(ctx context.Context, command string, args, result any, oob bool) error {
	id, err := c.send(ctx, command, args, oob)
	if err != nil {
		return err
	}
	return c.receive(ctx, command, id, result)
}

// send writes one command and returns its id.
func (c *QMPClient) send(ctx context.Context, command string, args any, oob bool) (string, error) {
	c.nextID++
	id := "hearth-" + strconv.Itoa(c.nextID)
	req := struct {
		Execute   string `json:"execute,omitempty"`
		ExecOOB   string `json:"exec-oob,omitempty"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{Arguments: args, ID: id}
	if oob {
		req.ExecOOB = command
	} else {
		req.Execute = command
	}
	b, err := json.Marshal(req)
	if err != nil {
		return "", fmt.Errorf("qmp %s: encode: %w", command, err)
	}
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return "", fmt.Errorf("qmp %s: send: %w", command, ctxErr(ctx, err))
	}
	return id, nil
}

// receive reads until the reply to the command with id, and decodes it
// into result. A context that ends first leaves the reply to come: a
// later receive of the same id may still read it.
func (c *QMPClient) receive(ctx context.Context, command, id string, result any) error {
	for {
		var m qmpMessage
		if err := c.read(ctx, &m); err != nil {
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		if m.Event != "" || m.QMP != nil {
			continue
		}
		var gotID string
		if json.Unmarshal(m.ID, &gotID) != nil || gotID != id {
			// A reply to a command someone abandoned earlier.
			continue
		}
		if m.Error != nil {
			return &QMPError{Command: command, Class: m.Error.Class, Desc: m.Error.Desc}
		}
		if result != nil && m.Return != nil {
			if err := json.Unmarshal(m.Return, result); err != nil {
				return fmt.Errorf("qmp %s: decode reply: %w", command, err)
			}
		}
		return nil
	}
}

func (c *QMPClient) read(ctx context.Context, m *qmpMessage) error {
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read: %w", ctxErr(ctx, err))
	}
	if err := json.Unmarshal(line, m); err != nil {
		return fmt.Errorf("decode %q: %w", truncate(string(line), 200), err)
	}
	return nil
}

// watch applies ctx's deadline to the connection and interrupts blocked
// reads and writes when ctx is cancelled.
func (c *QMPClient) watch(ctx context.Context) (stop func()) {
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(dl)
	} else {
		c.conn.SetDeadline(time.Time{})
	}
	unhook := context.AfterFunc(ctx, func() {
		c.conn.SetDeadline(time.Unix(1, 0))
	})
	return func() { unhook() }
}

// ctxErr reports the context's error in place of the I/O timeout it caused.
func ctxErr(ctx context.Context, err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	// The connection's deadline is ctx's, and may pass a moment before
	// ctx's own timer marks it done.
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
