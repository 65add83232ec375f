package v1alpha1

import "fmt"

// FloatingIP is an address on an ExternalNetwork that a tenant holds and
// can point at one of its VMs: the VM's router DNATs traffic for the
// address to the VM's NIC and SNATs the VM's outgoing traffic from it. The
// address stays with the tenant when the target changes or goes away.
type FloatingIP = Resource[FloatingIPSpec, FloatingIPStatus]

type FloatingIPSpec struct {
	// ExternalNetwork the address comes from.
	ExternalNetwork string `json:"externalNetwork"`
	// Address asks for a particular address in the external network's
	// range; empty lets Hearth pick one (status.address says which).
	Address string `json:"address,omitempty"`
	// Target is the VM NIC the address points at; none leaves it held but
	// unused.
	Target *FloatingIPTarget `json:"target,omitempty"`
	// Description is free text for people.
	Description string `json:"description,omitempty"`
}

// FloatingIPTarget names a VM's NIC.
type FloatingIPTarget struct {
	// VM names a VirtualMachine of the same tenant.
	VM string `json:"vm"`
	// NIC is the index of the NIC in the VM's spec.nics (default 0). Its
	// network must route to the floating IP's external network.
	NIC int `json:"nic,omitempty"`
}

type FloatingIPStatus struct {
	CommonStatus `json:",inline"`
	// Address allocated to the floating IP, in the transaction that
	// created it (spec.address if that was free); only the server writes
	// it, and it is released when the floating IP is deleted.
	Address string `json:"address,omitempty"`
	// TargetIP is the VM address the floating IP is translated to: the
	// target NIC's address, once the target exists, is placed and its
	// network routes to the external network.
	TargetIP string `json:"targetIP,omitempty"`
	// Host runs the target VM: the host whose router translates the
	// address and answers for it on the external network.
	Host string `json:"host,omitempty"`
}

// ConditionAssociated says whether a floating IP with a target reaches
// it, and why not.
const ConditionAssociated = "Associated"

// FloatingIP phases.
const (
	// FloatingIPAllocated: the address is held but points at nothing.
	FloatingIPAllocated = "Allocated"
	// FloatingIPAssociated: traffic for the address reaches the target.
	FloatingIPAssociated = "Associated"
	FloatingIPFailed     = "Failed"
)

func (s *FloatingIPSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	if s.ExternalNetwork == "" {
		es.Add(path+".externalNetwork", "is required")
	} else {
		es = append(es, ValidateName(path+".externalNetwork", s.ExternalNetwork)...)
	}
	if s.Address != "" {
		_, e := ValidateIP(path+".address", s.Address)
		es = append(es, e...)
	}
	if t := s.Target; t != nil {
		if t.VM == "" {
			es.Add(path+".target.vm", "is required (or remove target to leave the address unused)")
		} else {
			es = append(es, ValidateName(path+".target.vm", t.VM)...)
		}
		if t.NIC < 0 {
			es.Add(path+".target.nic", "%d is negative", t.NIC)
		}
	}
	return es
}

// ValidateUpdate keeps the address fixed: it is allocated in the same
// transaction that created the floating IP, and people point DNS at it.
func (s *FloatingIPSpec) ValidateUpdate(path string, old any) FieldErrors {
	o := old.(*FloatingIPSpec)
	var es FieldErrors
	if s.ExternalNetwork != o.ExternalNetwork {
		es.Add(path+".externalNetwork", "cannot change (was %q); create a new floating IP", o.ExternalNetwork)
	}
	switch {
	case s.Address == o.Address:
	case o.Address == "":
		es.Add(path+".address", "cannot be set after creation; the allocated address is in status.address")
	default:
		es.Add(path+".address", "cannot change (was %q); create a new floating IP", o.Address)
	}
	return es
}

func init() {
	register[FloatingIPSpec, FloatingIPStatus](KindInfo{
		Kind: "FloatingIP", Plural: "floatingips", ShortNames: []string{"floatingip", "fip"}, Scope: TenantScoped,
		Description: "An address on an external network that a tenant holds and points at a VM.",
		Columns: []Column{
			{Name: "ADDRESS", Get: func(o Object) string {
				f := o.(*FloatingIP)
				if f.Status.Address != "" {
					return f.Status.Address
				}
				return f.Spec.Address
			}},
			{Name: "EXTERNAL NETWORK", Get: func(o Object) string { return o.(*FloatingIP).Spec.ExternalNetwork }},
			{Name: "TARGET", Get: func(o Object) string {
				if t := o.(*FloatingIP).Spec.Target; t != nil {
					return fmt.Sprintf("%s/nic%d", t.VM, t.NIC)
				}
				return ""
			}},
			{Name: "STATUS", Get: func(o Object) string { return o.CommonStatus().Phase }},
			{Name: "TARGET IP", Wide: true, Get: func(o Object) string { return o.(*FloatingIP).Status.TargetIP }},
			{Name: "HOST", Wide: true, Get: func(o Object) string { return o.(*FloatingIP).Status.Host }},
		},
	})
}
