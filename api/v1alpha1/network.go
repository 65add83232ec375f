package v1alpha1

import "strconv"

// Network is a tenant's layer-2 network that spans hosts over VXLAN. Its
// subnets are routed to each other by the network's router.
type Network = Resource[NetworkSpec, NetworkStatus]

type NetworkSpec struct {
	Description string `json:"description,omitempty"`
	// MTU inside the network. Default 1450: a 1500-byte underlay less the
	// 50 bytes of VXLAN encapsulation.
	MTU int `json:"mtu,omitempty"`
	// ExternalNetwork, when set, gives the network a route out: SNAT for
	// its VMs and floating IPs from that external network.
	ExternalNetwork string `json:"externalNetwork,omitempty"`
	// DNSDomain is the domain VM names resolve under (default
	// NETWORK.TENANT.hearth.internal).
	DNSDomain string `json:"dnsDomain,omitempty"`
}

type NetworkStatus struct {
	CommonStatus `json:",inline"`
	// VNI is the VXLAN network identifier the server allocated.
	VNI int `json:"vni,omitempty"`
	// Hosts carrying the network (they have a VM on it).
	Hosts []string `json:"hosts,omitempty"`
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
		},
	})
}
