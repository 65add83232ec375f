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
		},
	})
}
