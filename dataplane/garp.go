package dataplane

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"hearth.dev/hearth/netns"
)

// garpSchedule is when gratuitous ARPs go out after an address appears on
// a router's external leg: at once, and twice more in case the first was
// lost while the leg's bridge port was still coming up.
var garpSchedule = []time.Duration{0, 200 * time.Millisecond, time.Second}

// sendGARP announces that ip now lives on the link (in ns): a gratuitous
// ARP request (sender and target both ip) to the broadcast address. The
// external network's hosts and routers update the MAC they had for it,
// so a floating IP that moved here is reached here at once, not when
// their ARP caches expire. It does not wait: the announcements go out in
// the background (Close waits for them). Failures are logged, never
// fatal: the address answers ARP anyway.
func (p *Linux) sendGARP(ns netns.Handle, link string, ip netip.Addr) {
	if ip.Is6() {
		p.sendUNA(ns, link, ip)
		return
	}
	var fd int
	var frame []byte
	var to unix.SockaddrLinklayer
	err := netns.Do(ns, func() error {
		ifi, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return err
		}
		frame = garpPacket(ifi.HardwareAddr, ip)
		to = unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6}
		copy(to.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		return nil
	})
	if err != nil {
		p.logf("dataplane: gratuitous ARP for %s on %s: %v", ip, link, err)
		return
	}
	p.announce(fd, frame, &to, "gratuitous ARP", "gratuitous ARP", ip, link)
}

// announce sends b to to from fd on garpSchedule, in the background
// (Close waits for it), and closes fd after: the one way gratuitous ARPs
// and unsolicited neighbour advertisements are repeated. what names the
// message in errors, how in the line saying it is announced.
func (p *Linux) announce(fd int, b []byte, to unix.Sockaddr, what, how string, ip netip.Addr, link string) {
	p.logf("dataplane: announcing %s on %s (%s)", ip, link, how)
	p.garps.Add(1)
	go func() {
		defer p.garps.Done()
		defer unix.Close(fd)
		start := time.Now()
		for _, at := range garpSchedule {
			time.Sleep(time.Until(start.Add(at)))
			if err := unix.Sendto(fd, b, 0, to); err != nil {
				p.logf("dataplane: %s for %s on %s: %v", what, ip, link, err)
			}
		}
	}()
}

// garpPacket is an Ethernet/IPv4 ARP request announcing ip at mac.
func garpPacket(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)             // hardware: Ethernet
	binary.BigEndian.PutUint16(b[2:], unix.ETH_P_IP) // protocol: IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], 1) // request
	copy(b[8:14], mac)
	a := ip.As4()
	copy(b[14:18], a[:]) // sender
	// target hardware address zero
	copy(b[24:28], a[:]) // target
	return b
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sendUNA is sendGARP for IPv6: an unsolicited neighbour advertisement
// (override set) of ip at the link's MAC to all nodes, for an address
// the router now holds or answers for (NDP proxy). The kernel makes the
// ICMPv6 checksum and picks the link-local source.
func (p *Linux) sendUNA(ns netns.Handle, link string, ip netip.Addr) {
	var fd int
	var msg []byte
	var to unix.SockaddrInet6
	err := netns.Do(ns, func() error {
		ifi, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		if err != nil {
			return err
		}
		// Neighbour discovery is only believed from hop limit 255.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255); err != nil {
			unix.Close(fd)
			return err
		}
		msg = unaPacket(ifi.HardwareAddr, ip)
		to = unix.SockaddrInet6{Addr: netip.IPv6LinkLocalAllNodes().As16(), ZoneId: uint32(ifi.Index)}
		return nil
	})
	if err != nil {
		p.logf("dataplane: neighbour advertisement for %s on %s: %v", ip, link, err)
		return
	}
	p.announce(fd, msg, &to, "neighbour advertisement", "unsolicited neighbour advertisement", ip, link)
}

// unaPacket is an ICMPv6 neighbour advertisement (RFC 4861 4.4) of ip at
// mac, with the override flag and a target link-layer address option;
// the checksum is left to the kernel.
func unaPacket(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, 24, 32)
	b[0] = 136  // neighbour advertisement
	b[4] = 0x20 // override
	a := ip.As16()
	copy(b[8:24], a[:])
	b = append(b, 2, 1) // target link-layer address, 8 bytes
	return append(b, mac[:6]...)
}
