package e2e

import (
	"fmt"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// TestHAReadYourWrites: on a three-member control plane, what one server
// acknowledged another sees at once, though a create's later reads and
// an update's first read are served by the member's own copy (store's
// read sessions): a VM created through s2 the moment its network and
// subnet were made through s1 gets an address in them, and an update
// through s2 conditional on the version s1 just answered is not refused
// as stale.
func TestHAReadYourWrites(t *testing.T) {
	_, procs, _ := startThree(t)
	ctx := servertest.Ctx(t)
	c1, c2 := procs[0].client(), procs[1].client()
	for i := range 30 {
		net := fmt.Sprintf("n%d", i)
		sn := &api.Subnet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Subnet"},
			Metadata: api.ObjectMeta{Name: net + "-a", Tenant: "default"},
			Spec:     api.SubnetSpec{Network: net, CIDR: fmt.Sprintf("10.%d.0.0/24", i)}}
		for _, o := range []api.Object{network(net, "default"), sn} {
			if _, err := c1.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
			Metadata: api.ObjectMeta{Name: fmt.Sprintf("vm%d", i), Tenant: "default"},
			Spec: api.VirtualMachineSpec{CPUs: 1, Memory: 64 << 20, Boot: api.VMBoot{From: api.BootFromNetwork},
				NICs: []api.VMNIC{{Network: net}}, CloudInit: api.CloudInit{Disabled: true}}}
		out, err := c2.Create(ctx, vm)
		if err != nil {
			t.Fatalf("creating a VM through s2 on a network just made through s1: %v", err)
		}
		got := out.(*api.VirtualMachine)
		if len(got.Status.Interfaces) != 1 || got.Status.Interfaces[0].IP == "" {
			t.Fatalf("VM %s has interfaces %+v, want an address in %s", got.Metadata.Name, got.Status.Interfaces, sn.Spec.CIDR)
		}
		// The controllers write the VM too (the scheduler's verdict), so
		// a 409 is a failure only if the version s1 answered is still
		// the stored one.
		for attempt := 0; ; attempt++ {
			cur, err := c1.Get(ctx, "VirtualMachine", "default", got.Metadata.Name)
			if err != nil {
				t.Fatal(err)
			}
			cur.GetMetadata().Labels = map[string]string{"round": "1"}
			out, err = c1.Update(ctx, cur)
			if api.IsConflict(err) && attempt < 10 {
				continue // a controller's write came between
			}
			if err != nil {
				t.Fatal(err)
			}
			next := out.(*api.VirtualMachine)
			next.Metadata.Labels["round"] = "2"
			_, err = c2.Update(ctx, next)
			if err == nil {
				break
			}
			if !api.IsConflict(err) || attempt == 10 {
				t.Fatalf("updating through s2 at the version s1 just answered: %v", err)
			}
			stored, gerr := c1.Get(ctx, "VirtualMachine", "default", got.Metadata.Name)
			if gerr != nil {
				t.Fatal(gerr)
			}
			if stored.GetMetadata().ResourceVersion == next.Metadata.ResourceVersion {
				t.Fatalf("s2 refused version %s as stale, which is the stored one: %v", next.Metadata.ResourceVersion, err)
			}
		}
	}
}
