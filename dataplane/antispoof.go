package dataplane

import (
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Anti-spoofing: every frame a VM sends is checked on its way out of the
// VM's port, always, whatever its security groups say. A guest's kernel
// is the tenant's, so nothing it puts on the wire is believed: the other
// VMs, the router's DHCP server and the metadata service identify a VM
// by its MAC and addresses, and that is only sound if no VM can claim
// another's.
//
// Each port has a chain in hostTable, port-VNI-NAME, reached from the
// forward chain through the portfrom verdict map (keyed by the port's
// name, like the VXLAN maps), so a frame costs one lookup and the rules
// of one port. A frame from the port passes only if:
//
//   - its Ethernet source is the port's MAC;
//   - it is ARP whose sender is the port's MAC and one of its IPv4
//     addresses (or an ARP probe, sender 0.0.0.0, for one of them);
//   - it is IPv4 from one of its addresses, or a DHCP client's request
//     from 0.0.0.0 to port 67; never a DHCP server's answer (source port
//     67): only the router answers DHCP;
//   - it is IPv6 from one of its addresses, its link-local address or
//     its SLAAC address in each /64 subnet (both EUI-64, from the MAC:
//     what a guest makes by itself), where a neighbour advertisement's
//     target must be one of those too; or from :: a neighbour
//     solicitation for one of them (duplicate address detection), an
//     MLD report or a router solicitation; never a router advertisement,
//     a redirect or a DHCPv6 server's answer (source port 547).
//
// Everything else (other ether types, VLAN tags, forged addresses) is
// dropped. Frames pass the chain by returning to the forward chain,
// never by accepting, so the rest of the host's rules still see them.

const (
	portFromMap = "portfrom"
	portToMap   = "portto"
)

// portMaps are the ports' verdict maps: portfrom by the frame's input
// port (anti-spoofing), portto by its output port (the broadcast filter
// of ports with security groups).
var portMaps = []string{portFromMap, portToMap}

// portChain names a port's anti-spoofing chain. The VNI in the name is
// how a chain left by a network that is gone is found.
func portChain(vni uint32, port string) string { return portChainPrefix(vni) + port }

func portChainPrefix(vni uint32) string { return "port-" + vniString(vni) + "-" }

// portInChain names the chain of frames going out to a port with
// security groups.
func portInChain(vni uint32, port string) string { return portChain(vni, port) + "-in" }

// antiSpoofRules are the chains of a network's ports, in port order.
func antiSpoofRules(n *Network) ([]nftChain, []nftRule) {
	var chains []nftChain
	var rules []nftRule
	for _, p := range n.Ports {
		ch := portChain(n.VNI, p.Name)
		chains = append(chains, nftChain{name: ch})
		rules = append(rules, portRules(ch, p, n.Subnets)...)
		if p.Security != nil {
			in := portInChain(n.VNI, p.Name)
			chains = append(chains, nftChain{name: in})
			rules = append(rules, broadcastRules(in)...)
		}
	}
	return chains, rules
}

// broadcastRules keep broadcast and multicast IP from a port with
// security groups. Its ingress rules are matched in hearth-sg by the
// frame's destination MAC, which a broadcast does not have, so here, where
// the bridge knows the port a frame goes out of, only what a NIC needs
// from its network passes: ARP, DHCP's answers, IPv6 neighbour discovery
// and MLD. Unicast frames return to be filtered by hearth-sg.
func broadcastRules(chain string) []nftRule {
	var rules []nftRule
	add := func(name string, parts ...[]expr.Any) {
		rules = append(rules, nftRule{chain: chain, name: name, exprs: cat(parts...)})
	}
	pass := []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}
	add("unicast", []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 0, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{1}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}},
	}, pass)
	add("arp", etherType(unix.ETH_P_ARP), pass)
	add("dhcp", etherType(unix.ETH_P_IP), l4(unix.IPPROTO_UDP), transportRange(0, 2, 67, 67), transportRange(2, 2, 68, 68), pass)
	add("nd-mld", etherType(unix.ETH_P_IPV6), l4(unix.IPPROTO_ICMPV6), transportRange(0, 1, 130, 137), pass)
	add("mld2", etherType(unix.ETH_P_IPV6), l4(unix.IPPROTO_ICMPV6), transportRange(0, 1, 143, 143), pass)
	add("other", []expr.Any{drop()})
	return rules
}

// SLAAC is the address a NIC with this MAC gives itself by stateless
// autoconfiguration in a /64 (modified EUI-64, RFC 4862), which its port
// lets it use whether or not the state lists it.
func SLAAC(prefix netip.Prefix, mac net.HardwareAddr) netip.Addr {
	b := prefix.Masked().Addr().As16()
	ll := LinkLocal(mac).As16()
	copy(b[8:], ll[8:])
	return netip.AddrFrom16(b)
}

func portRules(chain string, p Port, subnets []Subnet) []nftRule {
	var rules []nftRule
	add := func(name string, parts ...[]expr.Any) {
		rules = append(rules, nftRule{chain: chain, name: name, exprs: cat(parts...)})
	}
	dropIt, pass := []expr.Any{drop()}, []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}
	var v4, v6 []netip.Addr
	for _, a := range p.Addresses {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	for _, s := range subnets {
		if s.CIDR.Addr().Is6() && s.CIDR.Bits() == 64 {
			if a := SLAAC(s.CIDR, p.MAC); !slices.Contains(v6, a) {
				v6 = append(v6, a)
			}
		}
	}
	v6 = append(v6, LinkLocal(p.MAC))

	add("mac", etherAddrCmp(6, p.MAC, expr.CmpOpNeq), dropIt)

	arp := etherType(unix.ETH_P_ARP)
	// ARP for Ethernet and IPv4: the sender's hardware address at 8,
	// its protocol address at 14, the target's at 24.
	add("arp-sha", arp, nhCmp(8, p.MAC, expr.CmpOpNeq), dropIt)
	for _, a := range v4 {
		b := a.As4()
		add("arp-"+a.String(), arp, nhCmp(14, b[:], expr.CmpOpEq), pass)
		add("arp-probe-"+a.String(), arp, nhCmp(14, []byte{0, 0, 0, 0}, expr.CmpOpEq), nhCmp(24, b[:], expr.CmpOpEq), pass)
	}
	add("arp", arp, dropIt)

	ip := etherType(unix.ETH_P_IP)
	add("dhcp-server", ip, l4(unix.IPPROTO_UDP), transportRange(0, 2, 67, 67), dropIt)
	for _, a := range v4 {
		b := a.As4()
		add("ip-"+a.String(), ip, nhCmp(12, b[:], expr.CmpOpEq), pass)
	}
	add("dhcp-client", ip, nhCmp(12, []byte{0, 0, 0, 0}, expr.CmpOpEq), l4(unix.IPPROTO_UDP), transportRange(2, 2, 67, 67), pass)
	add("ip", ip, dropIt)

	ip6 := etherType(unix.ETH_P_IPV6)
	icmp6 := func(typ uint16) []expr.Any { return cat(l4(unix.IPPROTO_ICMPV6), transportRange(0, 1, typ, typ)) }
	add("dhcp6-server", ip6, l4(unix.IPPROTO_UDP), transportRange(0, 2, 547, 547), dropIt)
	add("ra", ip6, icmp6(134), dropIt)
	add("redirect", ip6, icmp6(137), dropIt)
	unspecified := make([]byte, 16)
	for _, t := range v6 {
		b := t.As16()
		add("dad-"+t.String(), ip6, nhCmp(8, unspecified, expr.CmpOpEq), icmp6(135), transportCmp(8, b[:]), pass)
	}
	add("mld-dad", ip6, nhCmp(8, unspecified, expr.CmpOpEq), icmp6(143), pass)
	add("rs-unspecified", ip6, nhCmp(8, unspecified, expr.CmpOpEq), icmp6(133), pass)
	for _, s := range v6 {
		sb := s.As16()
		src := nhCmp(8, sb[:], expr.CmpOpEq)
		for _, t := range v6 {
			tb := t.As16()
			add("na-"+s.String()+"-"+t.String(), ip6, src, icmp6(136), transportCmp(8, tb[:]), pass)
		}
		add("na-"+s.String(), ip6, src, icmp6(136), dropIt)
		add("ip6-"+s.String(), ip6, src, pass)
	}
	add("ip6", ip6, dropIt)
	add("other", dropIt)
	return rules
}

// LinkLocal is the IPv6 link-local address a NIC with this MAC makes for
// itself (modified EUI-64, RFC 4291): the only link-local address its
// port lets it use.
func LinkLocal(mac net.HardwareAddr) netip.Addr {
	var b [16]byte
	b[0], b[1] = 0xfe, 0x80
	if len(mac) == 6 {
		b[8], b[9], b[10] = mac[0]^2, mac[1], mac[2]
		b[11], b[12] = 0xff, 0xfe
		b[13], b[14], b[15] = mac[3], mac[4], mac[5]
	}
	return netip.AddrFrom16(b)
}

func etherAddrCmp(offset uint32, mac net.HardwareAddr, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: offset, Len: 6},
		&expr.Cmp{Op: op, Register: 1, Data: []byte(mac)},
	}
}

// nhCmp compares bytes of the network header (ARP, IPv4, IPv6).
func nhCmp(offset uint32, b []byte, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(len(b))},
		&expr.Cmp{Op: op, Register: 1, Data: slices.Clone(b)},
	}
}

func transportCmp(offset uint32, b []byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: uint32(len(b))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: slices.Clone(b)},
	}
}

// portChainVNI parses a port chain's name.
func portChainVNI(name string) (uint32, bool) {
	rest, ok := strings.CutPrefix(name, "port-")
	if !ok {
		return 0, false
	}
	v, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	return parseVNI(v)
}
