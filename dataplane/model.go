package dataplane

import (
	"net"
	"net/netip"
	"strconv"
)

// netModel is everything one network puts on a host, in a form that both
// the desired state (model) and a reading of the kernel (observe) take,
// so converging is comparing the two and making the differences. A Plane
// keeps the model of each network it last converged: while nothing says
// the host drifted, that model stands in for a reading, and a change
// costs only what changed.
type netModel struct {
	// links in the host namespace, by name.
	links map[string]linkModel
	// fdb is the VXLAN device's forwarding table (only entries with a
	// remote VTEP).
	fdb map[fdbEntry]bool
	// gwFDB: the gateway MAC is pinned, static and sticky, to the
	// router's port on the bridge.
	gwFDB bool
	// l2Rules are the ids of the network's chains, rules and map
	// elements in hostTable (l2IDs); nil when it has none.
	l2Rules []string
	router  routerModel
	// ipv6Off are the host links with IPv6 disabled (sysctl).
	ipv6Off map[string]bool
}

type linkModel struct {
	kind   string // netlink's type: bridge, vxlan, veth, tuntap, …
	mtu    int
	master string
	up     bool
	mac    string // compared only when the desired model sets it
	vxlan  vxlanModel
	// Observed only (not compared): the ifindex, and a veth's peer's.
	index, peerIndex int
}

type vxlanModel struct {
	vni, port, dev int
	local          string
	learning       bool
}

type fdbEntry struct {
	mac string
	dst netip.Addr
}

type routerModel struct {
	exists  bool
	links   map[string]linkModel
	addrs   map[addrKey]bool
	routes  map[string]string  // destination → "via GATEWAY dev LINK"
	neigh   map[addrKey]string // link/IP → MAC (permanent entries)
	sysctls map[string]string
	rules   []string // rule ids of the router table, nil when absent
	// proxy are the IPv6 addresses the external leg answers neighbour
	// solicitations for (NDP proxy): the routed ports' on this host.
	proxy map[string]bool
}

type addrKey struct {
	link   string
	prefix string // an address with prefix length (addrs) or an IP (neigh)
}

// Router namespace sysctls. Forwarding on; no ICMP redirects (gateways
// of different subnets share the internal leg, so the kernel would
// redirect VMs to hosts they cannot reach directly); ARP answered only
// for the leg's own addresses, so the external leg never advertises the
// gateways to the external network; strict reverse path filtering.
var routerSysctls = map[string]string{
	"net/ipv4/ip_forward":                               "1",
	"net/ipv6/conf/all/forwarding":                      "1",
	"net/ipv4/conf/all/send_redirects":                  "0",
	"net/ipv4/conf/default/send_redirects":              "0",
	"net/ipv4/conf/" + internalLink + "/send_redirects": "0",
	"net/ipv4/conf/all/arp_ignore":                      "1",
	"net/ipv4/conf/all/arp_announce":                    "2",
	"net/ipv4/conf/all/rp_filter":                       "1",
}

// externalSysctls: the external leg speaks IPv4 only.
var externalSysctls = map[string]string{
	"net/ipv6/conf/" + externalLink + "/disable_ipv6": "1",
}

// external6Sysctls: an external leg with an IPv6 side has IPv6, takes
// nothing from the outside's router advertisements (its address and
// route are set), and answers at once for the addresses it proxies
// (the kernel otherwise delays proxied answers by up to 0.8 s).
var external6Sysctls = map[string]string{
	"net/ipv6/conf/" + externalLink + "/disable_ipv6": "0",
	"net/ipv6/conf/" + externalLink + "/accept_ra":    "0",
	"net/ipv6/conf/" + externalLink + "/autoconf":     "0",
	"net/ipv6/conf/" + externalLink + "/proxy_ndp":    "1",
	"net/ipv6/conf/" + externalLink + "/accept_dad":   "0",
	"net/ipv6/neigh/" + externalLink + "/proxy_delay": "0",
}

// model computes a network's desired model. n is normalized;
// underlayIndex is the underlay link's ifindex.
func (p *Linux) model(n *Network, underlay Underlay, underlayIndex, externalMTU int) *netModel {
	vni := n.VNI
	br := bridgeName(vni)
	m := &netModel{
		links:   map[string]linkModel{},
		fdb:     map[fdbEntry]bool{},
		gwFDB:   true,
		ipv6Off: map[string]bool{},
	}
	m.links[br] = linkModel{kind: kindBridge, mtu: n.MTU, up: true, mac: bridgeMAC(vni).String()}
	m.links[vxlanName(vni)] = linkModel{kind: kindVXLAN, mtu: n.MTU, master: br, up: true, vxlan: vxlanModel{
		vni: int(vni), port: p.cfg.VXLANPort, dev: underlayIndex, local: underlay.Address.String(),
	}}
	m.links[routerLink(vni)] = linkModel{kind: "veth", mtu: n.MTU, master: br, up: true}
	for _, port := range n.Ports {
		kind := "tuntap"
		if port.Veth != nil {
			kind = "veth"
		}
		m.links[port.Name] = linkModel{kind: kind, mtu: n.MTU, master: br, up: true}
	}
	if n.External != nil {
		m.links[externalLeg(vni)] = linkModel{kind: "veth", mtu: externalMTU, master: n.External.Device, up: true}
	}
	for name := range m.links {
		m.ipv6Off[name] = true
	}

	for _, peer := range n.Peers {
		m.fdb[fdbEntry{mac: zeroMAC, dst: peer}] = true
	}
	for _, r := range n.Remote {
		m.fdb[fdbEntry{mac: r.MAC.String(), dst: r.Host}] = true
	}
	m.l2Rules = l2IDs(n, underlay.Address)

	r := routerModel{
		exists:  true,
		links:   map[string]linkModel{},
		addrs:   map[addrKey]bool{},
		routes:  map[string]string{},
		neigh:   map[addrKey]string{},
		sysctls: map[string]string{},
	}
	for k, v := range routerSysctls {
		r.sysctls[k] = v
	}
	// A network without IPv6 subnets has no IPv6 on its router's leg:
	// no link-local address, neighbour discovery or MLD among the VMs.
	r.sysctls["net/ipv6/conf/"+internalLink+"/disable_ipv6"] = "1"
	for _, s := range n.Subnets {
		if s.CIDR.Addr().Is6() {
			r.sysctls["net/ipv6/conf/"+internalLink+"/disable_ipv6"] = "0"
		}
	}
	r.links["lo"] = linkModel{up: true}
	r.links[internalLink] = linkModel{kind: "veth", mtu: n.MTU, up: true, mac: GatewayMAC(vni).String()}
	for _, s := range n.Subnets {
		r.addrs[addrKey{internalLink, netip.PrefixFrom(s.Gateway, s.CIDR.Bits()).String()}] = true
	}
	r.addrs[addrKey{internalLink, netip.PrefixFrom(MetadataAddress, 32).String()}] = true
	ipv6 := r.sysctls["net/ipv6/conf/"+internalLink+"/disable_ipv6"] == "0"
	if ipv6 {
		// Metadata over IPv6, and every NIC's link-local address pinned
		// to its MAC, as its other addresses are: the router's answers
		// to a link-local asker reach that NIC only.
		r.addrs[addrKey{internalLink, netip.PrefixFrom(MetadataAddress6, 64).String()}] = true
	}
	nics := func(mac net.HardwareAddr, as []netip.Addr) {
		for _, a := range as {
			r.neigh[addrKey{internalLink, a.String()}] = mac.String()
		}
		if ipv6 {
			r.neigh[addrKey{internalLink, LinkLocal(mac).String()}] = mac.String()
		}
	}
	for _, port := range n.Ports {
		nics(port.MAC, port.Addresses)
	}
	for _, rp := range n.Remote {
		nics(rp.MAC, rp.Addresses)
	}
	if x := n.External; x != nil {
		for k, v := range externalSysctls {
			r.sysctls[k] = v
		}
		r.links[externalLink] = linkModel{kind: "veth", mtu: externalMTU, up: true, mac: externalMAC(underlay.Address, vni).String()}
		r.addrs[addrKey{externalLink, x.Address.String()}] = true
		for _, f := range n.FloatingIPs {
			r.addrs[addrKey{externalLink, netip.PrefixFrom(f.External, 32).String()}] = true
		}
		r.routes["0.0.0.0/0"] = routeValue(x.Gateway, externalLink)
		if x6 := x.IPv6; x6 != nil {
			for k, v := range external6Sysctls {
				r.sysctls[k] = v
			}
			r.addrs[addrKey{externalLink, x6.Address.String()}] = true
			r.routes["::/0"] = routeValue(x6.Gateway, externalLink)
			r.proxy = map[string]bool{}
			for _, port := range n.Ports {
				for _, a := range port.Addresses {
					if routed6(x6, a) {
						r.proxy[a.String()] = true
					}
				}
			}
		}
	}
	r.rules = ruleIDs(routerRules(n))
	m.router = r
	return m
}

const zeroMAC = "00:00:00:00:00:00"

// routed6 reports whether a port's address is reachable from outside.
func routed6(x6 *ExternalIPv6, a netip.Addr) bool {
	for _, p := range x6.Routed {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func routeValue(gw netip.Addr, link string) string {
	return "via " + gw.String() + " dev " + link
}

// linkNames lists the host links of a model in the order they are made:
// each after what it plugs into.
func (m *netModel) linkNames(vni uint32) []string {
	first := []string{bridgeName(vni), vxlanName(vni), routerLink(vni), externalLeg(vni)}
	names := make([]string, 0, len(m.links))
	for _, n := range first {
		if _, ok := m.links[n]; ok {
			names = append(names, n)
		}
	}
	var ports []string
	for n := range m.links {
		if _, kind, _ := ownedLink(n); kind == kindPort {
			ports = append(ports, n)
		}
	}
	sortStrings(ports)
	return append(names, ports...)
}

func vniString(vni uint32) string { return strconv.FormatUint(uint64(vni), 10) }
