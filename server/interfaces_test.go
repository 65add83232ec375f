package server_test

import (
	"reflect"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// TestHostCannotRewriteInterfaces: a VM's host writes its status, but
// not its NICs' addresses: the server allocated them, and the host's DHCP
// and anti-spoofing will trust them, so a host that could rewrite them
// could take another VM's address (or one in another tenant's range).
// Its write goes through with everything else it says, and the
// interfaces stay as allocated.
func TestHostCannotRewriteInterfaces(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	host := env.Host("h1")
	tm := func(kind string) api.TypeMeta { return api.TypeMeta{APIVersion: api.APIVersion, Kind: kind} }
	for _, o := range []api.Object{
		&api.Network{TypeMeta: tm("Network"), Metadata: api.ObjectMeta{Name: "lan", Tenant: "lab"}},
		&api.Subnet{TypeMeta: tm("Subnet"), Metadata: api.ObjectMeta{Name: "lan-a", Tenant: "lab"}, Spec: api.SubnetSpec{Network: "lan", CIDR: "10.0.0.0/24"}},
		&api.VirtualMachine{TypeMeta: tm("VirtualMachine"), Metadata: api.ObjectMeta{Name: "web", Tenant: "lab"},
			Spec: api.VirtualMachineSpec{Host: "h1", Boot: api.VMBoot{From: api.BootFromNetwork}, NICs: []api.VMNIC{{Network: "lan"}}}},
	} {
		if _, err := env.Admin.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	before, err := env.Admin.Get(ctx, "VirtualMachine", "lab", "web")
	if err != nil {
		t.Fatal(err)
	}
	forged := []map[string]any{{"network": "lan", "subnet": "lan-a", "ip": "10.0.0.99", "mac": "52:54:00:00:00:99"}}
	if _, err := host.Patch(ctx, "VirtualMachine", "lab", "web", map[string]any{"status": map[string]any{"phase": api.VMRunning, "interfaces": forged}}, true); err != nil {
		t.Fatalf("the host's status write: %v", err)
	}
	after, err := env.Admin.Get(ctx, "VirtualMachine", "lab", "web")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := after.(*api.VirtualMachine).Status.Interfaces, before.(*api.VirtualMachine).Status.Interfaces; !reflect.DeepEqual(got, want) {
		t.Errorf("the host rewrote the VM's interfaces to %+v (allocated: %+v)", got, want)
	}
	if after.CommonStatus().Phase != api.VMRunning {
		t.Errorf("the rest of the host's write was lost: phase %q", after.CommonStatus().Phase)
	}
}
