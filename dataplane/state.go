package dataplane

import (
	"bytes"
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// HostState is the whole desired network state of one host. The agent
// computes it from the API and hands it to Plane.Apply, every time in
// full: what it does not name is removed.
type HostState struct {
	// Underlay is what VXLAN rides on.
	Underlay Underlay
	// Networks this host carries: the tenant networks with a VM here.
	Networks []Network
	// AddressGroups are the address sets security rules name (remote
	// security groups): SecurityRule.Group is one of their names.
	AddressGroups []AddressGroup
}

// Underlay is the host's link to the other hosts.
type Underlay struct {
	// Device is the link the underlay address is on. VXLAN devices are
	// bound to it, so their MTU follows its MTU less the encapsulation.
	Device string
	// Address is this host's VTEP address: the source of its VXLAN
	// packets, and what the other hosts list in Network.Peers.
	Address netip.Addr
}

// Network is one tenant network as this host carries it.
type Network struct {
	// Name is for messages only (tenant/network).
	Name string
	// VNI is the network's VXLAN identifier, unique in the cluster; it
	// names the network's devices and namespace on the host.
	VNI uint32
	// MTU inside the network, on the bridge, the VXLAN device, the taps
	// and the router. Zero means the underlay's MTU less the VXLAN
	// overhead (50 bytes over IPv4, 70 over IPv6).
	MTU int
	// Peers are the underlay addresses of the other hosts that carry the
	// network. Broadcast, unknown unicast and multicast go to each of
	// them (head-end replication, no multicast underlay), and only to
	// them.
	Peers []netip.Addr
	// Subnets of the network. The router holds the gateway of each and
	// routes between them.
	Subnets []Subnet
	// Ports are the network's NICs on this host.
	Ports []Port
	// Remote are the network's NICs on the other hosts. The VXLAN
	// forwarding table sends each MAC straight to its host, and the
	// router knows each address's MAC without asking: routers on
	// different hosts share the gateway's addresses, so an ARP reply
	// would go to the wrong host's router.
	Remote []RemotePort
	// External, when set, routes the network out: SNAT to the host's
	// address on an external network.
	External *External
	// FloatingIPs of ports on this host: external addresses that DNAT to a
	// port's address, and that the port's outgoing traffic leaves from.
	FloatingIPs []FloatingIP
}

// Subnet is an IP range of a network.
type Subnet struct {
	CIDR netip.Prefix
	// Gateway is the router's address in CIDR; the same on every host.
	Gateway netip.Addr
}

// Port is a NIC on this host: a tap device QEMU opens by name
// (-netdev tap,ifname=NAME,script=no,downscript=no).
type Port struct {
	// Name of the host device; PortName makes one.
	Name string
	// MAC of the guest's NIC.
	MAC net.HardwareAddr
	// Addresses the NIC has in the network's subnets.
	Addresses []netip.Addr
	// Veth, when set, makes the port a veth pair instead of a tap: Name on
	// the bridge, the other end in another namespace. Tests and
	// benchmarks use it for "VMs" that are namespaces: a tap carries no
	// frames until a process holds it open.
	Veth *VethPeer
	// Security, when set, filters the port's traffic (its security
	// groups; secgroups.go). Nil leaves it unfiltered: anti-spoofing
	// applies to every port regardless.
	Security *PortSecurity
}

// VethPeer is the far end of a veth port.
type VethPeer struct {
	// Netns is the path of the namespace it goes to (/run/netns/NAME,
	// /proc/PID/ns/net).
	Netns string
	// Name inside that namespace (default eth0). It gets the port's MAC.
	Name string
}

// RemotePort is a NIC of the network on another host.
type RemotePort struct {
	// Host is the underlay address of the host it is on; one of Peers.
	Host      netip.Addr
	MAC       net.HardwareAddr
	Addresses []netip.Addr
}

// External is a network's way out, on this host.
type External struct {
	// Device is the host's link to the external network: a bridge the
	// router's external leg is plugged into.
	Device string
	// Address is this host's address for the network on the external
	// side, with the external network's prefix length. Traffic without a
	// floating IP leaves from it.
	Address netip.Prefix
	// Gateway is the external network's router: the router's default
	// route.
	Gateway netip.Addr
	// IPv6, when set, is the network's IPv6 way out, never NATed.
	IPv6 *ExternalIPv6
}

// ExternalIPv6 is a network's IPv6 way out: routed with the ports' own
// addresses. A distributed router has no one next hop for a subnet, so
// each host's router answers neighbour solicitations on the external
// link for the addresses of its own ports in Routed (NDP proxy): the
// outside router, which treats the delegated prefix as on-link, sends
// each address's traffic to the host its VM runs on.
type ExternalIPv6 struct {
	// Address is the router's on the external link, with the link's
	// prefix length (the agent makes it the EUI-64 of ExternalMAC).
	Address netip.Prefix
	// Gateway is the outside router, on the link or link-local: the
	// router's IPv6 default route.
	Gateway netip.Addr
	// Routed are the network's IPv6 subnets reachable from the external
	// network: the router proxies its ports' addresses in them, forwards
	// new connections to them from outside (the ports' security groups
	// still decide) and lets their traffic out unchanged. Any other IPv6
	// between the network and the external link is dropped.
	Routed []netip.Prefix
}

// FloatingIP maps an external address to the address of a port on this
// host.
type FloatingIP struct {
	External netip.Addr
	Internal netip.Addr
}

// FieldError is one thing wrong with a HostState, at a field path such as
// networks[2].ports[0].mac.
type FieldError struct {
	Field  string
	Detail string
}

func (e FieldError) Error() string { return e.Field + ": " + e.Detail }

// FieldErrors is every problem found in a HostState. Apply returns it
// (and changes nothing) when the state is invalid.
type FieldErrors []FieldError

func (es FieldErrors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return "invalid host network state: " + strings.Join(parts, "; ")
}

func (es *FieldErrors) add(field, format string, args ...any) {
	*es = append(*es, FieldError{Field: field, Detail: fmt.Sprintf(format, args...)})
}

func (es FieldErrors) err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// Validate checks s on its own, without looking at the host: every
// problem, with its field path. Apply also checks what needs the host
// (the underlay's MTU, that external devices exist).
func (s *HostState) Validate() error {
	var es FieldErrors
	if err := validLinkName(s.Underlay.Device); err != "" {
		es.add("underlay.device", "%s", err)
	}
	ua := s.Underlay.Address
	switch {
	case !ua.IsValid():
		es.add("underlay.address", "is required")
	case !ua.IsGlobalUnicast() && !ua.IsPrivate():
		es.add("underlay.address", "%s is not a unicast address", ua)
	}
	vnis := map[uint32]int{}
	ports := map[string]string{}
	externals := map[netip.Addr]string{}
	type routedRef struct {
		prefix netip.Prefix
		path   string
	}
	var routed []routedRef
	for i := range s.Networks {
		n := &s.Networks[i]
		np := "networks[" + strconv.Itoa(i) + "]"
		if n.Name == "" {
			es.add(np+".name", "is required")
		}
		switch {
		case n.VNI == 0 || n.VNI > MaxVNI:
			es.add(np+".vni", "%d is out of range (1 to %d)", n.VNI, MaxVNI)
		default:
			if j, dup := vnis[n.VNI]; dup {
				es.add(np+".vni", "%d is already used by networks[%d]", n.VNI, j)
			}
			vnis[n.VNI] = i
		}
		if n.MTU != 0 && (n.MTU < minMTU || n.MTU > maxMTU) {
			es.add(np+".mtu", "%d is out of range (%d to %d, or 0 for the underlay's less the VXLAN overhead)", n.MTU, minMTU, maxMTU)
		}
		es = append(es, n.validate(np, ua, ports, externals)...)
		if x := n.External; x != nil && x.IPv6 != nil {
			for j, r := range x.IPv6.Routed {
				for _, o := range routed {
					if r.IsValid() && o.prefix.Overlaps(r) {
						es.add(index(np+".external.ipv6.routed", j), "%s overlaps %s, routed by %s: two routers would answer for one address", r, o.prefix, o.path)
					}
				}
				routed = append(routed, routedRef{r, index(np+".external.ipv6.routed", j)})
			}
		}
	}
	es = append(es, s.validateSecurity()...)
	return es.err()
}

func (n *Network) validate(np string, underlay netip.Addr, ports map[string]string, externals map[netip.Addr]string) FieldErrors {
	var es FieldErrors
	peers := map[netip.Addr]bool{}
	for j, p := range n.Peers {
		pp := index(np+".peers", j)
		switch {
		case !p.IsValid():
			es.add(pp, "is not an address")
		case underlay.IsValid() && p.Is4() != underlay.Is4():
			es.add(pp, "%s is not of the underlay address's family", p)
		case p == underlay:
			es.add(pp, "%s is this host's own underlay address", p)
		case peers[p]:
			es.add(pp, "%s is listed twice", p)
		}
		peers[p] = true
	}

	gateways := map[netip.Addr]bool{}
	for j, sn := range n.Subnets {
		sp := index(np+".subnets", j)
		if !sn.CIDR.IsValid() {
			es.add(sp+".cidr", "is required")
			continue
		}
		if sn.CIDR.Masked() != sn.CIDR {
			es.add(sp+".cidr", "%s has host bits set (the network is %s)", sn.CIDR, sn.CIDR.Masked())
		}
		if sn.CIDR.Addr().Is4() && sn.CIDR.Bits() > 30 || sn.CIDR.Addr().Is6() && sn.CIDR.Bits() > 126 {
			es.add(sp+".cidr", "%s leaves no room for a gateway and a NIC", sn.CIDR)
		}
		for k := range j {
			if o := n.Subnets[k].CIDR; o.IsValid() && o.Overlaps(sn.CIDR) {
				es.add(sp+".cidr", "%s overlaps subnets[%d] (%s)", sn.CIDR, k, o)
			}
		}
		switch {
		case !sn.Gateway.IsValid():
			es.add(sp+".gateway", "is required")
		case !sn.CIDR.Contains(sn.Gateway):
			es.add(sp+".gateway", "%s is outside %s", sn.Gateway, sn.CIDR)
		case reservedIn(sn.CIDR, sn.Gateway):
			es.add(sp+".gateway", "%s is the network or broadcast address of %s", sn.Gateway, sn.CIDR)
		}
		gateways[sn.Gateway] = true
	}

	// Paths are made only for errors (and kept as the kind and index of
	// the NIC first using a MAC or address): a host may have a thousand
	// NICs, and Apply validates every time.
	type nicRef struct {
		kind string
		i    int
	}
	macs := map[[6]byte]nicRef{}
	addrs := map[netip.Addr]nicRef{}
	checkNIC := func(kind string, i int, mac net.HardwareAddr, as []netip.Addr) {
		path := func() string { return index(np+"."+kind, i) }
		ref := nicRef{kind, i}
		if msg := validNICMAC(mac, n.VNI); msg != "" {
			es.add(path()+".mac", "%s", msg)
		} else if o, dup := macs[[6]byte(mac)]; dup {
			es.add(path()+".mac", "%s is already used by %s", mac, index(np+"."+o.kind, o.i))
		} else {
			macs[[6]byte(mac)] = ref
		}
		for k, a := range as {
			ap := func() string { return index(path()+".addresses", k) }
			if !a.IsValid() {
				es.add(ap(), "is not an address")
				continue
			}
			var in *Subnet
			for s := range n.Subnets {
				if n.Subnets[s].CIDR.Contains(a) {
					in = &n.Subnets[s]
				}
			}
			switch {
			case in == nil:
				es.add(ap(), "%s is in none of the network's subnets", a)
			case gateways[a]:
				es.add(ap(), "%s is the gateway's address", a)
			case reservedIn(in.CIDR, a):
				es.add(ap(), "%s is the network or broadcast address of %s", a, in.CIDR)
			default:
				if o, dup := addrs[a]; dup {
					es.add(ap(), "%s is already used by %s", a, index(np+"."+o.kind, o.i))
				}
				addrs[a] = ref
			}
		}
	}
	local := map[netip.Addr]bool{}
	for j, p := range n.Ports {
		pp := index(np+".ports", j)
		if !IsPortName(p.Name) {
			es.add(pp+".name", "%q is not a port device name (make one with dataplane.PortName)", p.Name)
		} else if o, dup := ports[p.Name]; dup {
			es.add(pp+".name", "%s is already used by %s", p.Name, o)
		} else {
			ports[p.Name] = pp
		}
		checkNIC("ports", j, p.MAC, p.Addresses)
		for _, a := range p.Addresses {
			local[a] = true
		}
		if p.Veth != nil {
			if !filepath.IsAbs(p.Veth.Netns) {
				es.add(pp+".veth.netns", "%q is not the absolute path of a network namespace", p.Veth.Netns)
			}
			if p.Veth.Name != "" {
				if msg := validLinkName(p.Veth.Name); msg != "" {
					es.add(pp+".veth.name", "%s", msg)
				}
			}
		}
	}
	for j, r := range n.Remote {
		rp := index(np+".remote", j)
		if !peers[r.Host] {
			es.add(rp+".host", "%v is not one of peers: the network's frames would go to a host that does not carry it", r.Host)
		}
		checkNIC("remote", j, r.MAC, r.Addresses)
	}

	if x := n.External; x != nil {
		xp := np + ".external"
		if msg := validLinkName(x.Device); msg != "" {
			es.add(xp+".device", "%s", msg)
		} else if _, _, ours := ownedLink(x.Device); ours {
			es.add(xp+".device", "%s is a device Hearth makes, not the host's link to an external network", x.Device)
		}
		switch {
		case !x.Address.IsValid():
			es.add(xp+".address", "is required (an address with the external network's prefix length)")
		case !x.Address.Addr().Is4():
			es.add(xp+".address", "%s: only IPv4 external networks are supported", x.Address)
		case reservedIn(x.Address.Masked(), x.Address.Addr()):
			es.add(xp+".address", "%s is the network or broadcast address of its prefix", x.Address)
		default:
			if o, dup := externals[x.Address.Addr()]; dup {
				es.add(xp+".address", "%s is already used by %s", x.Address.Addr(), o)
			}
			externals[x.Address.Addr()] = xp + ".address"
		}
		switch {
		case !x.Gateway.IsValid():
			es.add(xp+".gateway", "is required")
		case x.Address.IsValid() && !x.Address.Contains(x.Gateway):
			es.add(xp+".gateway", "%s is outside %s", x.Gateway, x.Address.Masked())
		case x.Gateway == x.Address.Addr():
			es.add(xp+".gateway", "%s is the network's own external address", x.Gateway)
		}
		if x.IPv6 != nil {
			es = append(es, n.validateExternal6(xp+".ipv6")...)
		}
	}
	internals := map[netip.Addr]int{}
	for j, f := range n.FloatingIPs {
		fp := index(np+".floatingIPs", j)
		if n.External == nil {
			es.add(fp, "needs external: a floating IP lives on the router's external leg")
			continue
		}
		x := n.External
		switch {
		case !f.External.IsValid():
			es.add(fp+".external", "is required")
		case !f.External.Is4():
			es.add(fp+".external", "%s: only IPv4 floating IPs are supported", f.External)
		case x.Address.IsValid() && !x.Address.Contains(f.External):
			es.add(fp+".external", "%s is outside the external network %s", f.External, x.Address.Masked())
		case f.External == x.Address.Addr() || f.External == x.Gateway || reservedIn(x.Address.Masked(), f.External):
			es.add(fp+".external", "%s is the external address, gateway, network or broadcast address", f.External)
		default:
			if o, dup := externals[f.External]; dup {
				es.add(fp+".external", "%s is already used by %s", f.External, o)
			}
			externals[f.External] = fp + ".external"
		}
		switch {
		case !f.Internal.IsValid():
			es.add(fp+".internal", "is required")
		case !f.Internal.Is4():
			es.add(fp+".internal", "%s: only IPv4 floating IPs are supported", f.Internal)
		case !local[f.Internal]:
			es.add(fp+".internal", "%s is not an address of a port on this host", f.Internal)
		default:
			if k, dup := internals[f.Internal]; dup {
				es.add(fp+".internal", "%s already has floatingIPs[%d]", f.Internal, k)
			}
			internals[f.Internal] = j
		}
	}
	return es
}

func (n *Network) validateExternal6(xp string) FieldErrors {
	var es FieldErrors
	x := n.External.IPv6
	a := x.Address.Addr()
	link := x.Address.IsValid() && a.Is6() && !a.Is4In6() && x.Address.Bits() <= 126 && a.IsGlobalUnicast() && !reservedIn(x.Address, a)
	if !link {
		es.add(xp+".address", "%v is not a unicast IPv6 address with its link's prefix length", x.Address)
	}
	switch g := x.Gateway; {
	case !g.IsValid() || !g.Is6() || g.Is4In6():
		es.add(xp+".gateway", "%v is not an IPv6 address", g)
	case link && g == a:
		es.add(xp+".gateway", "%s is the router's own address", g)
	case link && !x.Address.Contains(g) && !g.IsLinkLocalUnicast():
		es.add(xp+".gateway", "%s is neither in %s nor link-local", g, x.Address.Masked())
	}
	for j, r := range x.Routed {
		rp := index(xp+".routed", j)
		if !slices.ContainsFunc(n.Subnets, func(s Subnet) bool { return s.CIDR == r && r.Addr().Is6() }) {
			es.add(rp, "%v is not one of the network's IPv6 subnets", r)
		}
		if link && r.Overlaps(x.Address.Masked()) {
			es.add(rp, "%s overlaps the external link %s", r, x.Address.Masked())
		}
	}
	return es
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// reservedIn reports whether a is the network address of an IPv4 prefix
// (or the subnet-router anycast address of an IPv6 one) or its IPv4
// broadcast address.
func reservedIn(p netip.Prefix, a netip.Addr) bool {
	p = p.Masked()
	if a == p.Addr() {
		return true
	}
	if !a.Is4() || p.Bits() >= 31 {
		return false
	}
	return a == lastAddr(p)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		host := p.Bits() - i*8
		switch {
		case host <= 0:
			b[i] = 0xff
		case host < 8:
			b[i] |= 0xff >> host
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func validNICMAC(mac net.HardwareAddr, vni uint32) string {
	switch {
	case len(mac) == 0:
		return "is required"
	case len(mac) != 6:
		return fmt.Sprintf("%s is not a 6-byte Ethernet address", mac)
	case mac[0]&1 == 1:
		return fmt.Sprintf("%s is a multicast address", mac)
	case bytes.Equal(mac, make(net.HardwareAddr, 6)):
		return "00:00:00:00:00:00 is not a NIC's address"
	case reservedMAC(mac):
		return fmt.Sprintf("%s is in a range Hearth keeps for its routers and bridges (%s)", mac, reservedMACRanges)
	}
	return ""
}

func validLinkName(name string) string {
	switch {
	case name == "":
		return "is required"
	case len(name) > maxLinkName:
		return fmt.Sprintf("%q is longer than %d characters", name, maxLinkName)
	case name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\x00"):
		return fmt.Sprintf("%q is not a link name", name)
	}
	return ""
}

// normalized returns a copy of s in a canonical order, so two states that
// mean the same compare equal (and a Plane can tell what changed), with
// each network's MTU filled in from the underlay's.
func (s *HostState) normalized(underlayMTU int) HostState {
	out := HostState{Underlay: s.Underlay, Networks: make([]Network, len(s.Networks))}
	out.AddressGroups = slices.Clone(s.AddressGroups)
	for i := range out.AddressGroups {
		out.AddressGroups[i].Addresses = sortedAddrs(out.AddressGroups[i].Addresses)
	}
	slices.SortFunc(out.AddressGroups, func(a, b AddressGroup) int { return strings.Compare(a.Name, b.Name) })
	for i, n := range s.Networks {
		out.Networks[i] = n.normalized(underlayMTU, s.Underlay.Address)
	}
	slices.SortFunc(out.Networks, func(a, b Network) int { return cmp.Compare(a.VNI, b.VNI) })
	return out
}

func (n Network) normalized(underlayMTU int, underlay netip.Addr) Network {
	if n.MTU == 0 {
		n.MTU = underlayMTU - vxlanOverhead(underlay)
	}
	n.Peers = sortedAddrs(n.Peers)
	n.Subnets = slices.Clone(n.Subnets)
	slices.SortFunc(n.Subnets, func(a, b Subnet) int { return a.CIDR.Addr().Compare(b.CIDR.Addr()) })
	n.Ports = slices.Clone(n.Ports)
	for i := range n.Ports {
		p := &n.Ports[i]
		p.MAC = slices.Clone(p.MAC)
		p.Addresses = sortedAddrs(p.Addresses)
		if p.Veth != nil {
			v := *p.Veth
			if v.Name == "" {
				v.Name = "eth0"
			}
			p.Veth = &v
		}
		if p.Security != nil {
			sec := PortSecurity{Ingress: slices.Clone(p.Security.Ingress), Egress: slices.Clone(p.Security.Egress)}
			p.Security = &sec
		}
	}
	slices.SortFunc(n.Ports, func(a, b Port) int { return strings.Compare(a.Name, b.Name) })
	n.Remote = slices.Clone(n.Remote)
	for i := range n.Remote {
		r := &n.Remote[i]
		r.MAC = slices.Clone(r.MAC)
		r.Addresses = sortedAddrs(r.Addresses)
	}
	slices.SortFunc(n.Remote, func(a, b RemotePort) int { return bytes.Compare(a.MAC, b.MAC) })
	if n.External != nil {
		x := *n.External
		if x.IPv6 != nil {
			x6 := *x.IPv6
			x6.Routed = slices.Clone(x6.Routed)
			slices.SortFunc(x6.Routed, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
			if len(x6.Routed) == 0 {
				x6.Routed = nil
			}
			x.IPv6 = &x6
		}
		n.External = &x
	}
	n.FloatingIPs = slices.Clone(n.FloatingIPs)
	slices.SortFunc(n.FloatingIPs, func(a, b FloatingIP) int { return a.External.Compare(b.External) })
	if len(n.Peers) == 0 {
		n.Peers = nil
	}
	if len(n.Subnets) == 0 {
		n.Subnets = nil
	}
	if len(n.Ports) == 0 {
		n.Ports = nil
	}
	if len(n.Remote) == 0 {
		n.Remote = nil
	}
	if len(n.FloatingIPs) == 0 {
		n.FloatingIPs = nil
	}
	return n
}

func sortedAddrs(as []netip.Addr) []netip.Addr {
	if len(as) == 0 {
		return nil
	}
	as = slices.Clone(as)
	slices.SortFunc(as, netip.Addr.Compare)
	return as
}

func vxlanOverhead(underlay netip.Addr) int {
	if underlay.Is6() && !underlay.Is4In6() {
		return vxlanOverhead6
	}
	return vxlanOverhead4
}
