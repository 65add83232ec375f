package controllers

import (
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TestUnchangedRefs: the references controller skips its write (and the
// copy WriteStatus makes) exactly when the write would change nothing.
func TestUnchangedRefs(t *testing.T) {
	ok := api.ResolvedCondition(nil)
	missing := api.ResolvedCondition([]api.Unresolved{{Message: `network "n1" does not exist in tenant lab`}})
	now := time.Now()
	vm := func(conds ...api.Condition) api.Object {
		v := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"}}
		for _, c := range conds {
			v.Status.SetCondition(c, now)
		}
		return v
	}
	subnet := func(phase string, conds ...api.Condition) api.Object {
		s := &api.Subnet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Subnet"}}
		s.Status.Phase = phase
		for _, c := range conds {
			s.Status.SetCondition(c, now)
		}
		return s
	}
	cases := []struct {
		name string
		kind string
		obj  api.Object
		cond api.Condition
		want bool
	}{
		{"a VM with no condition whose names resolve", "VirtualMachine", vm(), ok, true},
		{"a VM with no condition and a missing name", "VirtualMachine", vm(), missing, false},
		{"a VM already saying the same", "VirtualMachine", vm(missing), missing, true},
		{"a VM whose name came back", "VirtualMachine", vm(missing), ok, false},
		{"a VM whose name went", "VirtualMachine", vm(ok), missing, false},
		{"a new Subnet", "Subnet", subnet(""), ok, false},
		{"a Ready Subnet", "Subnet", subnet(api.SubnetReady, ok), ok, true},
		{"a Subnet with the condition but another phase", "Subnet", subnet(api.SubnetPending, ok), ok, false},
		{"a Pending Subnet whose network is missing", "Subnet", subnet(api.SubnetPending, missing), missing, true},
	}
	for _, c := range cases {
		if got := unchangedRefs(c.kind, c.obj, c.cond); got != c.want {
			t.Errorf("%s: unchangedRefs = %v, want %v", c.name, got, c.want)
		}
	}
}
