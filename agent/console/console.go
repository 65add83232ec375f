// Package console serves the serial consoles and console logs of the VMs
// on one host, for the control plane to proxy to people. The agent mounts
// Handler on its own HTTPS listener (ServerTLS): only a server holding a
// client certificate from the cluster CA, with the common name
// pki.ServerCommonName, may connect, and the server in turn pins the agent's
// self-signed certificate (LoadOrCreateCert) by the fingerprint the agent
// publishes in its Host's status. Authorization of people (tenants, roles)
// is the server's job; the agent trusts the server.
//
// The console log is the file QEMU writes everything the guest prints on
// its serial port to (compute.ConsoleLog), capped by the agent with
// RotateLog; the console is QEMU's serial chardev socket
// (compute.ConsoleSocket), bridged to a websocket.
package console

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/serving"
)

// Resolver finds the runtime directory of the VM with this uid on this host.
type Resolver func(uid string) (dir string, ok bool)

// followPoll is how often a followed log is checked for new output, and
// for its VM going away. A quarter second feels live to a person and costs
// nothing.
const followPoll = 250 * time.Millisecond

// Handler serves, for the VM with metadata.uid UID:
//
//	GET /v1/vms/{uid}/log[?follow=1][&tail=BYTES|&tailLines=LINES]
//	GET /v1/vms/{uid}/console (a websocket)
//
// The log is compute.ConsoleLogPrevious (what the agent kept when it last
// capped the log, see RotateLog) followed by compute.ConsoleLog, or the
// last BYTES bytes or LINES lines of the two with tail or tailLines (not
// both); a VM that has written nothing yet
// has an empty log. With follow, new output streams until the client goes
// or the VM's directory does. A rotation while someone follows loses
// nothing for them (beyond what RotateLog itself may lose); a log that is
// truncated or replaced otherwise is followed from its new beginning.
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

func (h *handler) serveLog(w http.ResponseWriter, r *http.Request) {
	o, err := api.ParseLogOptions(r.URL.Query())
	if err != nil {
		writeError(w, err)
		return
	}
	uid, dir, ok := h.vmDir(w, r)
	if !ok {
		return
	}
	t := newLogTail(dir)
	defer t.close()
	if err := t.open(orNone(o.TailBytes), orNone(o.TailLines)); err != nil {
		writeError(w, api.NewInternal("console log of VM %s: %v", uid, err))
		return
	}
	// A log (followed or long) takes as long as its reader wants, while
	// each write goes through within writeTimeout.
	w = serving.For(w, writeTimeout).Stream(w)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := t.copyTo(w); err != nil || !o.Follow {
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
		if err := t.copyTo(w); err != nil {
			return
		}
		_ = rc.Flush()
		if gone {
			return
		}
	}
}

// orNone is n, or -1 for no limit.
func orNone(n *int64) int64 {
	if n == nil {
		return -1
	}
	return *n
}

// logTail reads a VM's console log as one stream: compute.ConsoleLogPrevious
// (what the agent kept at the last rotation, see RotateLog) followed by
// compute.ConsoleLog, from an offset on. It follows rotation, truncation and
// replacement of the log.
//
// A rotation copies the log to the kept file and empties it, so the kept
// file begins with what was already sent from the log: the rest is sent
// from the kept file at the log's offset, and the log is read again from
// its start. What is read from the log is sent only once it is known that
// no rotation emptied the log meanwhile (otherwise the bytes at that
// offset may be new output); the read is then redone from the kept file.
// Should the log have been rotated twice since the last look (a follower
// too slow to take the output), the kept file is sent whole: what the
// first of those rotations kept is gone, and the stream jumps over it.
type logTail struct {
	dir, path, prevPath string
	// f is the log, nil while it does not exist; off is how much of it
	// was sent.
	f   *os.File
	off int64
	// prev is the kept log as last seen, nil while there is none. It stays
	// open so that its identity cannot pass to a file made later, which is
	// how a rotation by anyone else is noticed.
	prev *os.File
	// sendPrev says prev has bytes to send from prevOff, before f's.
	sendPrev bool
	prevOff  int64
	// count is RotateLog's count of rotations of dir when last looked.
	count uint64
	buf   []byte
}

func newLogTail(dir string) *logTail {
	return &logTail{dir: dir, path: filepath.Join(dir, compute.ConsoleLog),
		prevPath: filepath.Join(dir, compute.ConsoleLogPrevious)}
}

// openOptional opens path; a missing file is a nil one.
func openOptional(path string) (*os.File, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return f, err
}

// statOptional stats path; a missing file is a nil FileInfo.
func statOptional(path string) (fs.FileInfo, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return fi, err
}

// is reports whether fi (nil: no file) is the open file f (nil: none).
func is(fi fs.FileInfo, f *os.File) bool {
	if fi == nil || f == nil {
		return fi == nil && f == nil
	}
	cur, err := f.Stat()
	return err == nil && os.SameFile(fi, cur)
}

func fileSize(f *os.File) (int64, error) {
	if f == nil {
		return 0, nil
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// open opens both files, positioned tail bytes, or the start of the last
// lines lines, before the end of the two together (both < 0: at the start
// of the kept one). Missing files are empty ones.
func (t *logTail) open(tail, lines int64) error {
	t.close()
	var size, prevSize int64
	err := func() error {
		rotation.RLock()
		defer rotation.RUnlock()
		t.count = rotation.count[t.dir]
		var err error
		if t.prev, err = openOptional(t.prevPath); err != nil {
			return err
		}
		if t.f, err = openOptional(t.path); err != nil {
			return err
		}
		if size, err = fileSize(t.f); err != nil {
			return err
		}
		if prevSize, err = fileSize(t.prev); err != nil {
			return err
		}
		// Counted under the rotation's lock, so the two files are the
		// log as it was at one moment.
		if lines >= 0 {
			tail, err = linesTail(t.prev, prevSize, t.f, size, lines)
		}
		return err
	}()
	if err != nil {
		return err
	}
	t.off, t.prevOff = 0, 0
	switch {
	case tail < 0:
	case tail <= size:
		t.off, t.prevOff = size-tail, prevSize
	default:
		t.prevOff = max(0, prevSize-(tail-size))
	}
	t.sendPrev = t.prev != nil && t.prevOff < prevSize
	return nil
}

// look notes, under the rotation's read lock, what happened to the files
// since the last look, and returns the log's size and the rotation count.
// restarted reports that the log is read from a new start.
func (t *logTail) look() (size int64, count uint64, restarted bool, err error) {
	rotation.RLock()
	defer rotation.RUnlock()
	count = rotation.count[t.dir]
	fi, err := statOptional(t.path)
	if err != nil {
		return 0, 0, false, err
	}
	pfi, err := statOptional(t.prevPath)
	if err != nil {
		return 0, 0, false, err
	}
	if count != t.count || (pfi != nil && !is(pfi, t.prev)) {
		prev, err := openOptional(t.prevPath)
		if err != nil {
			return 0, 0, false, err
		}
		if prev != nil {
			psize, err := fileSize(prev)
			if err != nil {
				prev.Close()
				return 0, 0, false, err
			}
			if t.prev != nil {
				t.prev.Close()
			}
			t.prev, t.prevOff, t.sendPrev = prev, 0, true
			if count-t.count <= 1 && t.off <= psize {
				t.prevOff = t.off
			}
		}
		t.off, restarted = 0, true
	}
	t.count = count
	switch {
	case fi == nil:
		// Keep reading what is open, if anything.
	case !is(fi, t.f):
		if t.f != nil {
			t.f.Close()
		}
		if t.f, err = openOptional(t.path); err != nil {
			return 0, 0, false, err
		}
		t.off, restarted = 0, true
	case fi.Size() < t.off:
		// Truncated by someone else.
		t.off, restarted = 0, true
	}
	size, err = fileSize(t.f)
	return size, count, restarted, err
}

// flushPrev sends what is due from the kept file, which nobody writes.
func (t *logTail) flushPrev(w io.Writer) error {
	if !t.sendPrev {
		return nil
	}
	t.sendPrev = false
	_, err := io.Copy(w, io.NewSectionReader(t.prev, t.prevOff, 1<<62))
	return err
}

// copyTo sends what the log holds past what was sent, up to its end as it
// is now.
func (t *logTail) copyTo(w io.Writer) error {
	if t.buf == nil {
		t.buf = make([]byte, 64<<10)
	}
	end := int64(-1)
	for {
		if err := t.flushPrev(w); err != nil {
			return err
		}
		size, count, restarted, err := t.look()
		if err != nil {
			return err
		}
		if err := t.flushPrev(w); err != nil {
			return err
		}
		if end < 0 || restarted {
			end = size
		}
		end = min(end, size)
		if t.f == nil || t.off >= end {
			return nil
		}
		n, rerr := t.f.ReadAt(t.buf[:min(int64(len(t.buf)), end-t.off)], t.off)
		rotation.RLock()
		same := rotation.count[t.dir] == count
		rotation.RUnlock()
		if !same {
			continue // rotated meanwhile: look again
		}
		if n > 0 {
			if _, err := w.Write(t.buf[:n]); err != nil {
				return err
			}
			t.off += int64(n)
		}
		if errors.Is(rerr, io.EOF) {
			return nil // truncated meanwhile: the next look tells
		}
		if rerr != nil {
			return rerr
		}
	}
}

func (t *logTail) close() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
	if t.prev != nil {
		t.prev.Close()
		t.prev = nil
	}
	t.sendPrev = false
}
