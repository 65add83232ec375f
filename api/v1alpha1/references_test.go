package v1alpha1

import (
	"reflect"
	"testing"
)

// TestExampleReferencesResolve: the examples describe one coherent lab,
// so every name in them resolves among them; and a lab without them
// reports every name, with its field, in spec order.
func TestExampleReferencesResolve(t *testing.T) {
	ex := Examples()
	lookup := func(kind, tenant, name string) (Object, bool, error) {
		o, ok := ex[kind]
		if !ok || o.GetMetadata().Name != name {
			return nil, false, nil
		}
		k := kinds[kind]
		// Tenant-scoped examples are in tenant "lab"; the image is shared.
		if (k.Scope == TenantScoped && tenant != "lab") || (k.Scope != TenantScoped && tenant != "") {
			return nil, false, nil
		}
		return o, true, nil
	}
	for kind, o := range ex {
		if kinds[kind].Scope == TenantScoped {
			o.GetMetadata().Tenant = "lab"
		}
		missing, err := ResolveReferences(o, lookup, nil)
		if err != nil || len(missing) > 0 {
			t.Errorf("%s: %v %v", kind, missing, err)
		}
	}

	none := func(kind, tenant, name string) (Object, bool, error) { return nil, false, nil }
	vm := ex["VirtualMachine"]
	missing, err := ResolveReferences(vm, none, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range missing {
		got = append(got, u.String())
	}
	want := []string{
		`spec.nics[0].network: network "net1" does not exist in tenant lab`,
		`spec.nics[0].subnet: subnet "net1-a" does not exist in tenant lab`,
		`spec.nics[0].securityGroups[0]: security group "web" does not exist in tenant lab`,
		`spec.disks[0].volume: volume "web-1-root" does not exist in tenant lab`,
		`spec.cloudInit.sshKeys[0]: SSH key "alice" does not exist in tenant lab`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("unresolved:\n got %q\nwant %q", got, want)
	}
	set := ex["VirtualMachineSet"]
	set.GetMetadata().Tenant = "lab"
	missing, _ = ResolveReferences(set, none, func(kind, tenant, name string) bool { return tenant != "" })
	got = nil
	for _, u := range missing {
		got = append(got, u.String())
	}
	want = []string{
		`spec.template.spec.nics[0].network: network "net1" does not exist in tenant lab`,
		`spec.template.spec.disks[0].image: image "debian-12" does not exist in tenant lab`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("unresolved in a set, shared images not allowed:\n got %q\nwant %q", got, want)
	}
	// A kernel booted from an Image names it too.
	kvm := &VirtualMachine{TypeMeta: TypeMeta{Kind: "VirtualMachine"}, Metadata: ObjectMeta{Name: "k", Tenant: "lab"},
		Spec: VirtualMachineSpec{Boot: VMBoot{From: BootFromKernel, Kernel: &BootFile{Image: "vmlinuz"}, Initrd: &BootFile{URL: "https://x/initrd"}}}}
	missing, _ = ResolveReferences(kvm, none, nil)
	if len(missing) != 1 || missing[0].String() != `spec.boot.kernel.image: image "vmlinuz" does not exist in tenant lab or among the shared images` {
		t.Errorf("unresolved kernel image: %v", missing)
	}
	if c := ResolvedCondition(nil); c.Status != ConditionTrue || c.Reason != ReasonResolved {
		t.Errorf("ResolvedCondition(none) = %+v", c)
	}
}
