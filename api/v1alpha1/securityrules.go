package v1alpha1

import (
	"net/netip"
	"slices"
	"strings"
)

// The effective rules of a NIC are computed here, from what a tenant can
// read (its SecurityGroups, and its Networks' status.ports, which say the
// groups of every placed NIC), so that the agent that enforces them and
// `hearth describe vm` that shows them say the same thing.

// EffectiveRule is one rule in force on a NIC: a rule of one of its
// security groups, with a remote group resolved to the addresses of its
// members.
type EffectiveRule struct {
	// Group is the SecurityGroup the rule comes from.
	Group string
	// Direction, Protocol (tcp, udp, icmp or any), Ports ("" for every
	// port) and CIDR are the rule's, defaulted.
	Direction, Protocol, Ports, CIDR string
	// RemoteGroup is the rule's remoteGroup; RemoteAddresses the
	// addresses of the NICs that name it, sorted (none: the rule
	// matches nothing yet).
	RemoteGroup     string
	RemoteAddresses []string
}

// NICSecurity is what filters one NIC.
type NICSecurity struct {
	// Filtered is true when the NIC names security groups: traffic in is
	// then denied unless a rule allows it.
	Filtered bool
	// Missing are groups the NIC names that do not exist in its tenant:
	// they allow nothing.
	Missing []string
	Rules   []EffectiveRule
}

// SecurityIndex answers NICSecurity for any NIC, from every
// SecurityGroup and Network it was given. Groups and networks are
// matched by tenant: a NIC's groups, and a rule's remote group, are
// looked up in the NIC's own tenant only.
type SecurityIndex struct {
	groups  map[string]*SecurityGroup // tenant/name
	members map[string][]string       // tenant/group → addresses
}

// NewSecurityIndex indexes groups and networks (of any tenants).
func NewSecurityIndex(groups []*SecurityGroup, networks []*Network) *SecurityIndex {
	x := &SecurityIndex{groups: map[string]*SecurityGroup{}, members: map[string][]string{}}
	for _, g := range groups {
		if g.Metadata.DeletionTimestamp == nil {
			x.groups[g.Metadata.Tenant+"/"+g.Metadata.Name] = g
		}
	}
	seen := map[string]bool{}
	for _, n := range networks {
		for _, p := range n.Status.Ports {
			for _, g := range p.SecurityGroups {
				k := n.Metadata.Tenant + "/" + g
				for _, ip := range p.IPs {
					a, err := netip.ParseAddr(ip)
					if err != nil || seen[k+"|"+a.Unmap().String()] {
						continue
					}
					seen[k+"|"+a.Unmap().String()] = true
					x.members[k] = append(x.members[k], a.Unmap().String())
				}
			}
		}
	}
	for k := range x.members {
		slices.SortFunc(x.members[k], func(a, b string) int {
			return netip.MustParseAddr(a).Compare(netip.MustParseAddr(b))
		})
	}
	return x
}

// NIC is the security of a NIC of tenant that names groups.
func (x *SecurityIndex) NIC(tenant string, groups []string) NICSecurity {
	var out NICSecurity
	if len(groups) == 0 {
		return out
	}
	out.Filtered = true
	seen := map[string]bool{}
	for _, name := range groups {
		if seen[name] {
			continue
		}
		seen[name] = true
		g := x.groups[tenant+"/"+name]
		if g == nil {
			out.Missing = append(out.Missing, name)
			continue
		}
		spec := g.Spec
		rules := slices.Clone(spec.Rules)
		spec.Rules = rules
		spec.Default()
		for _, r := range spec.Rules {
			e := EffectiveRule{Group: name, Direction: r.Direction, Protocol: r.Protocol, Ports: strings.TrimSpace(r.Ports), CIDR: r.CIDR, RemoteGroup: r.RemoteGroup}
			if r.RemoteGroup != "" {
				e.RemoteAddresses = slices.Clone(x.members[tenant+"/"+r.RemoteGroup])
			}
			out.Rules = append(out.Rules, e)
		}
	}
	return out
}

// Members are the addresses of the NICs of tenant that name group.
func (x *SecurityIndex) Members(tenant, group string) []string {
	return slices.Clone(x.members[tenant+"/"+group])
}
