package v1alpha1

import (
	"fmt"
	"strconv"
	"strings"
)

// SecurityGroup is a set of allow rules for the NICs that name it. Traffic
// into a NIC that has security groups is dropped unless a rule of one of
// its groups allows it; traffic out is allowed unless the groups have
// egress rules, and then only what they allow. Replies to allowed traffic
// are always let through (the rules are stateful).
type SecurityGroup = Resource[SecurityGroupSpec, SecurityGroupStatus]

type SecurityGroupSpec struct {
	// Description is free text for people.
	Description string `json:"description,omitempty"`
	// Rules are the traffic the group allows: into its NICs, and out of
	// them once it has egress rules.
	Rules []SecurityGroupRule `json:"rules,omitempty"`
}

// SecurityGroupRule allows one kind of traffic.
type SecurityGroupRule struct {
	// Direction is ingress (to the VM) or egress (from it); default ingress.
	Direction string `json:"direction,omitempty"`
	// Protocol is tcp, udp, icmp or any. Default tcp when ports are given,
	// any otherwise.
	Protocol string `json:"protocol,omitempty"`
	// Ports is one port ("22") or a range ("8000-9000") for tcp and udp;
	// empty means every port.
	Ports string `json:"ports,omitempty"`
	// CIDR is where the traffic comes from (ingress) or goes to (egress).
	// With neither CIDR nor RemoteGroup, anywhere.
	CIDR string `json:"cidr,omitempty"`
	// RemoteGroup instead names a SecurityGroup of the same tenant: the
	// addresses of every NIC in it.
	RemoteGroup string `json:"remoteGroup,omitempty"`
	// Description says what the rule is for, for people.
	Description string `json:"description,omitempty"`
}

type SecurityGroupStatus struct {
	CommonStatus `json:",inline"`
}

// Rule directions and protocols.
const (
	Ingress     = "ingress"
	Egress      = "egress"
	ProtocolTCP = "tcp"
	ProtocolUDP = "udp"
	// ProtocolICMP covers ICMP and ICMPv6.
	ProtocolICMP = "icmp"
	ProtocolAny  = "any"
)

// ParsePortRange parses "22" or "8000-9000" into its first and last port.
func ParsePortRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = parsePort(a); err != nil {
		return 0, 0, err
	}
	if !isRange {
		return lo, lo, nil
	}
	if hi, err = parsePort(b); err != nil {
		return 0, 0, err
	}
	if hi < lo {
		return 0, 0, fmt.Errorf("%q ends before it starts", s)
	}
	return lo, hi, nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	if p < 1 || p > 65535 {
		return 0, fmt.Errorf("%d is not a port (1 to 65535)", p)
	}
	return p, nil
}

func (s *SecurityGroupSpec) Default() {
	for i := range s.Rules {
		r := &s.Rules[i]
		if r.Direction == "" {
			r.Direction = Ingress
		}
		if r.Protocol == "" {
			if r.Ports != "" {
				r.Protocol = ProtocolTCP
			} else {
				r.Protocol = ProtocolAny
			}
		}
	}
}

func (s *SecurityGroupSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	for i, r := range s.Rules {
		rp := fmt.Sprintf("%s.rules[%d]", path, i)
		es = append(es, ValidateOneOf(rp+".direction", r.Direction, Ingress, Egress)...)
		pe := ValidateOneOf(rp+".protocol", r.Protocol, ProtocolTCP, ProtocolUDP, ProtocolICMP, ProtocolAny)
		es = append(es, pe...)
		if r.Ports != "" {
			if len(pe) == 0 && r.Protocol != ProtocolTCP && r.Protocol != ProtocolUDP {
				es.Add(rp+".ports", "only tcp and udp have ports (protocol is %s)", r.Protocol)
			} else if _, _, err := ParsePortRange(r.Ports); err != nil {
				es.Add(rp+".ports", "%v; want a port such as \"22\" or a range such as \"8000-9000\"", err)
			}
		}
		if r.CIDR != "" {
			if r.RemoteGroup != "" {
				es.Add(rp+".remoteGroup", "cannot be set with cidr: a rule matches addresses or a group, not both")
			}
			_, e := ValidateCIDR(rp+".cidr", r.CIDR)
			es = append(es, e...)
		}
		if r.RemoteGroup != "" {
			es = append(es, ValidateName(rp+".remoteGroup", r.RemoteGroup)...)
		}
	}
	return es
}

func init() {
	register[SecurityGroupSpec, SecurityGroupStatus](KindInfo{
		Kind: "SecurityGroup", Plural: "securitygroups", ShortNames: []string{"securitygroup", "secgroup", "sg"}, Scope: TenantScoped,
		Description: "Stateful allow rules for the traffic into and out of the VM NICs that name it.",
		Columns: []Column{
			{Name: "RULES", Get: func(o Object) string { return strconv.Itoa(len(o.(*SecurityGroup).Spec.Rules)) }},
			{Name: "DESCRIPTION", Get: func(o Object) string { return o.(*SecurityGroup).Spec.Description }},
		},
	})
}
