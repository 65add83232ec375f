package compute

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestProcTCPAddr(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"0100007F:9641", "127.0.0.1:38465", true},
		{"0A000001:0016", "1.0.0.10:22", true},
		{"00000000000000000000000001000000:01BB", "[::1]:443", true},
		{"0000000000000000FFFF00000100007F:0050", "127.0.0.1:80", true}, // v4-mapped
		{"0100007F", "", false},
		{"zz00007F:0050", "", false},
		{"0100:0050", "", false},
	} {
		got, ok := procTCPAddr(c.in)
		if ok != c.ok || (ok && got != netip.MustParseAddrPort(c.want)) {
			t.Errorf("procTCPAddr(%q) = %v, %v; want %s, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// TestShutDownMigrationSockets: a connection to a listener that never
// reads, with a read blocked on it (as QEMU's main loop blocks in a
// migration's TLS handshake), is shut down from outside by the
// destination's address: the blocked read returns. The listener itself,
// and connections elsewhere, are left alone.
func TestShutDownMigrationSockets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := net.Dial("tcp", ln.Addr().String()) // never accepted
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	keep, err := net.Dial("tcp", other.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	read := make(chan error, 1)
	go func() {
		_, err := conn.Read(make([]byte, 1))
		read <- err
	}()
	n, err := shutDownMigrationSockets(os.Getpid(), "tcp:"+ln.Addr().String())
	if errors.Is(err, unix.ENOSYS) {
		t.Skipf("this kernel has no pidfd_getfd (Linux 5.6 and later do): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("shut down %d sockets; want 1", n)
	}
	select {
	case err := <-read:
		if !errors.Is(err, io.EOF) {
			t.Errorf("the blocked read returned %v; want EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the blocked read still waits after the shutdown")
	}
	keep.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := keep.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the other connection: read %v; want it untouched (a timeout)", err)
	}
	if n, err := shutDownMigrationSockets(os.Getpid(), "tcp:127.0.0.1:1"); err != nil || n != 0 {
		t.Errorf("to a port nothing connects to: %d, %v; want 0, nil", n, err)
	}
}
