//go:build !linux

package dhcp

import (
	"context"
	"errors"
	"net"
	"net/netip"
)

func listenUDP(ctx context.Context, iface string, port int) (*net.UDPConn, error) {
	return nil, errors.New("dhcp: serving needs Linux (SO_BINDTODEVICE)")
}

func listenUDPOn(ctx context.Context, iface string, addr netip.Addr, port int) (*net.UDPConn, error) {
	return listenUDP(ctx, iface, port)
}
