package v1alpha1

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ExternalNetwork is a network outside Hearth that tenant networks route
// to: the home LAN, a provider's public range. Networks that name it get
// SNAT to it through their router, and floating IPs come from its range.
type ExternalNetwork = Resource[ExternalNetworkSpec, ExternalNetworkStatus]

type ExternalNetworkSpec struct {
	// Description is free text for people.
	Description string `json:"description,omitempty"`
	// Site whose hosts are attached to this network; empty means every
	// site's hosts are.
	Site string `json:"site,omitempty"`
	// CIDR of the outside network, the one routers and floating IPs take
	// addresses in.
	CIDR string `json:"cidr"`
	// Gateway is the outside router tenant traffic leaves through
	// (default the first address of the CIDR).
	Gateway string `json:"gateway,omitempty"`
	// RangeStart and RangeEnd bound the addresses Hearth may take for
	// routers and floating IPs, so it leaves the rest of the LAN alone
	// (default: the whole CIDR less network, gateway and broadcast).
	RangeStart string `json:"rangeStart,omitempty"`
	RangeEnd   string `json:"rangeEnd,omitempty"` // see RangeStart
	// Interface is the bridge on each host that is attached to the
	// network (the routers' external legs become its ports). A host's
	// agent flag --external-interface NAME=BRIDGE overrides it for that
	// host. Empty means, on each host without such a flag (or a default
	// --external-interface BRIDGE), the bridge that holds an address in
	// CIDR; a host with none leaves the network's way out unplugged and
	// says so in its Host's NetworkReady condition.
	Interface string `json:"interface,omitempty"`
	// DNSServers are the resolvers Hearth's DNS forwards names it does not
	// know to, for networks routed through this one (default the gateway).
	DNSServers []string `json:"dnsServers,omitempty"`
	// IPv6 is the network's IPv6 side, when it has one. IPv6 is never
	// NATed: tenant IPv6 subnets inside a prefix delegated to their
	// tenant here are reachable from this network with their own
	// addresses (each host's router answers neighbour solicitations for
	// its own VMs' addresses: NDP proxy), under the VMs' security groups;
	// other IPv6 subnets stay inside Hearth. Floating IPs stay IPv4.
	IPv6 *ExternalIPv6 `json:"ipv6,omitempty"`
}

// ExternalIPv6 is an external network's IPv6 side.
type ExternalIPv6 struct {
	// CIDR is the external link's IPv6 prefix, a /64: each router's
	// external leg takes the EUI-64 address of its MAC in it, as a SLAAC
	// host would.
	CIDR string `json:"cidr"`
	// Gateway is the outside router on the link, the routers' IPv6
	// default route: an address in CIDR or a link-local one (default
	// the first address of CIDR).
	Gateway string `json:"gateway,omitempty"`
	// Prefixes are delegated to tenants: the outside router must treat
	// each as on-link on this network (e.g. `ip -6 route add PREFIX dev
	// IFACE`), and the tenant's IPv6 subnets inside one are routed out
	// and reachable from outside. Only the named tenant's subnets are,
	// so no tenant can claim another's addresses on the external link.
	Prefixes []DelegatedPrefix `json:"prefixes,omitempty"`
}

// DelegatedPrefix is an IPv6 prefix routed to one tenant.
type DelegatedPrefix struct {
	// Prefix is the delegated range (at most a /64; a subnet routed out
	// lies inside it).
	Prefix string `json:"prefix"`
	// Tenant is the tenant whose subnets in Prefix are routed.
	Tenant string `json:"tenant"`
}

// Routes reports whether tenant's IPv6 subnet cidr is routed through
// this external network without NAT: inside a prefix delegated to the
// tenant.
func (x *ExternalIPv6) Routes(tenant string, cidr netip.Prefix) bool {
	if x == nil || !cidr.Addr().Is6() {
		return false
	}
	for _, d := range x.Prefixes {
		p, err := netip.ParsePrefix(d.Prefix)
		if err == nil && d.Tenant == tenant && p.Addr().Is6() && p.Bits() <= cidr.Bits() && p.Contains(cidr.Addr()) {
			return true
		}
	}
	return false
}

type ExternalNetworkStatus struct {
	CommonStatus `json:",inline"`
	// Allocated counts addresses taken for routers (one per host of each
	// network that names this one) and floating IPs; Available is what is
	// left in the range.
	Allocated int `json:"allocated,omitempty"`
	Available int `json:"available,omitempty"`
}

func (s *ExternalNetworkSpec) Default() {
	if p, err := netip.ParsePrefix(s.CIDR); err == nil && p.Addr().Is4() && p.Bits() <= 30 && s.Gateway == "" {
		s.Gateway = p.Masked().Addr().Next().String()
	}
	if x := s.IPv6; x != nil && x.Gateway == "" {
		if p, err := netip.ParsePrefix(x.CIDR); err == nil && p.Addr().Is6() {
			x.Gateway = p.Masked().Addr().Next().String()
		}
	}
}

func (s *ExternalNetworkSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	if s.Site != "" {
		es = append(es, ValidateName(path+".site", s.Site)...)
	}
	p, perr := ValidateCIDR(path+".cidr", s.CIDR)
	es = append(es, perr...)
	inside := func(field, addr string) (netip.Addr, bool) {
		a, e := ValidateIP(field, addr)
		es = append(es, e...)
		if len(e) > 0 {
			return a, false
		}
		if len(perr) == 0 && !p.Contains(a) {
			es.Add(field, "%s is outside %s", addr, s.CIDR)
			return a, false
		}
		return a, true
	}
	if s.Gateway == "" {
		if len(perr) == 0 {
			// Default fills it in for IPv4 CIDRs of /30 or larger only.
			es.Add(path+".gateway", "is required for %s", s.CIDR)
		}
	} else {
		inside(path+".gateway", s.Gateway)
	}
	var start, end netip.Addr
	var okStart, okEnd bool
	if s.RangeStart != "" {
		start, okStart = inside(path+".rangeStart", s.RangeStart)
	}
	if s.RangeEnd != "" {
		end, okEnd = inside(path+".rangeEnd", s.RangeEnd)
	}
	if okStart && okEnd && end.Less(start) {
		es.Add(path+".rangeEnd", "%s is before rangeStart %s", s.RangeEnd, s.RangeStart)
	}
	if s.Interface != "" && (len(s.Interface) > 15 || strings.ContainsAny(s.Interface, "/ \t\n:") || s.Interface == "." || s.Interface == "..") {
		es.Add(path+".interface", "%q is not an interface name (at most 15 characters, no '/', ':' or spaces)", s.Interface)
	}
	for i, d := range s.DNSServers {
		_, e := ValidateIP(fmt.Sprintf("%s.dnsServers[%d]", path, i), d)
		es = append(es, e...)
	}
	if s.IPv6 != nil {
		es = append(es, s.IPv6.validate(path+".ipv6", len(perr) == 0 && p.Addr().Is6())...)
	}
	return es
}

func (x *ExternalIPv6) validate(path string, cidr6 bool) FieldErrors {
	var es FieldErrors
	if cidr6 {
		es.Add(path, "is for an IPv4 external network's IPv6 side; this network's cidr is already IPv6")
	}
	p, perr := ValidateCIDR(path+".cidr", x.CIDR)
	es = append(es, perr...)
	link := len(perr) == 0 // the link's prefix is known
	if link && (!p.Addr().Is6() || p.Addr().Is4In6() || p.Bits() != 64) {
		es.Add(path+".cidr", "%s is not an IPv6 /64 (routers take EUI-64 addresses in it)", x.CIDR)
		link = false
	}
	switch gw, e := ValidateIP(path+".gateway", x.Gateway); {
	case x.Gateway == "":
		es.Add(path+".gateway", "is required")
	case len(e) > 0:
		es = append(es, e...)
	case !gw.Is6() || gw.Is4In6():
		es.Add(path+".gateway", "%s is not an IPv6 address", x.Gateway)
	case link && !p.Contains(gw) && !gw.IsLinkLocalUnicast():
		es.Add(path+".gateway", "%s is neither in %s nor link-local", x.Gateway, x.CIDR)
	}
	seen := make([]netip.Prefix, len(x.Prefixes))
	for i, d := range x.Prefixes {
		dp := fmt.Sprintf("%s.prefixes[%d]", path, i)
		if d.Tenant == "" {
			es.Add(dp+".tenant", "is required: a prefix is delegated to one tenant")
		} else {
			es = append(es, ValidateName(dp+".tenant", d.Tenant)...)
		}
		q, e := ValidateCIDR(dp+".prefix", d.Prefix)
		es = append(es, e...)
		switch {
		case len(e) > 0:
			continue
		case !q.Addr().Is6() || q.Addr().Is4In6() || q.Bits() > 64:
			es.Add(dp+".prefix", "%s is not an IPv6 prefix of /64 or shorter", d.Prefix)
			continue
		case q.Addr().IsLinkLocalUnicast() || q.Addr().IsMulticast():
			es.Add(dp+".prefix", "%s is not a unicast range", d.Prefix)
			continue
		case link && q.Overlaps(p):
			es.Add(dp+".prefix", "%s overlaps the link's cidr %s", d.Prefix, x.CIDR)
			continue
		}
		for j, o := range seen[:i] {
			if o.IsValid() && o.Overlaps(q) {
				es.Add(dp+".prefix", "%s overlaps prefixes[%d] (%s): an address has one tenant", d.Prefix, j, o)
			}
		}
		seen[i] = q
	}
	return es
}

func (s *ExternalNetworkSpec) ValidateUpdate(path string, old any) FieldErrors {
	o := old.(*ExternalNetworkSpec)
	var es FieldErrors
	if s.CIDR != o.CIDR {
		es.Add(path+".cidr", "cannot change (was %q): routers and floating IPs hold addresses in it", o.CIDR)
	}
	if s.Gateway != o.Gateway && o.Gateway != "" && s.CIDR == o.CIDR {
		es.Add(path+".gateway", "cannot change (was %q): routers and floating IPs hold addresses beside it; create a new external network", o.Gateway)
	}
	return es
}

func init() {
	register[ExternalNetworkSpec, ExternalNetworkStatus](KindInfo{
		Kind: "ExternalNetwork", Plural: "externalnetworks", ShortNames: []string{"externalnetwork", "extnet"}, Scope: ClusterScoped,
		Description: "A network outside Hearth that tenant networks route to and floating IPs come from.",
		Columns: []Column{
			{Name: "CIDR", Get: func(o Object) string { return o.(*ExternalNetwork).Spec.CIDR }},
			{Name: "GATEWAY", Get: func(o Object) string { return o.(*ExternalNetwork).Spec.Gateway }},
			{Name: "SITE", Get: func(o Object) string { return o.(*ExternalNetwork).Spec.Site }},
			{Name: "USED", Get: func(o Object) string { return strconv.Itoa(o.(*ExternalNetwork).Status.Allocated) }},
			{Name: "AVAILABLE", Get: func(o Object) string { return strconv.Itoa(o.(*ExternalNetwork).Status.Available) }},
			{Name: "RANGE", Wide: true, Get: func(o Object) string {
				s := o.(*ExternalNetwork).Spec
				if s.RangeStart == "" && s.RangeEnd == "" {
					return ""
				}
				return s.RangeStart + "-" + s.RangeEnd
			}},
			{Name: "INTERFACE", Wide: true, Get: func(o Object) string { return o.(*ExternalNetwork).Spec.Interface }},
			{Name: "IPV6", Wide: true, Get: func(o Object) string {
				if x := o.(*ExternalNetwork).Spec.IPv6; x != nil {
					return x.CIDR
				}
				return ""
			}},
		},
	})
}
