package tftp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"
)

func TestTransfer(t *testing.T) {
	sizes := []int{0, 1, 511, 512, 513, 3*1428 + 7, 20000}
	files := map[string][]byte{}
	for i, n := range sizes {
		files[fmt.Sprintf("f%d", n)] = randomBytes(n, uint64(i))
	}
	rec := &recorder{}
	addr := startServer(t, &Server{Resolver: DirResolver(writeFiles(t, files)), Observe: rec.observe, Timeout: 10 * time.Second})

	for _, tc := range []struct {
		name string
		opts []option
	}{
		{"lockstep", nil},
		{"blksize 1428", []option{{"blksize", "1428"}}},
		{"windowsize 4", []option{{"windowsize", "4"}}},
		{"blksize 8 windowsize 3", []option{{"blksize", "8"}, {"windowsize", "3"}}},
		{"dup ACKs", nil},
		{"dup ACKs windowsize 4", []option{{"windowsize", "4"}}},
	} {
		for _, n := range sizes {
			t.Run(fmt.Sprintf("%s/%d bytes", tc.name, n), func(t *testing.T) {
				dup := bytes.HasPrefix([]byte(tc.name), []byte("dup"))
				o := fetchOptions{options: tc.opts, dupACKs: dup}
				if dup {
					o.dally = 100 * time.Millisecond
				}
				res := fetch(t, addr, fmt.Sprintf("f%d", n), o)
				if res.err != nil || !res.complete {
					t.Fatalf("fetch: error %v, complete %v", res.err, res.complete)
				}
				if !bytes.Equal(res.data, files[fmt.Sprintf("f%d", n)]) {
					t.Fatalf("got %d bytes, want the %d bytes of the file", len(res.data), n)
				}
				// No loss on loopback and a 10s timeout: every block arrives
				// once. A duplicate ACK answered with data would show here.
				if res.dups != 0 {
					t.Errorf("got %d duplicate DATA packets of %d, want 0", res.dups, res.packets)
				}
				ev := rec.last(t)
				if ev.Kind != EventCompleted || ev.Bytes != int64(n) || ev.Size != int64(n) {
					t.Errorf("event = %s, %d bytes of %d, want completed, %d of %d (err %v)", ev.Kind, ev.Bytes, ev.Size, n, n, ev.Err)
				}
			})
		}
	}
}

// TestRollover moves more than 65536 blocks, so block numbers wrap from
// 65535 to 0, in the middle of a window. blksize 8 keeps the file small.
func TestRollover(t *testing.T) {
	data := randomBytes(8*65536+5, 7)
	addr := startServer(t, &Server{Resolver: DirResolver(writeFiles(t, map[string][]byte{"big": data})), Timeout: 10 * time.Second})
	res := fetch(t, addr, "big", fetchOptions{options: []option{{"blksize", "8"}, {"windowsize", "7"}}})
	if res.err != nil || !bytes.Equal(res.data, data) {
		t.Fatalf("got %d bytes (error %v), want %d bytes identical to the file", len(res.data), res.err, len(data))
	}
	if res.packets != 65537 {
		t.Errorf("got %d DATA packets, want 65537", res.packets)
	}
}

// TestRetransmit loses one packet at a time on the server's transfer socket
// and checks the transfer recovers.
func TestRetransmit(t *testing.T) {
	data := randomBytes(5*512+100, 3) // blocks 1..6 of 512
	root := writeFiles(t, map[string][]byte{"f": data})
	for _, tc := range []struct {
		name           string
		opts           []option
		dropIn         func([]byte) bool // ACKs the server never sees
		dropOut        func([]byte) bool // DATA or OACK the client never sees
		wantDups       int
		fasterThanTime bool // must recover without waiting for the timeout
	}{
		{name: "first ACK lost", dropIn: dropFirst(opACK, 1), wantDups: 1},
		{name: "ACK of OACK lost", opts: []option{{"tsize", "0"}}, dropIn: dropFirst(opACK, 0)},
		{name: "OACK lost", opts: []option{{"tsize", "0"}}, dropOut: dropFirst(opOACK, 0)},
		{name: "last ACK lost", dropIn: dropFirst(opACK, 6), wantDups: 1},
		{name: "DATA lost", dropOut: dropFirst(opDATA, 3)},
		{name: "DATA lost in window", opts: []option{{"windowsize", "4"}}, dropOut: dropFirst(opDATA, 2),
			wantDups: 2, fasterThanTime: true}, // 3 and 4 arrive out of order, then 2..5 again
		{name: "window ACK lost", opts: []option{{"windowsize", "4"}}, dropIn: dropFirst(opACK, 4), wantDups: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			timeout := 200 * time.Millisecond
			if tc.fasterThanTime {
				timeout = 5 * time.Second
			}
			rec := &recorder{}
			s := &Server{Resolver: DirResolver(root), Observe: rec.observe, Timeout: timeout, Retries: 3}
			s.listenTransfer = func(local net.Addr) (net.PacketConn, error) {
				c, err := listenNextTo(local)
				return &lossyConn{PacketConn: c, dropIn: tc.dropIn, dropOut: tc.dropOut}, err
			}
			addr := startServer(t, s)
			start := time.Now()
			o := fetchOptions{options: tc.opts, wait: time.Second}
			if !tc.fasterThanTime {
				o.dally = 3 * timeout / 2
			}
			res := fetch(t, addr, "f", o)
			if res.err != nil || !bytes.Equal(res.data, data) {
				t.Fatalf("got %d bytes (error %v), want the %d bytes of the file", len(res.data), res.err, len(data))
			}
			// A loaded machine may add a spurious timeout; fewer duplicates
			// than the loss forces would mean nothing was resent.
			if res.dups < tc.wantDups || (tc.fasterThanTime && res.dups != tc.wantDups) {
				t.Errorf("got %d duplicate DATA packets, want %d", res.dups, tc.wantDups)
			}
			if ev := rec.last(t); ev.Kind != EventCompleted {
				t.Errorf("event %s (%v), want completed", ev.Kind, ev.Err)
			}
			if tc.fasterThanTime && time.Since(start) > timeout/2 {
				t.Errorf("took %v: the lost block was only resent on timeout", time.Since(start))
			}
		})
	}
}

// TestGivesUp: a client that never acknowledges gets the first block
// 1+Retries times, then the server reports the failure.
func TestGivesUp(t *testing.T) {
	rec := &recorder{}
	addr := startServer(t, &Server{
		Resolver: DirResolver(writeFiles(t, map[string][]byte{"f": randomBytes(2000, 1)})),
		Observe:  rec.observe, Timeout: 20 * time.Millisecond, Retries: 2,
	})
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.WriteTo((&request{op: opRRQ, filename: "f", mode: "octet"}).marshal(), addr)
	ev := rec.last(t)
	if ev.Kind != EventError || !errors.Is(ev.Err, errGaveUp) {
		t.Errorf("event %s (%v), want an error saying the client stopped answering", ev.Kind, ev.Err)
	}
	// Everything the server sent is queued on the socket by now.
	var blocks int
	buf := make([]byte, 600)
	for {
		conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			break
		}
		if n >= 4 && buf[1] == byte(opDATA) && buf[3] == 1 {
			blocks++
		}
	}
	if blocks != 3 {
		t.Errorf("got block 1 %d times, want 3 (1 + 2 retries)", blocks)
	}
}

func TestOptionNegotiation(t *testing.T) {
	data := randomBytes(10000, 2)
	addr := startServer(t, &Server{Resolver: DirResolver(writeFiles(t, map[string][]byte{"f": data}))})
	for _, tc := range []struct {
		name     string
		mode     string
		opts     []option
		wantOACK []option // nil: no OACK, data starts at once
	}{
		{"none", "", nil, nil},
		{"only unknown", "", []option{{"multicast", ""}, {"foo", "1"}}, nil},
		{"all, in client order", "", []option{{"tsize", "0"}, {"blksize", "1428"}, {"foo", "bar"}, {"timeout", "3"}, {"windowsize", "4"}},
			[]option{{"tsize", "10000"}, {"blksize", "1428"}, {"timeout", "3"}, {"windowsize", "4"}}},
		{"blksize clamped", "", []option{{"blksize", "70000"}}, []option{{"blksize", "65464"}}},
		{"blksize too small ignored", "", []option{{"blksize", "4"}, {"tsize", "0"}}, []option{{"tsize", "10000"}}},
		{"netascii has no tsize", "netascii", []option{{"tsize", "0"}, {"blksize", "1024"}}, []option{{"blksize", "1024"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := fetch(t, addr, "f", fetchOptions{mode: tc.mode, options: tc.opts})
			if res.err != nil || !res.complete {
				t.Fatalf("fetch: error %v, complete %v", res.err, res.complete)
			}
			if !slices.Equal(res.oack, tc.wantOACK) {
				t.Errorf("OACK = %v, want %v", res.oack, tc.wantOACK)
			}
		})
	}
}

func TestNegotiate(t *testing.T) {
	for _, tc := range []struct {
		name       string
		opts       []option
		size       int64
		wantBlock  int
		wantWindow int
		wantTime   time.Duration
		wantOACK   []option
	}{
		{"defaults", nil, 10, 512, 1, time.Second, nil},
		{"blksize bounds", []option{{"blksize", "8"}}, 10, 8, 1, time.Second, []option{{"blksize", "8"}}},
		{"blksize not a number", []option{{"blksize", "big"}}, 10, 512, 1, time.Second, nil},
		{"first of repeated wins", []option{{"blksize", "1024"}, {"blksize", "2048"}}, 10, 1024, 1, time.Second, []option{{"blksize", "1024"}}},
		{"timeout out of range", []option{{"timeout", "0"}, {"timeout", "256"}}, 10, 512, 1, time.Second, nil},
		{"timeout", []option{{"timeout", "07"}}, 10, 512, 1, 7 * time.Second, []option{{"timeout", "7"}}},
		{"tsize unknown size", []option{{"tsize", "0"}}, -1, 512, 1, time.Second, nil},
		{"tsize", []option{{"tsize", "0"}}, 1 << 40, 512, 1, time.Second, []option{{"tsize", strconv.Itoa(1 << 40)}}},
		{"windowsize 0 ignored", []option{{"windowsize", "0"}}, 10, 512, 1, time.Second, nil},
		{"windowsize capped by memory", []option{{"windowsize", "65535"}, {"blksize", "65464"}}, 10, 65464, 4, time.Second,
			[]option{{"windowsize", "4"}, {"blksize", "65464"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := negotiate(tc.opts, tc.size, time.Second)
			if p.blockSize != tc.wantBlock || p.windowSize != tc.wantWindow || p.timeout != tc.wantTime {
				t.Errorf("blksize %d, windowsize %d, timeout %v; want %d, %d, %v",
					p.blockSize, p.windowSize, p.timeout, tc.wantBlock, tc.wantWindow, tc.wantTime)
			}
			if !slices.Equal(p.oack, tc.wantOACK) {
				t.Errorf("OACK = %v, want %v", p.oack, tc.wantOACK)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	rec := &recorder{}
	addr := startServer(t, &Server{Resolver: DirResolver(writeFiles(t, map[string][]byte{"f": []byte("x")})), Observe: rec.observe})
	for _, tc := range []struct {
		name, file string
		o          fetchOptions
		wantCode   errorCode
	}{
		{"missing", "nope", fetchOptions{}, errFileNotFound},
		{"dot-dot", "../../etc/passwd", fetchOptions{}, errAccessViolation},
		{"root dir", "/", fetchOptions{}, errAccessViolation},
		{"upload", "f", fetchOptions{op: opWRQ}, errAccessViolation},
		{"mail mode", "f", fetchOptions{mode: "mail"}, errIllegalOp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := fetch(t, addr, tc.file, tc.o)
			if res.err == nil || res.err.code != tc.wantCode {
				t.Fatalf("got error %v, want code %d", res.err, tc.wantCode)
			}
			if ev := rec.last(t); ev.Kind != EventError || ev.Err == nil || ev.Path != tc.file {
				t.Errorf("event %+v, want an error event for %q", ev, tc.file)
			}
		})
	}
}

// TestMalformedRequest: garbage on the listening port is answered with
// "illegal operation" from that port, and does not stop the server.
func TestMalformedRequest(t *testing.T) {
	addr := startServer(t, &Server{Resolver: DirResolver(t.TempDir())})
	conn, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte{0, byte(opACK), 0, 1})
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 600)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := parseError(buf[:n]); buf[1] != byte(opERROR) || code != errIllegalOp {
		t.Errorf("got %q, want an illegal operation error", buf[:n])
	}
}

// TestRepeatedRequest: a client that repeats its RRQ before the first
// answer gets one transfer, not two.
func TestRepeatedRequest(t *testing.T) {
	addr := startServer(t, &Server{Resolver: DirResolver(writeFiles(t, map[string][]byte{"f": randomBytes(3000, 4)}))})
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rrq := (&request{op: opRRQ, filename: "f", mode: "octet"}).marshal()
	conn.WriteTo(rrq, addr)
	conn.WriteTo(rrq, addr)
	senders := map[string]bool{}
	buf := make([]byte, 600)
	for wait := 5 * time.Second; ; wait = 300 * time.Millisecond {
		conn.SetReadDeadline(time.Now().Add(wait))
		_, from, err := conn.ReadFrom(buf)
		if err != nil {
			break
		}
		senders[from.String()] = true
	}
	if len(senders) != 1 {
		t.Errorf("block 1 came from %d transfers (%v), want 1", len(senders), senders)
	}
}

// TestShutdown: cancelling Serve aborts a running transfer, tells the
// client, and returns.
func TestShutdown(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rec := &recorder{}
	s := &Server{Resolver: DirResolver(writeFiles(t, map[string][]byte{"f": randomBytes(3000, 5)})), Observe: rec.observe, Timeout: time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()

	client, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.WriteTo((&request{op: opRRQ, filename: "f", mode: "octet"}).marshal(), conn.LocalAddr())
	buf := make([]byte, 600)
	client.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, _, err := client.ReadFrom(buf); err != nil {
		t.Fatalf("no first block: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	n, _, err := client.ReadFrom(buf)
	if err != nil || buf[1] != byte(opERROR) {
		t.Errorf("client got %q (%v), want an ERROR packet", buf[:n], err)
	}
	if ev := rec.last(t); ev.Kind != EventError || !errors.Is(ev.Err, context.Canceled) {
		t.Errorf("event %s (%v), want an error saying the transfer was aborted", ev.Kind, ev.Err)
	}
}

func BenchmarkTransfer10MiB(b *testing.B) {
	data := randomBytes(10<<20, 6)
	addr := startServer(b, &Server{Resolver: DirResolver(writeFiles(b, map[string][]byte{"f": data}))})
	for _, opts := range [][]option{
		{{"blksize", "1428"}},
		{{"blksize", "1428"}, {"windowsize", "16"}},
	} {
		b.Run(fmt.Sprint(opts), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if res := fetch(b, addr, "f", fetchOptions{options: opts}); len(res.data) != len(data) {
					b.Fatalf("got %d bytes, want %d (error %v)", len(res.data), len(data), res.err)
				}
			}
		})
	}
}
