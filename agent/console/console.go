// Package console serves the serial consoles and console logs of the VMs
// on one host, for the control plane to proxy to people. The agent mounts
// Handler on its own HTTPS listener (ServerTLS): only a server holding a
// client certificate from the cluster CA, with the common name
// ServerCommonName, may connect, and the server in turn pins the agent's
// self-signed certificate (LoadOrCreateCert) by the fingerprint the agent
// publishes in its Host's status. Authorization of people (tenants, roles)
// is the server's job; the agent trusts the server.
//
// The console log is the file QEMU writes everything the guest prints on
// its serial port to (compute.ConsoleLog); the console is QEMU's serial
// chardev socket (compute.ConsoleSocket), bridged to a websocket.
package console

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/compute"
)

// Resolver finds the runtime directory of the VM with this uid on this host.
type Resolver func(uid string) (dir string, ok bool)

// followPoll is how often a followed log is checked for new output, and
// for its VM going away. A quarter second feels live to a person and costs
// nothing.
const followPoll = 250 * time.Millisecond

// Handler serves, for the VM with metadata.uid UID:
//
//	GET /v1/vms/{uid}/log[?follow=1][&tail=BYTES]
//	GET /v1/vms/{uid}/console (a websocket)
//
// The log is the whole console log, or its last BYTES bytes with tail; a
// VM that has written nothing yet has an empty log. With follow, new output
// streams until the client goes or the VM's directory does; a log that
// QEMU truncates or replaces (the VM restarted) is followed from its new
// beginning.
//
// The console carries the serial port's bytes in binary messages both
// ways. QEMU's socket chardev serves one client at a time, so the agent is
// that one client and shares it: every viewer attached to a VM sees all of
// its output from the moment they attach, and what any viewer types goes to
// the guest (like a shared screen session, which is what someone helping
// someone else wants). The agent holds the socket only while someone is
// attached. A viewer that cannot keep up is dropped rather than slowing the
// others; when the VM stops, every viewer's websocket closes normally.
//
// Errors are api.Status JSON, which the server passes on.
func Handler(resolve Resolver) http.Handler {
	h := &handler{resolve: resolve, hubs: map[string]*hub{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/vms/{uid}/log", h.serveLog)
	mux.HandleFunc("GET /v1/vms/{uid}/console", h.serveConsole)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &api.Status{Kind: "Status", Code: http.StatusNotFound, Reason: api.ReasonNotFound,
			Message: "no such agent endpoint: " + r.Method + " " + r.URL.Path})
	})
	return mux
}

type handler struct {
	resolve Resolver

	mu sync.Mutex
	// hubs are the consoles someone is attached to, by runtime directory.
	hubs map[string]*hub
}

// writeError answers with err as an api.Status, which the server passes on.
func writeError(w http.ResponseWriter, err error) {
	var st *api.Status
	if !errors.As(err, &st) {
		st = api.NewInternal("%v", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(st.Code)
	_ = json.NewEncoder(w).Encode(st)
}

// vmDir resolves the request's VM, answering 404 when it is not here.
func (h *handler) vmDir(w http.ResponseWriter, r *http.Request) (uid, dir string, ok bool) {
	uid = r.PathValue("uid")
	dir, ok = h.resolve(uid)
	if !ok {
		writeError(w, &api.Status{Kind: "Status", Code: http.StatusNotFound, Reason: api.ReasonNotFound,
			Message: "no VM with uid " + uid + " on this host: the agent has not set it up yet, or it was deleted"})
	}
	return uid, dir, ok
}

// ParseTail reads a tail parameter: absent means the whole log (-1),
// otherwise a number of bytes, at least 0. The server and the agent read
// it alike.
func ParseTail(s string) (int64, error) {
	if s == "" {
		return -1, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, api.NewBadRequest("tail=%q: want a number of bytes, 0 or more", s)
	}
	return n, nil
}

// ParseFollow reads a follow parameter.
func ParseFollow(s string) (bool, error) {
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, api.NewBadRequest("follow=%q: want 1, true, 0 or false", s)
	}
	return b, nil
}

func (h *handler) serveLog(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	follow, err := ParseFollow(q.Get("follow"))
	if err != nil {
		writeError(w, err)
		return
	}
	tail, err := ParseTail(q.Get("tail"))
	if err != nil {
		writeError(w, err)
		return
	}
	uid, dir, ok := h.vmDir(w, r)
	if !ok {
		return
	}
	t := &logTail{path: filepath.Join(dir, compute.ConsoleLog)}
	defer t.close()
	if err := t.open(tail); err != nil {
		writeError(w, api.NewInternal("console log of VM %s: %v", uid, err))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := t.copyTo(w); err != nil || !follow {
		return
	}
	_ = rc.Flush()
	tick := time.NewTicker(followPoll)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
		gone := false
		if d, ok := h.resolve(uid); !ok || d != dir {
			gone = true
		} else if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			gone = true
		}
		if err := t.reopenIfReplaced(); err != nil {
			return
		}
		if err := t.copyTo(w); err != nil {
			return
		}
		_ = rc.Flush()
		if gone {
			return
		}
	}
}

// logTail reads a log file from an offset on, following truncation and
// replacement.
type logTail struct {
	path string
	f    *os.File // nil while the file does not exist
}

// open opens the log positioned tail bytes before its end (tail < 0: at
// its start). A missing log is an empty one.
func (t *logTail) open(tail int64) error {
	f, err := os.Open(t.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if tail >= 0 {
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		if off := fi.Size() - tail; off > 0 {
			if _, err := f.Seek(off, io.SeekStart); err != nil {
				f.Close()
				return err
			}
		}
	}
	t.f = f
	return nil
}

// reopenIfReplaced notices a log that appeared, was replaced (a new file at
// the path) or was truncated (QEMU opens it afresh on every start), and
// moves to the new beginning. What the old file still held is read first.
func (t *logTail) reopenIfReplaced() error {
	fi, err := os.Stat(t.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // keep reading what is open, if anything
	}
	if err != nil {
		return err
	}
	if t.f == nil {
		return t.open(-1)
	}
	cur, err := t.f.Stat()
	if err != nil {
		return err
	}
	if !os.SameFile(fi, cur) {
		t.close()
		return t.open(-1)
	}
	off, err := t.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if cur.Size() < off {
		_, err = t.f.Seek(0, io.SeekStart)
	}
	return err
}

// copyTo writes what the log holds past the current offset.
func (t *logTail) copyTo(w io.Writer) error {
	if t.f == nil {
		return nil
	}
	_, err := io.Copy(w, t.f)
	return err
}

func (t *logTail) close() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
}
