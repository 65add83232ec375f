package tftp

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// startServer serves s on 127.0.0.1 with a kernel-chosen port until the test
// ends, and returns the address.
func startServer(t testing.TB, s *Server) *net.UDPAddr {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		conn.Close()
	})
	return conn.LocalAddr().(*net.UDPAddr)
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	rand.NewChaCha8(s).Read(b)
	return b
}

// writeFiles creates files (name → content) under a new temporary root.
func writeFiles(t testing.TB, files map[string][]byte) string {
	t.Helper()
	root := t.TempDir()
	for name, data := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// recorder collects the server's events.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) observe(ev Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

// last waits briefly for an event of kind other than EventRequest (the
// server reports the end of a transfer after the client has its last
// packet) and returns it.
func (r *recorder) last(t testing.TB) Event {
	t.Helper()
	for range 1000 {
		r.mu.Lock()
		if n := len(r.events); n > 0 && r.events[n-1].Kind != EventRequest {
			ev := r.events[n-1]
			r.mu.Unlock()
			return ev
		}
		r.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no completion or error event; got %+v", r.events)
	return Event{}
}

// fetchOptions shape the test client's request and behaviour.
type fetchOptions struct {
	op      uint16 // opRRQ unless set
	mode    string // "octet" unless set
	options []option
	dupACKs bool          // send every ACK twice
	dally   time.Duration // after the last block, stay this long to re-ACK it
	wait    time.Duration // give up after this much silence (default 2s)
}

// fetchResult is what the test client saw.
type fetchResult struct {
	data     []byte
	complete bool     // the last (short) block arrived
	oack     []option // nil if the server sent none
	packets  int      // DATA packets received, duplicates included
	dups     int      // DATA packets for blocks already received
	err      *clientError
	tids     map[string]bool // server ports DATA or OACK came from
}

// fetch is a small RFC-following TFTP client for tests: it rolls over block
// numbers, re-acknowledges a duplicate of the latest block (as tftp-hpa
// does), and in a window acknowledges after windowsize blocks or, once per
// gap, the last block received in order (RFC 7440).
func fetch(t testing.TB, server *net.UDPAddr, name string, o fetchOptions) fetchResult {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := &request{op: opRRQ, filename: name, mode: "octet", options: o.options}
	if o.op != 0 {
		req.op = o.op
	}
	if o.mode != "" {
		req.mode = o.mode
	}
	if _, err := conn.WriteTo(req.marshal(), server); err != nil {
		t.Fatal(err)
	}
	wait := o.wait
	if wait == 0 {
		wait = 2 * time.Second
	}

	res := fetchResult{tids: map[string]bool{}}
	blockSize, window := 512, 1
	var (
		received   int64 // blocks received in order
		sinceACK   int   // blocks received since the last ACK
		gapAcked   = int64(-1)
		peer       net.Addr
		buf        = make([]byte, 70000)
		ackBuf     = make([]byte, 4)
		sendACK    func(block int64)
		firstSeen  bool
		dallyUntil time.Time
	)
	sendACK = func(block int64) {
		binary.BigEndian.PutUint16(ackBuf, opACK)
		binary.BigEndian.PutUint16(ackBuf[2:], uint16(block))
		for range 1 + boolInt(o.dupACKs) {
			conn.WriteTo(ackBuf, peer)
		}
		sinceACK = 0
	}
	for {
		if dallyUntil.IsZero() {
			conn.SetReadDeadline(time.Now().Add(wait))
		} else {
			conn.SetReadDeadline(dallyUntil)
		}
		n, from, err := conn.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return res
		}
		if err != nil {
			t.Fatal(err)
		}
		pkt := buf[:n]
		if !firstSeen {
			peer, firstSeen = from, true
		}
		res.tids[from.String()] = true
		if from.String() != peer.String() || len(pkt) < 2 {
			continue
		}
		switch binary.BigEndian.Uint16(pkt) {
		case opERROR:
			code, msg := parseError(pkt)
			res.err = &clientError{code: code, msg: msg}
			return res
		case opOACK:
			res.oack = parseOACK(t, pkt[2:])
			for _, opt := range res.oack {
				v, _ := strconv.Atoi(opt.value)
				switch opt.name {
				case "blksize":
					blockSize = v
				case "windowsize":
					window = v
				}
			}
			sendACK(0)
		case opDATA:
			res.packets++
			block := binary.BigEndian.Uint16(pkt[2:])
			switch {
			case !res.complete && block == uint16(received+1):
				received++
				res.data = append(res.data, pkt[4:]...)
				sinceACK++
				if len(pkt)-4 < blockSize {
					sendACK(received)
					res.complete = true
					if o.dally == 0 {
						return res
					}
					// Like a real client, stay to re-acknowledge the last
					// block in case the ACK was lost; this also catches a
					// Sorcerer's Apprentice resend.
					dallyUntil = time.Now().Add(o.dally)
					continue
				}
				if sinceACK >= window {
					sendACK(received)
				}
			case block == uint16(received):
				res.dups++
				sendACK(received) // our ACK may have been lost
			default:
				res.dups++
				if gapAcked != received {
					gapAcked = received
					sendACK(received)
				}
			}
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func parseOACK(t testing.TB, b []byte) []option {
	t.Helper()
	// Reuse the request parser: an OACK body is name NUL value NUL pairs.
	req, err := parseRequest(append([]byte{0, byte(opRRQ), 'x', 0, 'o', 0}, b...))
	if err != nil {
		t.Fatalf("parse OACK: %v", err)
	}
	if req.options == nil {
		return []option{}
	}
	return req.options
}

// lossyConn wraps a transfer socket: packets it reads for which dropIn
// returns true, and packets written for which dropOut returns true, vanish.
type lossyConn struct {
	net.PacketConn
	dropIn, dropOut func(pkt []byte) bool
}

func (c *lossyConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.PacketConn.ReadFrom(b)
		if err != nil || c.dropIn == nil || !c.dropIn(b[:n]) {
			return n, from, err
		}
	}
}

func (c *lossyConn) WriteTo(b []byte, to net.Addr) (int, error) {
	if c.dropOut != nil && c.dropOut(b) {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, to)
}

// dropFirst returns a filter that drops the first packet with opcode op and
// block number block, and nothing else.
func dropFirst(op, block uint16) func([]byte) bool {
	var mu sync.Mutex
	dropped := false
	return func(pkt []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		if dropped || len(pkt) < 4 || binary.BigEndian.Uint16(pkt) != op || binary.BigEndian.Uint16(pkt[2:]) != block {
			return false
		}
		dropped = true
		return true
	}
}
