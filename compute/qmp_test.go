package compute

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// fakeQMP serves one QMP client on a unix socket: it greets (unless
// silent), then answers commands, sending an event before each reply.
func fakeQMP(t *testing.T, silent bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		if silent {
			time.Sleep(5 * time.Second)
			return
		}
		enc := json.NewEncoder(conn)
		enc.Encode(map[string]any{"QMP": map[string]any{"version": map[string]any{}, "capabilities": []string{}}})
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			var req struct {
				Execute string          `json:"execute"`
				ID      json.RawMessage `json:"id"`
			}
			if json.Unmarshal(sc.Bytes(), &req) != nil {
				return
			}
			enc.Encode(map[string]any{"event": "RTC_CHANGE", "data": map[string]any{}})
			switch req.Execute {
			case "qmp_capabilities":
				enc.Encode(map[string]any{"return": map[string]any{}, "id": req.ID})
			case "query-status":
				// A stale reply with another id comes first.
				enc.Encode(map[string]any{"return": map[string]any{"status": "wrong"}, "id": "other"})
				enc.Encode(map[string]any{"return": map[string]any{"status": "paused", "running": false}, "id": req.ID})
			default:
				enc.Encode(map[string]any{"error": map[string]any{"class": "CommandNotFound", "desc": "The command " + req.Execute + " has not been found"}, "id": req.ID})
			}
		}
	}()
	return path
}

func TestQMPClient(t *testing.T) {
	path := fakeQMP(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialQMP(ctx, path)
	if err != nil {
		t.Fatalf("DialQMP: %v", err)
	}
	defer c.Close()
	var st qmpStatus
	if err := c.Execute(ctx, "query-status", nil, &st); err != nil {
		t.Fatalf("query-status: %v", err)
	}
	if st.Status != "paused" || st.Running {
		t.Errorf("query-status = %+v", st)
	}
	err = c.Execute(ctx, "nope", map[string]any{"x": 1}, nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("unknown command: %v, want a CommandNotFound QMPError", err)
	}
}

// TestQMPBusy: when QEMU does not greet (another client holds the
// socket), the handshake ends with the context.
func TestQMPBusy(t *testing.T) {
	path := fakeQMP(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err := DialQMP(ctx, path)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("DialQMP to a silent server = %v, want deadline exceeded", err)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("DialQMP took %v", took)
	}
}
