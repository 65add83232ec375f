package server_test

import (
	"reflect"
	"strings"
	"sync"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

// warnings collects what a client is warned about.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) add(m string) { w.mu.Lock(); w.msgs = append(w.msgs, m); w.mu.Unlock() }

// take returns the warnings so far and forgets them.
func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

func warned(c *client.Client) (*client.Client, *warnings) {
	w := &warnings{}
	return c.WithWarnings(w.add), w
}

// TestWarningsNameMissingReferences: a write whose spec names objects
// that do not exist succeeds with a warning per missing name, worded
// with the field and the tenant; names of another tenant's objects do
// not resolve; a tenant is told nothing about cluster objects it cannot
// read; status writes are not warned about.
func TestWarningsNameMissingReferences(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	env.Tenant("lab")
	env.Tenant("other")
	user, w := warned(env.User("alice", "lab", api.RoleTenantAdmin))
	admin, aw := warned(env.Admin)

	// "other" has a network called lan; lab does not. A NIC needs its
	// network and subnet to exist (IPAM takes its address there), so it
	// is refused, in the words of the warnings, which tell nothing of
	// other's.
	if _, err := env.Admin.Create(ctx, &api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"},
		Metadata: api.ObjectMeta{Name: "lan", Tenant: "other"}}); err != nil {
		t.Fatal(err)
	}
	vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
		Metadata: api.ObjectMeta{Name: "web-1", Tenant: "lab"},
		Spec: api.VirtualMachineSpec{
			Disks:     []api.VMDisk{{Volume: "root"}, {Image: "debian-12"}},
			NICs:      []api.VMNIC{{Network: "lan", Subnet: "lan-a", SecurityGroups: []string{"web"}}},
			CloudInit: api.CloudInit{SSHKeys: []string{"alice"}},
		}}
	_, err := user.Create(ctx, vm)
	if st, ok := err.(*api.Status); !ok || len(st.Fields) != 1 ||
		st.Fields[0].Error() != `spec.nics[0].network: network "lan" does not exist in tenant lab; create it (and a subnet on it) first` {
		t.Fatalf("create on a missing network: got %v, want a 422 on spec.nics[0].network", err)
	}
	w.take()
	for _, o := range []api.Object{
		&api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"}, Metadata: api.ObjectMeta{Name: "lan", Tenant: "lab"}},
		&api.Subnet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Subnet"}, Metadata: api.ObjectMeta{Name: "lan-a", Tenant: "lab"},
			Spec: api.SubnetSpec{Network: "lan", CIDR: "10.0.0.0/24"}},
	} {
		if _, err := user.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	w.take()
	created, err := user.Create(ctx, vm)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	want := []string{
		`spec.nics[0].securityGroups[0]: security group "web" does not exist in tenant lab`,
		`spec.disks[0].volume: volume "root" does not exist in tenant lab`,
		`spec.disks[1].image: image "debian-12" does not exist in tenant lab or among the shared images`,
		`spec.cloudInit.sshKeys[0]: SSH key "alice" does not exist in tenant lab`,
	}
	if got := w.take(); !reflect.DeepEqual(got, want) {
		t.Fatalf("warnings on create:\n got %q\nwant %q", got, want)
	}

	// Make one of them exist: a shared image. Re-writing the unchanged
	// VM warns about the rest.
	img := servertest.Example("Image", "")
	if _, err := env.Admin.Create(ctx, img); err != nil {
		t.Fatal(err)
	}
	w.take()
	if _, err := user.Update(ctx, created); err != nil {
		t.Fatalf("update: %v", err)
	}
	want = []string{
		`spec.nics[0].securityGroups[0]: security group "web" does not exist in tenant lab`,
		`spec.disks[0].volume: volume "root" does not exist in tenant lab`,
		`spec.cloudInit.sshKeys[0]: SSH key "alice" does not exist in tenant lab`,
	}
	if got := w.take(); !reflect.DeepEqual(got, want) {
		t.Fatalf("warnings on an unchanged update:\n got %q\nwant %q", got, want)
	}
	// A patch and a dry run warn the same way; a status write does not.
	if _, err := user.DryRun().Patch(ctx, "VirtualMachine", "lab", "web-1", map[string]any{"spec": map[string]any{"cpus": 2}}, false); err != nil {
		t.Fatal(err)
	}
	if got := w.take(); !reflect.DeepEqual(got, want) {
		t.Fatalf("warnings on a dry-run patch:\n got %q\nwant %q", got, want)
	}
	if _, err := admin.Patch(ctx, "VirtualMachine", "lab", "web-1", map[string]any{"status": map[string]any{"phase": "Pending"}}, true); err != nil {
		t.Fatal(err)
	}
	if got := aw.take(); len(got) != 0 {
		t.Errorf("a status write was warned about: %q", got)
	}

	// External networks are cluster objects a tenant cannot read, but
	// may name: a floating IP's address comes from one, so one that does
	// not exist is refused (saying no more than that), and one that does
	// is not warned about.
	fip := &api.FloatingIP{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "FloatingIP"},
		Metadata: api.ObjectMeta{Name: "web", Tenant: "lab"},
		Spec:     api.FloatingIPSpec{ExternalNetwork: "uplink", Target: &api.FloatingIPTarget{VM: "web-2"}}}
	_, err = user.Create(ctx, fip)
	if st, ok := err.(*api.Status); !ok || len(st.Fields) != 1 || st.Fields[0].Error() != `spec.externalNetwork: external network "uplink" not found` {
		t.Fatalf("a floating IP on a missing external network: got %v", err)
	}
	if _, err := env.Admin.Create(ctx, &api.ExternalNetwork{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "ExternalNetwork"},
		Metadata: api.ObjectMeta{Name: "uplink"}, Spec: api.ExternalNetworkSpec{CIDR: "192.0.2.0/24"}}); err != nil {
		t.Fatal(err)
	}
	w.take()
	if _, err := user.Create(ctx, fip); err != nil {
		t.Fatal(err)
	}
	got := w.take()
	if want := []string{`spec.target.vm: VM "web-2" does not exist in tenant lab`}; !reflect.DeepEqual(got, want) {
		t.Errorf("a tenant's floating IP warnings:\n got %q\nwant %q", got, want)
	}
	for _, m := range got {
		if strings.Contains(m, "uplink") {
			t.Errorf("a tenant was told about an external network: %q", m)
		}
	}
	if _, err := user.Get(ctx, "ExternalNetwork", "", "uplink"); !api.IsForbidden(err) {
		t.Errorf("a tenant reading an external network: got %v, want Forbidden", err)
	}
	if _, err := admin.Update(ctx, mustGet(t, env.Admin, "FloatingIP", "lab", "web")); err != nil {
		t.Fatal(err)
	}
	if got, want := aw.take(), []string{`spec.target.vm: VM "web-2" does not exist in tenant lab`}; !reflect.DeepEqual(got, want) {
		t.Errorf("an admin's floating IP warnings:\n got %q\nwant %q", got, want)
	}

	// A subnet naming a missing network is accepted, with a warning.
	if _, err := user.Create(ctx, &api.Subnet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Subnet"},
		Metadata: api.ObjectMeta{Name: "orphan", Tenant: "lab"}, Spec: api.SubnetSpec{Network: "nowhere", CIDR: "10.9.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	if got, want := w.take(), []string{`spec.network: network "nowhere" does not exist in tenant lab`}; !reflect.DeepEqual(got, want) {
		t.Errorf("subnet warnings:\n got %q\nwant %q", got, want)
	}
}

func mustGet(t *testing.T, c *client.Client, kind, tenant, name string) api.Object {
	t.Helper()
	o, err := c.Get(servertest.Ctx(t), kind, tenant, name)
	if err != nil {
		t.Fatal(err)
	}
	return o
}
