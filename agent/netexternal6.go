package agent

import (
	"net/netip"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/dataplane"
)

// external6 is network n's IPv6 way out on this host, or nil: the
// external network's IPv6 side, the router's address on it (the EUI-64
// of its external leg's MAC, which every host derives alike, so nothing
// is allocated), and the network's IPv6 subnets that lie in a prefix the
// external network delegates to n's tenant. Those are routed without NAT
// (the data plane proxies neighbour discovery for this host's NICs in
// them); the others stay inside Hearth. Only the tenant a prefix is
// delegated to gets its subnets there routed, so no tenant can make a
// router answer for another's addresses on the external link.
func external6(in netInputs, n *api.Network, x *api.ExternalNetwork, vni uint32, subnets []dataplane.Subnet, problem func(kind, key, format string, args ...any)) *dataplane.ExternalIPv6 {
	if x == nil || x.Spec.IPv6 == nil {
		return nil
	}
	x6 := x.Spec.IPv6
	link, err := netip.ParsePrefix(x6.CIDR)
	gw, gerr := netip.ParseAddr(x6.Gateway)
	addr, ok := api.EUI64(link, dataplane.ExternalMAC(in.Underlay.Address, vni))
	if err != nil || gerr != nil || !ok {
		problem("ExternalNetwork", x.Metadata.Name, "spec.ipv6: %q via %q is not an IPv6 /64 and gateway: the network's IPv6 stays inside", x6.CIDR, x6.Gateway)
		return nil
	}
	out := &dataplane.ExternalIPv6{Address: netip.PrefixFrom(addr, link.Bits()), Gateway: gw.Unmap()}
	for _, s := range subnets {
		if x6.Routes(n.Metadata.Tenant, s.CIDR) {
			out.Routed = append(out.Routed, s.CIDR)
		}
	}
	return out
}
