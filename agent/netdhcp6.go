package agent

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/dataplane"
)

// Stateful DHCPv6 for subnets in mode dhcpv6, served by the router's
// advertisement server (netra.go) on the same leg: the advertisement sets
// the managed flag, the guest asks, and the answer is IPAM's address for
// the asking NIC, found by the source MAC of its frame (a DUID says
// nothing reliable of the NIC: systemd's, for one, holds no MAC). Like
// DHCPv4 every address is a static lease: a NIC the host has no lease
// for in a dhcpv6 subnet gets no answer, and since the data plane drops
// DHCPv6 on the VXLAN device, only the NIC's own host answers.
//
// Requests are read on a packet socket with a filter that passes only
// UDP to port 547 (nothing else on the leg costs a wake-up), so the MAC
// is in hand; answers are whole frames to that MAC from the gateway's
// link-local address, as the advertisements are.

const (
	dhcp6ServerPort = 547
	dhcp6ClientPort = 546
)

// dhcp6Filter passes IPv6 frames carrying UDP (no extension headers) to
// the DHCPv6 server port.
func dhcp6Filter() ([]bpf.RawInstruction, error) {
	return bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.ETH_P_IPV6, SkipTrue: 5},
		bpf.LoadAbsolute{Off: 14 + 6, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_UDP, SkipTrue: 3},
		bpf.LoadAbsolute{Off: 14 + 40 + 2, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: dhcp6ServerPort, SkipTrue: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	})
}

// serverDUID identifies a network's DHCPv6 server: the gateway MAC, the
// same on every host, so a guest that moves keeps renewing with "its"
// server.
func serverDUID(vni uint32) dhcpv6.DUID {
	return &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: dataplane.GatewayMAC(vni)}
}

// dhcp6Reply answers one client message from the NIC with MAC mac, or
// says to ignore it: a NIC without a lease in a dhcpv6 subnet, a message
// for another server, or one a server does not answer.
func dhcp6Reply(n *raNetwork, vni uint32, mac net.HardwareAddr, msg *dhcpv6.Message) (*dhcpv6.Message, bool) {
	port, ok := n.Ports[mac.String()]
	if !ok || port.Subnet >= len(n.Subnets) {
		return nil, false
	}
	s := n.Subnets[port.Subnet]
	if s.Mode != api.IPv6ModeDHCPv6 || s.Static {
		return nil, false
	}
	sid := serverDUID(vni)
	if other := msg.Options.ServerID(); other != nil && !other.Equal(sid) {
		return nil, false
	}
	if msg.Options.ClientID() == nil {
		return nil, false
	}
	lease := time.Duration(s.Lease) * time.Second
	if lease <= 0 {
		lease = time.Hour
	}
	mods := []dhcpv6.Modifier{dhcpv6.WithServerID(sid)}
	if len(s.DNS) > 0 {
		var dns []net.IP
		for _, a := range s.DNS {
			dns = append(dns, a.AsSlice())
		}
		mods = append(mods, dhcpv6.WithDNS(dns...))
	}
	// The address, in the IA the client asked with (its IAID).
	withAddress := func(m *dhcpv6.Message) {
		ia := &dhcpv6.OptIANA{T1: lease / 2, T2: lease * 4 / 5}
		if asked := msg.Options.OneIANA(); asked != nil {
			ia.IaId = asked.IaId
		}
		ia.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: port.Address.AsSlice(), PreferredLifetime: lease, ValidLifetime: lease})
		m.AddOption(ia)
	}
	var out *dhcpv6.Message
	var err error
	switch msg.Type() {
	case dhcpv6.MessageTypeSolicit:
		if msg.Options.OneIANA() == nil {
			return nil, false
		}
		if msg.GetOneOption(dhcpv6.OptionRapidCommit) != nil {
			out, err = dhcpv6.NewReplyFromMessage(msg, mods...)
		} else {
			out, err = dhcpv6.NewAdvertiseFromSolicit(msg, mods...)
		}
		if err == nil {
			withAddress(out)
		}
	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind:
		if msg.Type() != dhcpv6.MessageTypeRebind && msg.Options.ServerID() == nil {
			return nil, false
		}
		if out, err = dhcpv6.NewReplyFromMessage(msg, mods...); err == nil && msg.Options.OneIANA() != nil {
			withAddress(out)
		}
	case dhcpv6.MessageTypeConfirm, dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline:
		// The NIC's address never changes while it is on the subnet:
		// success, and nothing to forget.
		if out, err = dhcpv6.NewReplyFromMessage(msg, mods...); err == nil {
			out.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess})
		}
	case dhcpv6.MessageTypeInformationRequest:
		out, err = dhcpv6.NewReplyFromMessage(msg, mods...)
	default:
		return nil, false
	}
	if err != nil {
		return nil, false
	}
	return out, true
}

// dhcp6Frame is an Ethernet frame carrying a DHCPv6 answer from the
// router to the client at (mac, ip, port).
func dhcp6Frame(vni uint32, mac net.HardwareAddr, ip netip.Addr, port uint16, m *dhcpv6.Message) []byte {
	src := gatewayLinkLocal(vni)
	payload := m.ToBytes()
	udpLen := 8 + len(payload)
	f := make([]byte, 0, 14+40+udpLen)
	f = append(f, mac...)
	f = append(f, dataplane.GatewayMAC(vni)...)
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_IPV6)
	f = append(f, 0x60, 0, 0, 0)
	f = binary.BigEndian.AppendUint16(f, uint16(udpLen))
	f = append(f, unix.IPPROTO_UDP, 64)
	s16, d16 := src.As16(), ip.As16()
	f = append(f, s16[:]...)
	f = append(f, d16[:]...)
	udp := len(f)
	f = binary.BigEndian.AppendUint16(f, dhcp6ServerPort)
	f = binary.BigEndian.AppendUint16(f, port)
	f = binary.BigEndian.AppendUint16(f, uint16(udpLen))
	f = append(f, 0, 0)
	f = append(f, payload...)
	// The checksum covers a pseudo-header: addresses, length, protocol.
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(s16[:])
	add(d16[:])
	sum += uint32(udpLen) + unix.IPPROTO_UDP
	add(f[udp:])
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(f[udp+6:], c)
	return f
}

// parseDHCP6Request takes a frame the filter passed apart: the client's
// MAC, address and port, and its message.
func parseDHCP6Request(f []byte) (net.HardwareAddr, netip.Addr, uint16, *dhcpv6.Message, bool) {
	if len(f) < 14+40+8 || f[14]>>4 != 6 || f[14+6] != unix.IPPROTO_UDP {
		return nil, netip.Addr{}, 0, nil, false
	}
	mac := net.HardwareAddr(append([]byte(nil), f[6:12]...))
	src := netip.AddrFrom16([16]byte(f[14+8 : 14+24]))
	port := binary.BigEndian.Uint16(f[54:56])
	m, err := dhcpv6.MessageFromBytes(f[62:])
	if err != nil || !src.IsLinkLocalUnicast() {
		// Clients ask from their link-local address (RFC 8415 13.1).
		return nil, netip.Addr{}, 0, nil, false
	}
	return mac, src, port, m, true
}

// openDHCP6 opens the packet socket DHCPv6 requests are read on, bound to
// the router's leg; it must run in the router namespace.
func openDHCP6(ifindex int) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IPV6)))
	if err != nil {
		return -1, err
	}
	prog, err := dhcp6Filter()
	if err == nil {
		fp := make([]unix.SockFilter, len(prog))
		for i, ins := range prog {
			fp[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
		}
		err = unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(fp)), Filter: &fp[0]})
	}
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: ifindex})
	}
	if err == nil {
		// Reads wake up now and then so the server sees it is stopped.
		err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 300000})
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// serveDHCP6 answers requests until done is closed.
func (r *raServer) serveDHCP6(done <-chan struct{}) {
	buf := make([]byte, 2048)
	for {
		select {
		case <-done:
			return
		default:
		}
		n, from, err := unix.Recvfrom(r.dhcp6, buf, 0)
		if err != nil {
			continue // the timeout, or a signal
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		mac, ip, port, msg, ok := parseDHCP6Request(buf[:n])
		if !ok {
			continue
		}
		reply, ok := dhcp6Reply(r.cfg.Load(), r.vni, mac, msg)
		if !ok {
			continue
		}
		to := &unix.SockaddrLinklayer{Ifindex: r.ifidx, Protocol: htons(unix.ETH_P_IPV6), Halen: 6}
		copy(to.Addr[:], mac)
		_ = unix.Sendto(r.fd, dhcp6Frame(r.vni, mac, ip, port, reply), 0, to)
	}
}
