package boot

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// announceNoIPv6 answers IPv6 router solicitations on the provisioning
// network with a router advertisement that offers nothing: no prefix, no
// DHCPv6, router lifetime 0. Firmware that configures IPv6 beside DHCPv4
// (iPXE does) otherwise waits for an advertisement that never comes on a
// network without an IPv6 router; this one tells it at once that there is
// no IPv6 here, and does not make this service anyone's router.
//
// The socket is opened before it returns, in the calling thread's network
// namespace; serve answers until ctx ends.
func announceNoIPv6(ctx context.Context, ifname string) (serve func() error, err error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, fmt.Errorf("router advertisements: %w", err)
	}
	p := c.IPv6PacketConn()
	if err := p.JoinGroup(ifi, &net.IPAddr{IP: net.ParseIP("ff02::2")}); err != nil {
		c.Close()
		return nil, fmt.Errorf("router advertisements: joining ff02::2 on %s: %w", ifname, err)
	}
	return func() error {
		defer c.Close()
		return answerSolicitations(ctx, c, p, ifi)
	}, nil
}

func answerSolicitations(ctx context.Context, c *icmp.PacketConn, p *ipv6.PacketConn, ifi *net.Interface) error {
	ifname := ifi.Name
	var filter ipv6.ICMPFilter
	filter.SetAll(true)
	filter.Accept(ipv6.ICMPTypeRouterSolicitation)
	_ = p.SetICMPFilter(&filter)
	_ = p.SetControlMessage(ipv6.FlagInterface, true)
	// Router advertisements are only believed with hop limit 255.
	_ = p.SetMulticastHopLimit(255)
	_ = p.SetHopLimit(255)
	_ = p.SetMulticastInterface(ifi)
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	ra := routerAdvertisement(ifi.HardwareAddr)
	buf := make([]byte, 1500)
	for {
		n, cm, src, err := p.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if n < 4 || buf[0] != byte(ipv6.ICMPTypeRouterSolicitation) || (cm != nil && cm.IfIndex != ifi.Index) {
			continue
		}
		dst := &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: ifname}
		if _, err := p.WriteTo(ra, &ipv6.ControlMessage{HopLimit: 255, IfIndex: ifi.Index}, dst); err != nil {
			slog.Debug("router advertisement", "to", src, "err", err)
		}
	}
}

// routerAdvertisement is an ICMPv6 router advertisement (RFC 4861 4.2)
// with lifetime 0 and no prefix, carrying our link-layer address. The
// kernel fills in the checksum.
func routerAdvertisement(mac net.HardwareAddr) []byte {
	b := make([]byte, 16, 16+8)
	b[0] = byte(ipv6.ICMPTypeRouterAdvertisement)
	// b[4] cur hop limit 0 (unspecified), b[5] flags 0 (no DHCPv6),
	// router lifetime 0 (not a default router), reachable and
	// retransmit times 0 (unspecified).
	binary.BigEndian.PutUint16(b[6:8], 0)
	if len(mac) == 6 {
		b = append(b, 1, 1) // source link-layer address, 8 bytes
		b = append(b, mac...)
	}
	return b
}
