package ipam

import (
	"net"
	"net/netip"

	api "hearth.dev/hearth/api/v1alpha1"
)

// IPv6. A NIC takes its address in an IPv6 subnet like in an IPv4 one,
// with two differences:
//
//   - In a SLAAC subnet (spec.ipv6Mode slaac, a /64) the guest makes its
//     own address from the router's advertisement and its MAC (EUI-64),
//     so IPAM computes the same address instead of picking one: the
//     server publishes it in status.interfaces before the guest boots,
//     and every host's router gets its neighbour entry from there. The
//     address is still taken under the subnet's keys, so the subnet's
//     counts and its delete guard see it. A static spec.nics[i].ip must
//     be that address. MACs are unique on a network, so EUI-64 addresses
//     are unique in its subnets.
//   - Dual stack: a NIC whose address (IP) is IPv4 also takes one
//     (IPv6Subnet, IPv6) in the IPv6 subnet spec.nics[i].ipv6Subnet
//     names, or, without one, in the network's only IPv6 subnet if it
//     has exactly one. On a network with exactly one IPv4 and one IPv6
//     subnet, a NIC without spec.nics[i].subnet takes its address in the
//     IPv4 one.

// slaac reports whether NICs of the subnet make their own addresses.
func slaac(sn *api.Subnet) bool {
	p, err := netip.ParsePrefix(sn.Spec.CIDR)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
		return false
	}
	return sn.Spec.IPv6Mode == "" || sn.Spec.IPv6Mode == api.IPv6ModeSLAAC
}

// takeSLAAC takes the EUI-64 address of mac in the subnet.
func takeSLAAC(r *resolver, t *txn, np string, sn *api.Subnet, p netip.Prefix, want, mac, holder string, es *api.FieldErrors) (netip.Addr, bool, error) {
	hw, err := net.ParseMAC(mac)
	a, ok := api.EUI64(p, hw)
	if err != nil || !ok {
		es.Add(np+".subnet", "subnet %s (%s) makes addresses by SLAAC, which needs a /64 and an Ethernet MAC", sn.Metadata.Name, sn.Spec.CIDR)
		return a, false, nil
	}
	if want != "" && !sameAddr(want, a.String()) {
		es.Add(np+".ip", "%s: in subnet %s (SLAAC) the NIC's address is the EUI-64 of its MAC, %s; leave ip empty, or use a subnet with ipv6Mode %s", want, sn.Metadata.Name, a, api.IPv6ModeDHCPv6)
		return a, false, nil
	}
	if api.Reserved(p, sn.Spec.Gateway, a) {
		es.Add(np+".mac", "%s makes %s, the gateway of subnet %s; use another MAC", mac, a, sn.Metadata.Name)
		return a, false, nil
	}
	key := ipKey(sn.Metadata.UID, a)
	if t.busy(key) {
		es.Add(np+".ip", "%s is asked for by another NIC of this VM", a)
		return a, false, nil
	}
	if !t.released[key] {
		h, held, err := holderOf(r.ctx, r.kv, key)
		if err != nil {
			return a, false, err
		}
		if held {
			es.Add(np+".ip", "%s is already used in subnet %s by %s", a, sn.Metadata.Name, h)
			return a, false, nil
		}
	}
	t.take(key, holder)
	return a, true, nil
}

// byFamily splits subnet names into IPv4 and IPv6 subnets.
func (r *resolver) byFamily(names []string) (v4, v6 []string) {
	for _, name := range names {
		f, _ := r.subnet(name)
		if f == nil {
			continue
		}
		p, err := netip.ParsePrefix(f.obj.Spec.CIDR)
		switch {
		case err != nil:
		case p.Addr().Is4() || p.Addr().Is4In6():
			v4 = append(v4, name)
		default:
			v6 = append(v6, name)
		}
	}
	return v4, v6
}

// dualStack is the IPv6 subnet a NIC whose address is in sn also takes
// an address in, when sn is IPv4: spec.nics[i].ipv6Subnet, or the
// network's only IPv6 subnet. What is wrong with the one named is added
// to es.
func (r *resolver) dualStack(np string, nic api.VMNIC, sn *api.Subnet, es *api.FieldErrors) (*found[*api.Subnet], error) {
	v4 := false
	if p, err := netip.ParsePrefix(sn.Spec.CIDR); err == nil {
		v4 = p.Addr().Is4() || p.Addr().Is4In6()
	}
	if nic.IPv6Subnet != "" {
		f, err := r.subnet(nic.IPv6Subnet)
		if err != nil {
			return nil, err
		}
		var p netip.Prefix
		if f != nil {
			p, _ = netip.ParsePrefix(f.obj.Spec.CIDR)
		}
		switch {
		case !v4:
			es.Add(np+".ipv6Subnet", "is for a NIC whose address is IPv4; subnet %s is IPv6 already", sn.Metadata.Name)
		case f == nil:
			es.Add(np+".ipv6Subnet", "subnet %q does not exist in tenant %s; create it first", nic.IPv6Subnet, r.tenant)
		case f.obj.Spec.Network != nic.Network:
			es.Add(np+".ipv6Subnet", "subnet %q is on network %q, not %q", nic.IPv6Subnet, f.obj.Spec.Network, nic.Network)
		case !p.Addr().Is6() || p.Addr().Is4In6():
			es.Add(np+".ipv6Subnet", "subnet %q (%s) is not an IPv6 subnet", nic.IPv6Subnet, f.obj.Spec.CIDR)
		case f.obj.Metadata.DeletionTimestamp != nil:
			es.Add(np+".ipv6Subnet", "subnet %q is being deleted", nic.IPv6Subnet)
		default:
			return f, nil
		}
		return nil, nil
	}
	if !v4 {
		return nil, nil
	}
	names, err := r.subnetsOf(nic.Network)
	if err != nil {
		return nil, err
	}
	if _, v6 := r.byFamily(names); len(v6) == 1 {
		f, err := r.subnet(v6[0])
		if err != nil || f == nil || f.obj.Metadata.DeletionTimestamp != nil {
			return nil, err
		}
		return f, nil
	}
	return nil, nil
}

func (t resolved) sn6Name() string {
	if t.sn6 == nil {
		return ""
	}
	return t.sn6.obj.Metadata.Name
}
