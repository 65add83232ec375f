package dhcp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenUDP opens a UDP socket on port of every address, bound to one
// interface: it receives the broadcasts of clients without an address and
// answers only on that link, and several servers (one per interface) may
// share the port. SO_BROADCAST lets it answer to 255.255.255.255.
func listenUDP(ctx context.Context, iface string, port int) (*net.UDPConn, error) {
	return listenUDPOn(ctx, iface, netip.IPv4Unspecified(), port)
}

// listenUDPOn is listenUDP on one address: a socket bound to a unicast
// address gets the datagrams sent to that address and no broadcast, and
// the kernel gives a datagram to it before a socket of every address.
func listenUDPOn(ctx context.Context, iface string, addr netip.Addr, port int) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(network, address string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			s := int(fd)
			if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				return
			}
			// Room for a burst of DISCOVERs (a rack powering on); the
			// kernel caps it at net.core.rmem_max.
			_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
			serr = unix.BindToDevice(s, iface)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", net.JoinHostPort(addr.String(), strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("dhcp: listening on %s port %d: %w", iface, port, err)
	}
	return pc.(*net.UDPConn), nil
}
