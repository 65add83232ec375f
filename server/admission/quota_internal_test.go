package admission

import (
	"context"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
)

// TestQuotaMayGrow: an update is checked against the quota (and reads
// the tenant) only when something usage is computed from changed.
func TestQuotaMayGrow(t *testing.T) {
	base := func() *api.VirtualMachine {
		return &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
			Metadata: api.ObjectMeta{Name: "web", Tenant: "lab"},
			Spec: api.VirtualMachineSpec{CPUs: 2, Memory: 1 << 30,
				Disks: []api.VMDisk{{Image: "debian", Size: 10 << 30}}}}
	}
	cases := []struct {
		name   string
		change func(vm *api.VirtualMachine)
		want   bool
	}{
		{"bound to a host", func(vm *api.VirtualMachine) { vm.Spec.Host = "h1" }, false},
		{"labelled", func(vm *api.VirtualMachine) { vm.Metadata.Labels = map[string]string{"tier": "web"} }, false},
		{"more vCPUs", func(vm *api.VirtualMachine) { vm.Spec.CPUs = 3 }, true},
		{"more memory", func(vm *api.VirtualMachine) { vm.Spec.Memory = 2 << 30 }, true},
		{"a larger disk", func(vm *api.VirtualMachine) { vm.Spec.Disks[0].Size = 20 << 30 }, true},
		{"another disk", func(vm *api.VirtualMachine) {
			vm.Spec.Disks = append(vm.Spec.Disks, api.VMDisk{Image: "debian"})
		}, true},
		{"a disk from another image", func(vm *api.VirtualMachine) { vm.Spec.Disks[0].Image = "big" }, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			old, next := base(), base()
			c.change(next)
			if got := mayGrow(next, old); got != c.want {
				t.Fatalf("mayGrow = %v, want %v", got, c.want)
			}
		})
	}
	net := &api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"}, Metadata: api.ObjectMeta{Name: "n", Tenant: "lab"}}
	if mayGrow(net, net) {
		t.Fatal("a Network's update may grow the networks count; it counts 1 whatever it holds")
	}
	vol := &api.Volume{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Volume"}, Metadata: api.ObjectMeta{Name: "v", Tenant: "lab"}}
	if !mayGrow(vol, vol) {
		t.Fatal("a Volume's update is never checked; its size comes from several places")
	}
}

// TestQuotaBindingReadsNothing: admitting a VM's binding (spec.host
// set, nothing counted changed) reads nothing: with no store at all it
// passes, where a read would panic. A batch of bindings costs no tenant
// read per VM.
func TestQuotaBindingReadsNothing(t *testing.T) {
	q := NewQuota(nil)
	old := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
		Metadata: api.ObjectMeta{Name: "web", Tenant: "lab", UID: "u1"}, Spec: api.VirtualMachineSpec{CPUs: 2, Memory: 1 << 30}}
	next := *old
	next.Spec.Host = "h1"
	p := &auth.Principal{Name: "scheduler", Role: api.RoleClusterAdmin}
	if err := q.Admit(context.Background(), p, &next, old); err != nil {
		t.Fatalf("admitting a binding: %v", err)
	}
}
