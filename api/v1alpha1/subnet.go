package v1alpha1

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Subnet is an IP range on a Network, with its gateway on the network's
// router and Hearth's DHCP, DNS and metadata services. Tenants may use the
// same CIDRs as each other.
type Subnet = Resource[SubnetSpec, SubnetStatus]

type SubnetSpec struct {
	// Network is the name of the Network (same tenant) the subnet is on.
	Network string `json:"network"`
	// CIDR is the subnet's addresses ("10.0.1.0/24"); it must not overlap
	// another subnet of the same network. It cannot change.
	CIDR string `json:"cidr"`
	// Gateway defaults to the first address of the CIDR.
	Gateway string `json:"gateway,omitempty"`
	// DHCP configures the subnet's DHCP service (on by default).
	DHCP DHCP `json:"dhcp,omitempty"`
	// DNSServers handed out by DHCP; default the gateway, where Hearth's
	// DNS answers.
	DNSServers []string `json:"dnsServers,omitempty"`
	// Routes handed out by DHCP (option 121) besides the default route.
	Routes []Route `json:"routes,omitempty"`
	// IPv6Mode is how the NICs of an IPv6 subnet configure their address
	// from the router's advertisements: slaac (the default; the prefix
	// must be a /64, and each NIC's address is the EUI-64 of its MAC,
	// which IPAM computes so it is known before the guest boots) or
	// dhcpv6 (stateful DHCPv6 from the router hands out IPAM's address).
	// With dhcp.disabled the router advertises itself and the prefix
	// on-link only, for guests with static addresses. IPv4 subnets have
	// none.
	IPv6Mode string `json:"ipv6Mode,omitempty"`
}

// IPv6 modes of a subnet (spec.ipv6Mode).
const (
	IPv6ModeSLAAC  = "slaac"
	IPv6ModeDHCPv6 = "dhcpv6"
)

// DHCP configures the subnet's DHCP service. Addresses are static leases
// from IPAM; the range bounds what IPAM hands out.
type DHCP struct {
	// Disabled turns DHCP off; VMs then need static addresses.
	Disabled bool `json:"disabled,omitempty"`
	// RangeStart and RangeEnd bound dynamic allocation (default: the
	// whole CIDR less network, gateway and broadcast addresses).
	RangeStart string `json:"rangeStart,omitempty"`
	RangeEnd   string `json:"rangeEnd,omitempty"` // see RangeStart
	// LeaseSeconds default 3600.
	LeaseSeconds int `json:"leaseSeconds,omitempty"`
}

// Route is a destination and the next hop to reach it.
type Route struct {
	// Destination is a CIDR ("192.168.50.0/24").
	Destination string `json:"destination"`
	// Gateway is the next hop, an address in the subnet.
	Gateway string `json:"gateway"`
}

// SubnetStatus says whether the subnet can be used: phase Ready once its
// network exists, Pending (with the ResolvedRefs condition naming the
// network) while it does not.
type SubnetStatus struct {
	CommonStatus `json:",inline"`
	// Allocated counts the addresses NICs hold in the subnet.
	Allocated int `json:"allocated,omitempty"`
	// Available counts the addresses of the DHCP range that are still
	// free to hand out (the gateway aside).
	Available int `json:"available,omitempty"`
}

// Subnet phases.
const (
	// SubnetPending: the subnet's network does not exist (yet).
	SubnetPending = "Pending"
	// SubnetReady: the subnet is on an existing network.
	SubnetReady = "Ready"
)

func (s *SubnetSpec) Default() {
	if p, err := netip.ParsePrefix(s.CIDR); err == nil && p.Addr().Is4() && p.Bits() <= 30 && s.Gateway == "" {
		s.Gateway = p.Masked().Addr().Next().String()
	}
	if p, err := netip.ParsePrefix(s.CIDR); err == nil && p.Addr().Is6() && !p.Addr().Is4In6() && p.Bits() <= 126 {
		if s.Gateway == "" {
			s.Gateway = p.Masked().Addr().Next().String()
		}
		if s.IPv6Mode == "" {
			s.IPv6Mode = IPv6ModeSLAAC
		}
	}
	if s.DHCP.LeaseSeconds == 0 {
		s.DHCP.LeaseSeconds = 3600
	}
}

func (s *SubnetSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	if s.Network == "" {
		es.Add(path+".network", "is required")
	} else {
		es = append(es, ValidateName(path+".network", s.Network)...)
	}
	p, perr := ValidateCIDR(path+".cidr", s.CIDR)
	es = append(es, perr...)
	inSubnet := func(field, addr string) {
		a, e := ValidateIP(field, addr)
		es = append(es, e...)
		if len(e) == 0 && len(perr) == 0 && !p.Contains(a) {
			es.Add(field, "%s is outside %s", addr, s.CIDR)
		}
	}
	if s.Gateway != "" {
		inSubnet(path+".gateway", s.Gateway)
	}
	if s.DHCP.RangeStart != "" {
		inSubnet(path+".dhcp.rangeStart", s.DHCP.RangeStart)
	}
	if s.DHCP.RangeEnd != "" {
		inSubnet(path+".dhcp.rangeEnd", s.DHCP.RangeEnd)
	}
	if s.DHCP.RangeStart != "" && s.DHCP.RangeEnd != "" {
		a, e1 := netip.ParseAddr(s.DHCP.RangeStart)
		b, e2 := netip.ParseAddr(s.DHCP.RangeEnd)
		if e1 == nil && e2 == nil && b.Less(a) {
			es.Add(path+".dhcp.rangeEnd", "%s is before rangeStart %s", s.DHCP.RangeEnd, s.DHCP.RangeStart)
		}
	}
	if s.DHCP.LeaseSeconds < 60 {
		es.Add(path+".dhcp.leaseSeconds", "%d is below the minimum of 60", s.DHCP.LeaseSeconds)
	}
	for i, d := range s.DNSServers {
		_, e := ValidateIP(fmt.Sprintf("%s.dnsServers[%d]", path, i), d)
		es = append(es, e...)
	}
	for i, r := range s.Routes {
		rp := fmt.Sprintf("%s.routes[%d]", path, i)
		_, e := ValidateCIDR(rp+".destination", r.Destination)
		es = append(es, e...)
		_, e = ValidateIP(rp+".gateway", r.Gateway)
		es = append(es, e...)
	}
	if len(perr) == 0 {
		es = append(es, s.validateIPv6(path, p)...)
	}
	return es
}

// validateIPv6 checks what only IPv6 subnets have: the mode, and a /64
// where addresses come from SLAAC.
func (s *SubnetSpec) validateIPv6(path string, p netip.Prefix) FieldErrors {
	var es FieldErrors
	if p.Addr().Is4() || p.Addr().Is4In6() {
		if s.IPv6Mode != "" {
			es.Add(path+".ipv6Mode", "only IPv6 subnets have a mode; %s is an IPv4 subnet", s.CIDR)
		}
		return es
	}
	switch s.IPv6Mode {
	case "", IPv6ModeSLAAC:
		if p.Bits() != 64 {
			es.Add(path+".cidr", "%s: SLAAC needs a /64 (the address is the prefix and the EUI-64 of the MAC); use a /64 or ipv6Mode %s", s.CIDR, IPv6ModeDHCPv6)
		}
	case IPv6ModeDHCPv6:
		if p.Bits() > 126 {
			es.Add(path+".cidr", "%s leaves no room for a gateway and a NIC", s.CIDR)
		}
	default:
		es.Add(path+".ipv6Mode", "%q is not a mode: use %s or %s", s.IPv6Mode, IPv6ModeSLAAC, IPv6ModeDHCPv6)
	}
	if p.Addr().IsLinkLocalUnicast() || p.Addr().IsMulticast() {
		es.Add(path+".cidr", "%s is link-local or multicast; a subnet needs global or unique local addresses", s.CIDR)
	}
	return es
}

// EUI64 is the SLAAC address of the NIC with MAC mac in the /64 prefix p
// (RFC 4291 appendix A): the MAC with ff:fe in its middle and the
// universal/local bit flipped.
func EUI64(p netip.Prefix, mac net.HardwareAddr) (netip.Addr, bool) {
	if !p.Addr().Is6() || p.Bits() != 64 || len(mac) != 6 {
		return netip.Addr{}, false
	}
	b := p.Masked().Addr().As16()
	b[8], b[9], b[10], b[11] = mac[0]^0x02, mac[1], mac[2], 0xff
	b[12], b[13], b[14], b[15] = 0xfe, mac[3], mac[4], mac[5]
	return netip.AddrFrom16(b), true
}

func (s *SubnetSpec) ValidateUpdate(path string, old any) FieldErrors {
	o := old.(*SubnetSpec)
	var es FieldErrors
	if s.Network != o.Network {
		es.Add(path+".network", "cannot change (was %q); create a new subnet", o.Network)
	}
	if s.CIDR != o.CIDR {
		es.Add(path+".cidr", "cannot change (was %q); create a new subnet", o.CIDR)
	}
	if s.IPv6Mode != o.IPv6Mode && o.IPv6Mode != "" {
		// SLAAC NICs hold their EUI-64 address, dhcpv6 ones IPAM's
		// pick: the allocations would not match the new mode.
		es.Add(path+".ipv6Mode", "cannot change (was %q): NICs hold addresses made for it; create a new subnet", o.IPv6Mode)
	}
	if s.Gateway != o.Gateway && o.Gateway != "" && s.CIDR == o.CIDR {
		// IPAM never hands out the gateway's address; a new one could
		// be a NIC's already.
		es.Add(path+".gateway", "cannot change (was %q): VMs route through it and NICs hold addresses beside it; create a new subnet", o.Gateway)
	}
	return es
}

func init() {
	register[SubnetSpec, SubnetStatus](KindInfo{
		Kind: "Subnet", Plural: "subnets", ShortNames: []string{"subnet", "sn"}, Scope: TenantScoped,
		Description: "An IP range on a network with its gateway, DHCP, DNS and metadata services.",
		Columns: []Column{
			{Name: "STATUS", Get: func(o Object) string { return o.CommonStatus().Phase }},
			{Name: "NETWORK", Get: func(o Object) string { return o.(*Subnet).Spec.Network }},
			{Name: "CIDR", Get: func(o Object) string { return o.(*Subnet).Spec.CIDR }},
			{Name: "GATEWAY", Get: func(o Object) string { return o.(*Subnet).Spec.Gateway }},
			{Name: "USED", Get: func(o Object) string { return strconv.Itoa(o.(*Subnet).Status.Allocated) }},
			{Name: "FREE", Get: func(o Object) string { return strconv.Itoa(o.(*Subnet).Status.Available) }},
			{Name: "DHCP", Wide: true, Get: func(o Object) string {
				if o.(*Subnet).Spec.DHCP.Disabled {
					return "off"
				}
				return strings.TrimSpace(o.(*Subnet).Spec.DHCP.RangeStart + "-" + o.(*Subnet).Spec.DHCP.RangeEnd)
			}},
		},
	})
}
