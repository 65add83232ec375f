package compute

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A migration to a destination that accepts the connection but never
// reads from it (a stopped or wedged QEMU, a host that stalls) can hang
// the source QEMU where neither migrate_cancel nor yank reaches: QEMU
// 7.2 does the TLS handshake on its main loop with the socket blocking,
// so its main thread sits in recvmsg, and QMP (served from that loop)
// does not answer. What unblocks it is the kernel: the source's
// connections to the destination are shut down from outside (the
// agent, as root, takes a copy of QEMU's socket with pidfd_getfd and
// shuts it down), and QEMU's read or write returns, the migration
// fails, and the guest runs on.

// shutDownMigrationSockets shuts down every TCP connection of process
// pid to the destination of uri ("tcp:HOST:PORT"), and says how many it
// found.
func shutDownMigrationSockets(pid int, uri string) (int, error) {
	hostPort := strings.TrimPrefix(uri, "tcp:")
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return 0, fmt.Errorf("migration URI %q: %w", uri, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return 0, fmt.Errorf("migration URI %q: port: %w", uri, err)
	}
	var dests []netip.AddrPort
	if a, err := netip.ParseAddr(host); err == nil {
		dests = append(dests, netip.AddrPortFrom(a.Unmap(), uint16(p)))
	} else {
		addrs, err := net.LookupHost(host)
		if err != nil {
			return 0, fmt.Errorf("migration URI %q: %w", uri, err)
		}
		for _, s := range addrs {
			if a, err := netip.ParseAddr(s); err == nil {
				dests = append(dests, netip.AddrPortFrom(a.Unmap(), uint16(p)))
			}
		}
	}
	// The sockets' inodes whose peer is the destination, from the
	// process's own view of the network (its namespace).
	inodes := map[string]bool{}
	for _, f := range []string{"tcp", "tcp6"} {
		conns, err := procTCP(filepath.Join("/proc", strconv.Itoa(pid), "net", f))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
		for inode, remote := range conns {
			for _, d := range dests {
				if remote == d {
					inodes[inode] = true
				}
			}
		}
	}
	if len(inodes) == 0 {
		return 0, nil
	}
	fdDir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return 0, err
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return 0, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	n := 0
	for _, e := range entries {
		link, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil || !strings.HasPrefix(link, "socket:[") || !inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
			continue
		}
		target, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fd, err := unix.PidfdGetfd(pidfd, target, 0)
		if err != nil {
			return n, fmt.Errorf("pidfd_getfd %d of process %d: %w", target, pid, err)
		}
		err = unix.Shutdown(fd, unix.SHUT_RDWR)
		unix.Close(fd)
		if err != nil && !errors.Is(err, unix.ENOTCONN) {
			return n, fmt.Errorf("shutting down socket %d of process %d: %w", target, pid, err)
		}
		n++
	}
	return n, nil
}

// procTCP reads a /proc/PID/net/tcp or tcp6 table: the remote address of
// each connection that is established or being made, by socket inode.
func procTCP(path string) (map[string]netip.AddrPort, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]netip.AddrPort{}
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
		if len(fields) < 10 || (fields[3] != "01" && fields[3] != "02") { // ESTABLISHED, SYN_SENT
			continue
		}
		remote, ok := procTCPAddr(fields[2])
		if ok && fields[9] != "0" {
			out[fields[9]] = remote
		}
	}
	return out, sc.Err()
}

// procTCPAddr decodes an address of /proc/net/tcp{,6}: the address in
// hex, as 32-bit words in the host's byte order (little-endian here),
// a colon, and the port in hex.
func procTCPAddr(s string) (netip.AddrPort, bool) {
	a, p, ok := strings.Cut(s, ":")
	raw, err := hex.DecodeString(a)
	port, err2 := strconv.ParseUint(p, 16, 16)
	if !ok || err != nil || err2 != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, false
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(b[i:], binary.LittleEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), true
}
