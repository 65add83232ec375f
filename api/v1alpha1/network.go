package v1alpha1

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Network is a tenant's layer-2 network that spans hosts over VXLAN. Its
// subnets are routed to each other by the network's router.
type Network = Resource[NetworkSpec, NetworkStatus]

type NetworkSpec struct {
	// Description is free text for people.
	Description string `json:"description,omitempty"`
	// MTU inside the network. Default 1450: a 1500-byte underlay less the
	// 50 bytes of VXLAN encapsulation.
	MTU int `json:"mtu,omitempty"`
	// ExternalNetwork, when set, gives the network a route out: SNAT for
	// its VMs and floating IPs from that external network.
	ExternalNetwork string `json:"externalNetwork,omitempty"`
	// DNSDomain is the domain VM names resolve under, and the search
	// domain DHCP hands out (default NETWORK.TENANT.hearth). Hearth's DNS
	// on the network's gateways answers it from the network's own VMs and
	// floating IPs only.
	DNSDomain string `json:"dnsDomain,omitempty"`
}

// NetworkStatus is what hosts need to carry the network, published by the
// server: the VNI (allocated with the network), and from the placements of
// its VMs the hosts that carry it, every NIC on it and every host's router.
// A host's underlay address is its Host's spec.address.
type NetworkStatus struct {
	CommonStatus `json:",inline"`
	// VNI is the VXLAN network identifier the server allocated.
	VNI int `json:"vni,omitempty"`
	// Hosts carrying the network (they have a VM on it), sorted.
	Hosts []string `json:"hosts,omitempty"`
	// Ports are the NICs on the network of VMs placed on a host, sorted by
	// VM and NIC: where each is and its addresses, so every host knows the
	// others' NICs without asking.
	Ports []NetworkPort `json:"ports,omitempty"`
	// Routers are the network's router on each host of Hosts, with the
	// host's address on the external network when the network names one.
	Routers []NetworkRouter `json:"routers,omitempty"`
}

// NetworkPort is a NIC of a VM on the network.
type NetworkPort struct {
	// VM names the VirtualMachine (same tenant).
	VM string `json:"vm"`
	// NIC is the index of the NIC in the VM's spec.nics.
	NIC int `json:"nic"`
	// Host runs the VM.
	Host string `json:"host"`
	// MAC is the NIC's Ethernet address.
	MAC string `json:"mac"`
	// IPs are the NIC's addresses.
	IPs []string `json:"ips,omitempty"`
	// SecurityGroups are the NIC's (spec.nics[i].securityGroups of its
	// VM): every host learns from them which addresses a remote group
	// has.
	SecurityGroups []string `json:"securityGroups,omitempty"`
}

// NetworkRouter is the network's router on one host. Every host that
// carries a network routes its own VMs' traffic, with the same gateway
// addresses on every host.
type NetworkRouter struct {
	// Host the router is on.
	Host string `json:"host"`
	// ExternalAddress is the host's address on the network's external
	// network, which the VMs' traffic out is SNATed to. The server
	// allocates it from the external network's range when the router
	// appears and releases it when the host stops carrying the network;
	// empty while the network names no external network (or one that does
	// not exist, serves another site, or has no free address: the Routed
	// condition says which).
	ExternalAddress string `json:"externalAddress,omitempty"`
}

// ConditionRouted says whether a network that names an external network
// has an address on it for every host's router.
const ConditionRouted = "Routed"

// Validate checks what a status writer sends: the server derives the
// allocated fields itself.
func (s *NetworkStatus) Validate(path string) FieldErrors {
	var es FieldErrors
	for i, p := range s.Ports {
		pp := fmt.Sprintf("%s.ports[%d]", path, i)
		es = append(es, ValidateName(pp+".vm", p.VM)...)
		es = append(es, ValidateName(pp+".host", p.Host)...)
		if p.NIC < 0 {
			es.Add(pp+".nic", "%d is negative", p.NIC)
		}
		_, e := ValidateMAC(pp+".mac", p.MAC)
		es = append(es, e...)
		for j, ip := range p.IPs {
			_, e := ValidateIP(fmt.Sprintf("%s.ips[%d]", pp, j), ip)
			es = append(es, e...)
		}
		for j, g := range p.SecurityGroups {
			es = append(es, ValidateName(fmt.Sprintf("%s.securityGroups[%d]", pp, j), g)...)
		}
	}
	for i, r := range s.Routers {
		rp := fmt.Sprintf("%s.routers[%d]", path, i)
		es = append(es, ValidateName(rp+".host", r.Host)...)
		if r.ExternalAddress != "" {
			_, e := ValidateIP(rp+".externalAddress", r.ExternalAddress)
			es = append(es, e...)
		}
	}
	return es
}

// ReservedMACRanges are the Ethernet addresses Hearth's data plane gives
// its own devices (gateways, bridges, routed frames; see package
// dataplane): no NIC may use them.
const ReservedMACRanges = "02:68:62, 02:68:67 and 06:68"

// ReservedMAC reports whether mac (lowercase, colon form) is in
// ReservedMACRanges.
func ReservedMAC(mac string) bool {
	return strings.HasPrefix(mac, "02:68:62:") || strings.HasPrefix(mac, "02:68:67:") || strings.HasPrefix(mac, "06:68:")
}

// AddressRange is the first and last address of prefix p that Hearth
// picks addresses from: start and end where they are set inside p, else
// the prefix less its network address and, for IPv4, its broadcast
// address. The gateway may fall inside: see Reserved.
func AddressRange(p netip.Prefix, start, end string) (first, last netip.Addr) {
	p = p.Masked()
	first, last = p.Addr().Next(), LastAddr(p)
	if p.Addr().Is4() && p.Bits() < 31 {
		last = last.Prev()
	}
	if a, err := netip.ParseAddr(start); err == nil && p.Contains(a) && first.Less(a) {
		first = a
	}
	if a, err := netip.ParseAddr(end); err == nil && p.Contains(a) && a.Less(last) {
		last = a
	}
	return first, last
}

// Reserved reports whether a is an address of prefix p that no NIC,
// router or floating IP may take: the network address, the IPv4
// broadcast address, or the gateway.
func Reserved(p netip.Prefix, gateway string, a netip.Addr) bool {
	p = p.Masked()
	if a == p.Addr() {
		return true
	}
	if g, err := netip.ParseAddr(gateway); err == nil && g == a {
		return true
	}
	return a.Is4() && p.Bits() < 31 && a == LastAddr(p)
}

// RangeSize is the number of addresses from first to last (0 if last is
// before first), at most MaxRangeSize.
func RangeSize(first, last netip.Addr) int {
	const most = MaxRangeSize
	if !first.IsValid() || !last.IsValid() || last.Less(first) || first.Is4() != last.Is4() {
		return 0
	}
	f, l := first.As16(), last.As16()
	if [8]byte(f[:8]) != [8]byte(l[:8]) {
		return most
	}
	d := binary.BigEndian.Uint64(l[8:]) - binary.BigEndian.Uint64(f[8:])
	if d >= uint64(most) {
		return most
	}
	return int(d) + 1
}

// MaxRangeSize is the most RangeSize counts (an IPv6 /64 has far more):
// 2^53-1, the largest integer a JSON number keeps exactly, so a count
// in a status reads back as the integer it is wherever it is decoded.
const MaxRangeSize = 1<<53 - 1

// LastAddr is the last address of prefix p.
func LastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		switch host := p.Bits() - i*8; {
		case host <= 0:
			b[i] = 0xff
		case host < 8:
			b[i] |= 0xff >> host
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// NetworkDomain is the domain a network's VMs resolve under: its
// spec.dnsDomain (lowercase, without a final dot), else
// NETWORK.TENANT.hearth.
func NetworkDomain(n *Network) string {
	if n.Spec.DNSDomain != "" {
		return strings.TrimSuffix(strings.ToLower(n.Spec.DNSDomain), ".")
	}
	return n.Metadata.Name + "." + n.Metadata.Tenant + ".hearth"
}

func (s *NetworkSpec) Default() {
	if s.MTU == 0 {
		s.MTU = 1450
	}
}

func (s *NetworkSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	if s.MTU < 576 || s.MTU > 9000 {
		es.Add(path+".mtu", "%d is out of range (576 to 9000)", s.MTU)
	}
	if s.ExternalNetwork != "" {
		es = append(es, ValidateName(path+".externalNetwork", s.ExternalNetwork)...)
	}
	if s.DNSDomain != "" {
		es = append(es, ValidateHostname(path+".dnsDomain", strings.TrimSuffix(s.DNSDomain, "."))...)
	}
	return es
}

func init() {
	register[NetworkSpec, NetworkStatus](KindInfo{
		Kind: "Network", Plural: "networks", ShortNames: []string{"network", "net"}, Scope: TenantScoped,
		Description: "A tenant's layer-2 network spanning hosts over VXLAN.",
		Columns: []Column{
			{Name: "VNI", Get: func(o Object) string {
				if v := o.(*Network).Status.VNI; v != 0 {
					return strconv.Itoa(v)
				}
				return ""
			}},
			{Name: "MTU", Get: func(o Object) string { return strconv.Itoa(o.(*Network).Spec.MTU) }},
			{Name: "EXTERNAL", Get: func(o Object) string { return o.(*Network).Spec.ExternalNetwork }},
			{Name: "HOSTS", Wide: true, Get: func(o Object) string { return strconv.Itoa(len(o.(*Network).Status.Hosts)) }},
			{Name: "PORTS", Wide: true, Get: func(o Object) string { return strconv.Itoa(len(o.(*Network).Status.Ports)) }},
			{Name: "DOMAIN", Wide: true, Get: func(o Object) string { return NetworkDomain(o.(*Network)) }},
		},
	})
}
