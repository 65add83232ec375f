//go:build !linux

package dhcp

import (
	"context"
	"errors"
	"net"
)

func listenUDP(ctx context.Context, iface string, port int) (*net.UDPConn, error) {
	return nil, errors.New("dhcp: serving needs Linux (SO_BINDTODEVICE)")
}
