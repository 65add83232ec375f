package agent

import (
	"cmp"
	"net/netip"
	"slices"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/dataplane"
)

// Security groups on this host: a NIC that names security groups gets
// their rules on its port (dataplane.PortSecurity), as the API's
// SecurityIndex computes them, the same computation `hearth describe vm`
// shows. A remote group becomes an address group of the host state,
// named TENANT/GROUP, holding the addresses of every NIC of the tenant
// that names the group, on any host (Network.status.ports say which):
// a rule names it, and the data plane keeps it as an nftables set.
//
// A NIC whose groups do not exist (yet, or any more) is filtered all the
// same: it names groups, so traffic in is denied until a rule allows
// it. A group of another tenant is never found: names are looked up in
// the NIC's tenant.

// portSecurity converts a NIC's effective rules for its port, adding the
// remote groups they name to groups. Nil for a NIC without groups.
func portSecurity(tenant string, sec api.NICSecurity, index *api.SecurityIndex, groups map[string][]netip.Addr) *dataplane.PortSecurity {
	if !sec.Filtered {
		return nil
	}
	ps := &dataplane.PortSecurity{}
	for _, r := range sec.Rules {
		dr := dataplane.SecurityRule{}
		switch r.Protocol {
		case api.ProtocolTCP, api.ProtocolUDP, api.ProtocolICMP:
			dr.Protocol = r.Protocol
		case api.ProtocolAny, "":
		default:
			continue // the API refuses it; never widen a rule
		}
		if r.Ports != "" {
			lo, hi, err := api.ParsePortRange(r.Ports)
			if err != nil || (dr.Protocol != api.ProtocolTCP && dr.Protocol != api.ProtocolUDP) {
				continue
			}
			dr.FromPort, dr.ToPort = uint16(lo), uint16(hi)
		}
		switch {
		case r.CIDR != "":
			p, err := netip.ParsePrefix(r.CIDR)
			if err != nil {
				continue
			}
			dr.CIDR = p.Masked()
		case r.RemoteGroup != "":
			dr.Group = tenant + "/" + r.RemoteGroup
			if _, ok := groups[dr.Group]; !ok {
				var addrs []netip.Addr
				for _, s := range index.Members(tenant, r.RemoteGroup) {
					if a, err := netip.ParseAddr(s); err == nil {
						addrs = append(addrs, a.Unmap())
					}
				}
				groups[dr.Group] = addrs
			}
		}
		if r.Direction == api.Egress {
			ps.Egress = append(ps.Egress, dr)
		} else {
			ps.Ingress = append(ps.Ingress, dr)
		}
	}
	return ps
}

// addressGroups lists groups in a stable order.
func addressGroups(groups map[string][]netip.Addr) []dataplane.AddressGroup {
	var out []dataplane.AddressGroup
	for name, addrs := range groups {
		out = append(out, dataplane.AddressGroup{Name: name, Addresses: addrs})
	}
	slices.SortFunc(out, func(a, b dataplane.AddressGroup) int { return cmp.Compare(a.Name, b.Name) })
	return out
}
