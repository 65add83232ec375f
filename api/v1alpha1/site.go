package v1alpha1

import (
	"fmt"
	"strconv"
	"strings"
)

// Site is a place hosts live: a room, a rack, a rented server in a
// datacenter. Hosts and boot services belong to a site; one control plane
// manages several. Hosts at different sites reach each other over an
// encrypted overlay (userspace WireGuard) that tenant networks ride on.
type Site = Resource[SiteSpec, SiteStatus]

type SiteSpec struct {
	// Description is free text for people.
	Description string `json:"description,omitempty"`
	// Tags describe the site ("home", "colo", "eu") so people and
	// selectors can group sites.
	Tags []string `json:"tags,omitempty"`
	// Overlay, when set, makes the site's hosts join the WireGuard overlay
	// with the hosts of every other site that has one. A lab on one site
	// needs none: its hosts reach each other directly.
	Overlay *SiteOverlay `json:"overlay,omitempty"`
}

// SiteOverlay configures the site's part of the overlay.
type SiteOverlay struct {
	// CIDR is the block overlay addresses of this site's hosts come from,
	// one address per host. Sites' blocks must not overlap, so an overlay
	// address says which site a host is at.
	CIDR string `json:"cidr"`
	// ListenPort is the UDP port the hosts' WireGuard listens on (default
	// 51820). Hosts behind NAT need it forwarded.
	ListenPort int `json:"listenPort,omitempty"`
	// MTU of the overlay interface (default 1420: a 1500-byte underlay less
	// WireGuard's 80 bytes). Tenant networks crossing the overlay lose a
	// further 50 bytes to VXLAN.
	MTU int `json:"mtu,omitempty"`
}

type SiteStatus struct {
	CommonStatus `json:",inline"`
	// Hosts and ReadyHosts count the hosts at the site.
	Hosts      int `json:"hosts,omitempty"`
	ReadyHosts int `json:"readyHosts,omitempty"`
}

// DefaultOverlayPort is WireGuard's usual port.
const DefaultOverlayPort = 51820

func (s *SiteSpec) Default() {
	if s.Overlay != nil {
		if s.Overlay.ListenPort == 0 {
			s.Overlay.ListenPort = DefaultOverlayPort
		}
		if s.Overlay.MTU == 0 {
			s.Overlay.MTU = 1420
		}
	}
}

func (s *SiteSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	seen := map[string]bool{}
	for i, t := range s.Tags {
		p := fmt.Sprintf("%s.tags[%d]", path, i)
		switch {
		case t == "":
			es.Add(p, "is empty")
		case len(t) > 63 || !labelValue.MatchString(t):
			es.Add(p, "%q must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit", t)
		case seen[t]:
			es.Add(p, "%q is listed twice", t)
		}
		seen[t] = true
	}
	if o := s.Overlay; o != nil {
		p, e := ValidateCIDR(path+".overlay.cidr", o.CIDR)
		es = append(es, e...)
		if len(e) == 0 && p.Addr().Is4() && p.Bits() > 30 {
			es.Add(path+".overlay.cidr", "%q is too small for hosts (want /30 or larger)", o.CIDR)
		}
		es = append(es, ValidatePort(path+".overlay.listenPort", o.ListenPort)...)
		if o.MTU < 1280 || o.MTU > 9000 {
			es.Add(path+".overlay.mtu", "%d is out of range (1280 to 9000)", o.MTU)
		}
	}
	return es
}

func init() {
	register[SiteSpec, SiteStatus](KindInfo{
		Kind: "Site", Plural: "sites", ShortNames: []string{"site"}, Scope: ClusterScoped,
		Description: "A place hosts and boot services live, joined to other sites by an encrypted overlay.",
		Columns: []Column{
			{Name: "HOSTS", Get: func(o Object) string {
				st := o.(*Site).Status
				return fmt.Sprintf("%d/%d", st.ReadyHosts, st.Hosts)
			}},
			{Name: "OVERLAY", Get: func(o Object) string {
				if ov := o.(*Site).Spec.Overlay; ov != nil {
					return ov.CIDR
				}
				return ""
			}},
			{Name: "TAGS", Get: func(o Object) string { return strings.Join(o.(*Site).Spec.Tags, ",") }},
			{Name: "PORT", Wide: true, Get: func(o Object) string {
				if ov := o.(*Site).Spec.Overlay; ov != nil {
					return strconv.Itoa(ov.ListenPort)
				}
				return ""
			}},
			{Name: "DESCRIPTION", Wide: true, Get: func(o Object) string { return o.(*Site).Spec.Description }},
		},
	})
}
