package tftp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// errGaveUp means the client stopped acknowledging.
var errGaveUp = errors.New("client stopped answering")

// clientError is an ERROR packet the client sent to end the transfer.
type clientError struct {
	code errorCode
	msg  string
}

func (e *clientError) Error() string {
	return fmt.Sprintf("client aborted the transfer with error %d %q", e.code, e.msg)
}

// transfer sends one file to one client over the transfer's own socket.
//
// Blocks are numbered from 1 with int64 internally and sent as the low 16
// bits, so block 65535 is followed by block 0 on the wire (the rollover
// tftp-hpa, atftp and iPXE expect). Up to windowSize blocks are in flight
// (RFC 7440; 1 is classic lockstep). The blocks in flight are kept in a ring
// so a retransmission never re-reads the source: that is what makes
// netascii (whose offsets do not map to the file's) and non-seekable
// sources work.
type transfer struct {
	conn    net.PacketConn
	peer    net.Addr
	src     io.Reader
	p       params
	retries int

	ring    [][]byte // window slots: 4-byte DATA header + up to blockSize bytes
	loaded  int64    // highest block read into the ring
	final   int64    // number of the last (short) block; 0 until it is read
	bytes   int64    // data bytes read into blocks so far
	sendErr error    // the last failure to send, if any
	rbuf    []byte
}

func newTransfer(conn net.PacketConn, peer net.Addr, src io.Reader, p params, retries int) *transfer {
	t := &transfer{conn: conn, peer: peer, src: src, p: p, retries: retries, rbuf: make([]byte, 1024)}
	t.ring = make([][]byte, p.windowSize)
	for i := range t.ring {
		t.ring[i] = make([]byte, 4+p.blockSize)
	}
	return t
}

// run sends the OACK if options were accepted, then the file, and returns
// when the client has acknowledged the last block. It returns the number of
// data bytes delivered (or sent so far, on error).
func (t *transfer) run() (int64, error) {
	if len(t.p.oack) > 0 {
		if err := t.handshake(); err != nil {
			return 0, err
		}
	}
	var (
		acked int64     // highest block the client acknowledged
		next  int64 = 1 // next block to put on the wire
		tries int       // retransmissions since the last progress
	)
	for {
		for next <= acked+int64(t.p.windowSize) && (t.final == 0 || next <= t.final) {
			pkt, err := t.block(next)
			if err != nil {
				t.send(errorPacket(errNotDefined, "read error"))
				return t.bytes, fmt.Errorf("read block %d: %w", next, err)
			}
			if err := t.send(pkt); errors.Is(err, net.ErrClosed) {
				return t.bytes, err
			}
			next++
		}
		ack, err := t.awaitACK(acked, next-1)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if tries++; tries > t.retries {
				return t.bytes, fmt.Errorf("%w: no acknowledgement of block %d after %d retransmissions%s", errGaveUp, acked+1, t.retries, t.lastSendError())
			}
			// Resend everything in flight (the whole window, RFC 7440).
			next = acked + 1
			continue
		}
		if err != nil {
			return t.bytes, err
		}
		acked, tries = ack, 0
		if acked == t.final {
			return t.bytes, nil
		}
		// An ACK short of the last block sent means the client lost or
		// reordered the rest of the window: RFC 7440 has the sender start
		// a new window right after the acknowledged block.
		next = acked + 1
	}
}

// handshake sends the OACK and waits for ACK 0, which starts the data.
func (t *transfer) handshake() error {
	oack := oackPacket(t.p.oack)
	for tries := 0; ; tries++ {
		if err := t.send(oack); errors.Is(err, net.ErrClosed) {
			return err
		}
		// ACK 0 is "block 0 of 0 outstanding after block -1".
		_, err := t.awaitACK(-1, 0)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		if tries >= t.retries {
			return fmt.Errorf("%w: no acknowledgement of the OACK after %d retransmissions%s", errGaveUp, t.retries, t.lastSendError())
		}
	}
}

// block returns the DATA packet for block n, reading it from the source the
// first time. n is at most one past the highest block read, and the slot it
// reuses held a block at least windowSize older, already acknowledged.
func (t *transfer) block(n int64) ([]byte, error) {
	i := n % int64(len(t.ring))
	if n <= t.loaded {
		return t.ring[i], nil
	}
	slot := t.ring[i][:cap(t.ring[i])]
	k, err := io.ReadFull(t.src, slot[4:])
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		t.final = n
	case err != nil:
		return nil, err
	}
	binary.BigEndian.PutUint16(slot, opDATA)
	binary.BigEndian.PutUint16(slot[2:], uint16(n))
	t.ring[i] = slot[:4+k]
	t.loaded = n
	t.bytes += int64(k)
	return t.ring[i], nil
}

// send puts one packet on the wire. A failure other than a closed socket
// (ENOBUFS under load, a firewall's EPERM) is treated like a lost packet:
// the retransmission timer recovers, and if it never does, the error ends up
// in the give-up message.
func (t *transfer) send(pkt []byte) error {
	_, err := t.conn.WriteTo(pkt, t.peer)
	if err != nil {
		t.sendErr = fmt.Errorf("send to %s: %w", t.peer, err)
	}
	return err
}

func (t *transfer) lastSendError() string {
	if t.sendErr == nil {
		return ""
	}
	return fmt.Sprintf(" (last send failed: %v)", t.sendErr)
}

// awaitACK waits up to the retransmission timeout for an ACK of a block in
// (acked, sent] and returns that block's number, or os.ErrDeadlineExceeded.
//
// An ACK of a block at or below acked — a duplicate, or one delayed past a
// retransmission — is ignored without resending anything and without
// restarting the timer. Answering duplicates with data is the Sorcerer's
// Apprentice bug (RFC 1123 4.2.3.1): every duplicate would double the
// traffic for the rest of the transfer.
func (t *transfer) awaitACK(acked, sent int64) (int64, error) {
	if err := t.conn.SetReadDeadline(time.Now().Add(t.p.timeout)); err != nil {
		return 0, err
	}
	for {
		n, from, err := t.conn.ReadFrom(t.rbuf)
		if err != nil {
			return 0, err
		}
		if !sameAddr(from, t.peer) {
			// Someone else's packet (RFC 1350: "unknown transfer ID"); it
			// does not disturb this transfer.
			t.conn.WriteTo(errorPacket(errUnknownTID, "unknown transfer ID"), from)
			continue
		}
		pkt := t.rbuf[:n]
		if len(pkt) < 4 {
			continue
		}
		switch binary.BigEndian.Uint16(pkt) {
		case opACK:
			// The 16-bit block number is resolved against acked, which
			// handles rollover: it can only be ahead by up to a window.
			ahead := int64(binary.BigEndian.Uint16(pkt[2:]) - uint16(acked))
			if ahead >= 1 && ahead <= sent-acked {
				return acked + ahead, nil
			}
		case opERROR:
			code, msg := parseError(pkt)
			return 0, &clientError{code: code, msg: msg}
		}
		// Anything else from the client (a stray RRQ, DATA) is ignored.
	}
}

func sameAddr(a, b net.Addr) bool {
	ua, ok1 := a.(*net.UDPAddr)
	ub, ok2 := b.(*net.UDPAddr)
	if ok1 && ok2 {
		return addrPort(ua) == addrPort(ub)
	}
	return a.String() == b.String()
}
