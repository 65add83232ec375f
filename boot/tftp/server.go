// Package tftp is Hearth's read-only TFTP server: the first hop of a network
// boot, which hands firmware the iPXE binaries from the distribution's ipxe
// package and whatever per-machine files the boot service generates.
//
// It speaks RFC 1350 with the option extension (RFC 2347) and the options
// boot ROMs and Linux clients use: blksize (RFC 2348), tsize and timeout
// (RFC 2349) and windowsize (RFC 7440). Transfers are octet or netascii
// (converted on the fly). Uploads are refused: nothing a client sends can
// change the server's files.
//
// Each transfer runs in its own goroutine on its own ephemeral UDP socket,
// as RFC 1350 prescribes, so the listening socket only ever sees requests.
// Every request, completion and failure is reported through Server.Observe
// for the machine's boot timeline.
package tftp

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Defaults for the zero Server fields.
const (
	DefaultTimeout = time.Second
	DefaultRetries = 5
)

// maxTransfers bounds the transfers running at once on one listening
// socket, and with maxWindowBytes the memory a flood of requests can take.
// A provisioning network booting a rack at once needs a few dozen.
const maxTransfers = 1024

// Server answers TFTP read requests with files from Resolver. Its zero value
// is not usable: Resolver must be set. A Server may serve several
// connections at once.
type Server struct {
	// Resolver opens the files clients ask for: DirResolver, Files, or the
	// boot service's own per-machine resolver.
	Resolver Resolver

	// Observe, if set, is told about every request and how it ended. It is
	// called synchronously from transfer goroutines, concurrently, so it
	// should be quick and safe for concurrent use.
	Observe func(Event)

	// Timeout is how long to wait for an acknowledgement before sending
	// again (DefaultTimeout if zero). A client's timeout option overrides
	// it for its transfer.
	Timeout time.Duration

	// Retries is how many times a packet is sent again before the transfer
	// is abandoned (DefaultRetries if zero; negative means never).
	Retries int

	// listenTransfer opens a transfer's socket next to the listening one;
	// tests replace it to lose or duplicate packets.
	listenTransfer func(local net.Addr) (net.PacketConn, error)
}

// EventKind says what an Event reports.
type EventKind string

const (
	// EventRequest: a read or write request arrived.
	EventRequest EventKind = "request"
	// EventCompleted: the client acknowledged the whole file.
	EventCompleted EventKind = "completed"
	// EventError: the request was refused or the transfer failed; Err says
	// why.
	EventError EventKind = "error"
)

// Event is one step of a TFTP exchange, for the boot timeline.
type Event struct {
	Kind   EventKind
	Time   time.Time
	Client netip.AddrPort
	Path   string // the file name exactly as the client sent it
	Mode   string // "octet" or "netascii" (lower-cased, as requested)

	// Set once the file is open and options are negotiated.
	Size       int64 // as the resolver reported it; -1 if unknown
	BlockSize  int
	WindowSize int

	Bytes    int64         // file data sent: all of it on EventCompleted
	Duration time.Duration // since the request arrived
	Err      error         // EventError only
}

// ListenAndServe listens on the UDP address addr (":69" if empty) and serves
// until ctx is cancelled.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	if addr == "" {
		addr = ":69"
	}
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("tftp: %w", err)
	}
	defer conn.Close()
	return s.Serve(ctx, conn)
}

// Serve answers the requests arriving on conn until ctx is cancelled, then
// aborts the transfers in progress (telling their clients), waits for them
// and returns nil. It does not close conn. A request repeated by a client
// whose transfer is still running (same address and port) is ignored: the
// running transfer retransmits by itself, and a second one would only be
// refused by the client with "unknown transfer ID".
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	if s.Resolver == nil {
		return errors.New("tftp: Server.Resolver is nil")
	}
	ctx, cancel := context.WithCancel(ctx)
	var transfers sync.WaitGroup
	defer transfers.Wait()
	defer cancel()
	// Unblock ReadFrom on cancellation without closing the caller's conn.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()

	var mu sync.Mutex
	active := map[string]bool{} // client addresses with a transfer running
	buf := make([]byte, 65536)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tftp: read request on %s: %w", conn.LocalAddr(), err)
		}
		received := time.Now()
		req, err := parseRequest(buf[:n])
		if err != nil {
			if n >= 2 && binary.BigEndian.Uint16(buf) == opERROR {
				continue // never answer an error with an error
			}
			conn.WriteTo(errorPacket(errIllegalOp, err.Error()), from)
			s.observe(Event{Kind: EventError, Time: received, Client: clientAddr(from), Err: err})
			continue
		}
		key := from.String()
		mu.Lock()
		duplicate, busy := active[key], len(active) >= maxTransfers
		if !duplicate && !busy {
			active[key] = true
		}
		mu.Unlock()
		if duplicate {
			continue
		}
		if busy {
			conn.WriteTo(errorPacket(errNotDefined, "server busy, try again later"), from)
			s.observe(Event{Kind: EventError, Time: received, Client: clientAddr(from), Path: req.filename, Mode: req.mode,
				Err: fmt.Errorf("request for %q refused: %d transfers already running", req.filename, maxTransfers)})
			continue
		}
		transfers.Go(func() {
			defer func() {
				mu.Lock()
				delete(active, key)
				mu.Unlock()
			}()
			s.handle(ctx, conn.LocalAddr(), req, from, received)
		})
	}
}

// handle answers one request from its own socket.
func (s *Server) handle(ctx context.Context, local net.Addr, req *request, from net.Addr, start time.Time) {
	ev := Event{Client: clientAddr(from), Path: req.filename, Mode: req.mode, Size: -1}
	s.observeAs(EventRequest, ev, start, nil)

	listen := s.listenTransfer
	if listen == nil {
		listen = listenNextTo
	}
	conn, err := listen(local)
	if err != nil {
		s.observeAs(EventError, ev, start, fmt.Errorf("open transfer socket: %w", err))
		return
	}
	defer conn.Close()
	refuse := func(code errorCode, msg string, err error) {
		conn.WriteTo(errorPacket(code, msg), from)
		s.observeAs(EventError, ev, start, err)
	}

	if req.op == opWRQ {
		refuse(errAccessViolation, "read-only server: uploads are refused",
			fmt.Errorf("upload of %q refused: the server is read-only", req.filename))
		return
	}
	var netascii bool
	switch req.mode {
	case "octet":
	case "netascii":
		netascii = true
	default:
		refuse(errIllegalOp, fmt.Sprintf("unsupported transfer mode %q; use octet", req.mode),
			fmt.Errorf("request for %q: unsupported transfer mode %q", req.filename, req.mode))
		return
	}
	name, err := cleanPath(req.filename)
	if err != nil {
		refuse(errAccessViolation, "access violation", err)
		return
	}
	f, size, err := s.Resolver(ctx, name, ev.Client)
	if err != nil {
		code, msg := errorFor(err)
		refuse(code, msg, fmt.Errorf("open %q: %w", name, err))
		return
	}
	defer f.Close()

	var src io.Reader = f
	if netascii {
		src, size = newNetasciiReader(f), -1
	}
	p := negotiate(req.options, size, cmp.Or(s.Timeout, DefaultTimeout))
	ev.Size, ev.BlockSize, ev.WindowSize = size, p.blockSize, p.windowSize
	t := newTransfer(conn, from, src, p, cmp.Or(s.Retries, DefaultRetries))

	abort := context.AfterFunc(ctx, func() {
		conn.WriteTo(errorPacket(errNotDefined, "server shutting down"), from)
		conn.Close()
	})
	defer abort()
	ev.Bytes, err = t.run()
	switch {
	case err == nil:
		s.observeAs(EventCompleted, ev, start, nil)
	case ctx.Err() != nil:
		s.observeAs(EventError, ev, start, fmt.Errorf("transfer of %q aborted: %w", name, context.Cause(ctx)))
	default:
		s.observeAs(EventError, ev, start, fmt.Errorf("transfer of %q: %w", name, err))
	}
}

// errorFor maps a resolver's error to what the client is told. Details stay
// in the Event: the client learns only which of the three cases it hit.
func errorFor(err error) (errorCode, string) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errFileNotFound, "file not found"
	case errors.Is(err, ErrAccess), errors.Is(err, fs.ErrPermission):
		return errAccessViolation, "access violation"
	default:
		return errNotDefined, "cannot open file"
	}
}

func (s *Server) observeAs(kind EventKind, ev Event, start time.Time, err error) {
	ev.Kind, ev.Time, ev.Err = kind, time.Now(), err
	if kind != EventRequest {
		ev.Duration = ev.Time.Sub(start)
	}
	s.observe(ev)
}

func (s *Server) observe(ev Event) {
	if s.Observe != nil {
		s.Observe(ev)
	}
}

// listenNextTo opens a transfer socket on the listening socket's IP address
// and a port the kernel picks. When the server listens on a wildcard
// address, the kernel's route to the client chooses the source address,
// which on a provisioning network is the one the request arrived on.
func listenNextTo(local net.Addr) (net.PacketConn, error) {
	laddr := &net.UDPAddr{}
	if u, ok := local.(*net.UDPAddr); ok {
		laddr.IP, laddr.Zone = u.IP, u.Zone
	}
	return net.ListenUDP("udp", laddr)
}

func clientAddr(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		return addrPort(u)
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func addrPort(u *net.UDPAddr) netip.AddrPort {
	ap := u.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
