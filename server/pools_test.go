package server_test

import (
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

func storagePool(name string, spec api.StoragePoolSpec) *api.StoragePool {
	return &api.StoragePool{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "StoragePool"}, Metadata: api.ObjectMeta{Name: name}, Spec: spec}
}

func poolVolume(name, tenant, pool string) *api.Volume {
	return &api.Volume{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Volume"}, Metadata: api.ObjectMeta{Name: name, Tenant: tenant},
		Spec: api.VolumeSpec{Size: 1 << 30, Pool: pool}}
}

// TestVolumePools: a volume naming a pool gets the pool's driver as its
// backend and the driver's format; a pool that does not exist, a backend
// or format the pool does not have, and a pool that is a path are
// refused with the field that is wrong; the pool cannot change.
func TestVolumePools(t *testing.T) {
	env := servertest.Start(t)
	ctx := servertest.Ctx(t)
	env.Tenant("a")
	alice := env.User("alice", "a", api.RoleTenantAdmin)
	for _, p := range []*api.StoragePool{
		storagePool("ceph", api.StoragePoolSpec{Driver: api.PoolDriverRBD, RBD: &api.RBDPoolSpec{Monitors: []string{"192.0.2.1"}, Pool: "vms"}}),
		storagePool("nas", api.StoragePoolSpec{Driver: api.PoolDriverNFS, NFS: &api.NFSPoolSpec{Server: "192.0.2.2", Export: "/srv/hearth"}}),
	} {
		if _, err := env.Admin.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		pool, backend, format string
	}{{"ceph", api.BackendRBD, api.FormatRaw}, {"nas", api.BackendNFS, api.FormatQCOW2}} {
		out, err := alice.Create(ctx, poolVolume("on-"+tt.pool, "a", tt.pool))
		if err != nil {
			t.Fatalf("volume in pool %s: %v", tt.pool, err)
		}
		if s := out.(*api.Volume).Spec; s.Backend != tt.backend || s.Format != tt.format {
			t.Errorf("volume in pool %s: backend %q format %q, want %q %q", tt.pool, s.Backend, s.Format, tt.backend, tt.format)
		}
	}
	// A write that leaves backend and format out keeps them.
	if _, err := alice.Patch(ctx, "Volume", "a", "on-ceph", map[string]any{"spec": map[string]any{"size": "2Gi"}}, false); err != nil {
		t.Errorf("growing a volume in a pool: %v", err)
	}

	for _, tt := range []struct {
		name  string
		edit  func(*api.Volume)
		field string
	}{
		{"no such pool", func(v *api.Volume) { v.Spec.Pool = "nope" }, "spec.pool"},
		{"a path for a pool", func(v *api.Volume) { v.Spec.Pool = "/etc" }, "spec.pool"},
		{"a parent for a pool", func(v *api.Volume) { v.Spec.Pool = ".." }, "spec.pool"},
		{"another backend", func(v *api.Volume) { v.Spec.Backend = api.BackendNFS }, "spec.backend"},
		{"qcow2 on rbd", func(v *api.Volume) { v.Spec.Format = api.FormatQCOW2 }, "spec.format"},
		{"rbd without a pool", func(v *api.Volume) { v.Spec.Pool, v.Spec.Backend = "", api.BackendRBD }, "spec.pool"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := poolVolume("bad", "a", "ceph")
			tt.edit(v)
			_, err := alice.Create(ctx, v)
			if !(api.ReasonOf(err) == api.ReasonInvalid) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("create = %v, want a 422 on %s", err, tt.field)
			}
			if _, err := env.Admin.Get(ctx, "Volume", "a", "bad"); !api.IsNotFound(err) {
				t.Errorf("the refused volume was written (%v)", err)
			}
		})
	}
	_, err := alice.Patch(ctx, "Volume", "a", "on-ceph", map[string]any{"spec": map[string]any{"pool": "nas"}}, false)
	if !(api.ReasonOf(err) == api.ReasonInvalid) || !strings.Contains(err.Error(), "spec.pool") {
		t.Errorf("moving a volume to another pool = %v, want a 422 on spec.pool", err)
	}
}

// TestHostReadsPoolKeyringsOnly: a host reads the Secret a StoragePool
// names as its keyringSecret (it needs the key to open the pool's
// volumes), whole; it reads no other Secret, lists none, and writes none.
// A tenant user reads no Secret, the pool's key included, and a tenant
// cannot make a pool (which would make a host hand its Secret out).
func TestHostReadsPoolKeyringsOnly(t *testing.T) {
	env := servertest.Start(t)
	ctx := servertest.Ctx(t)
	env.Tenant("a")
	alice := env.User("alice", "a", api.RoleTenantAdmin)
	for name, data := range map[string]string{"ceph-key": "AQBnJ2Nn0000000000000000000000000000000==", "bmc": "hunter2"} {
		if _, err := env.Admin.Create(ctx, newSecret(name, map[string]string{"key": data})); err != nil {
			t.Fatal(err)
		}
	}
	pool := storagePool("ceph", api.StoragePoolSpec{Driver: api.PoolDriverRBD, RBD: &api.RBDPoolSpec{Monitors: []string{"192.0.2.1"}, Pool: "vms",
		KeyringSecret: &api.SecretKeyRef{Name: "ceph-key", Key: "key"}}})
	if _, err := env.Admin.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	h1 := env.Host("h1")

	got, err := h1.Get(ctx, "Secret", "", "ceph-key")
	if err != nil {
		t.Fatalf("host reads its pool's keyring: %v", err)
	}
	if v := string(got.(*api.Secret).Spec.Data["key"]); v != "AQBnJ2Nn0000000000000000000000000000000==" {
		t.Errorf("host read the keyring as %q, want the key", v)
	}
	if _, err := h1.Get(ctx, "Secret", "", "bmc"); !api.IsForbidden(err) {
		t.Errorf("host reads a Secret no pool names: %v, want forbidden", err)
	}
	if _, _, err := h1.List(ctx, "Secret", "", client.ListOptions{}); !api.IsForbidden(err) {
		t.Errorf("host lists Secrets: %v, want forbidden", err)
	}
	if _, err := h1.Update(ctx, got); !api.IsForbidden(err) {
		t.Errorf("host rewrites its pool's keyring: %v, want forbidden", err)
	}
	if _, err := alice.Get(ctx, "Secret", "", "ceph-key"); err == nil {
		t.Error("a tenant user reads the pool's keyring")
	}
	mine := storagePool("mine", api.StoragePoolSpec{Driver: api.PoolDriverRBD, RBD: &api.RBDPoolSpec{Monitors: []string{"192.0.2.1"}, Pool: "vms",
		KeyringSecret: &api.SecretKeyRef{Name: "bmc", Key: "key"}}})
	if _, err := alice.Create(ctx, mine); !api.IsForbidden(err) {
		t.Errorf("a tenant admin makes a pool naming the BMC password as its keyring: %v, want forbidden", err)
	}
	if _, err := h1.Get(ctx, "Secret", "", "bmc"); !api.IsForbidden(err) {
		t.Errorf("after a tenant's try at a pool, the host reads the BMC password: %v", err)
	}
}

// TestMigrationAdmission: changing a placed VM's spec.host asks to move
// it, which only works for VMs whose disks are all Volumes in shared
// pools; a VM with a disk cloned from an image or a local volume is
// refused with the reason on spec.host, and nothing changes. A VM with
// NICs moves (its ports follow it: TestPortsFollowLiveMigration).
func TestMigrationAdmission(t *testing.T) {
	env := servertest.Start(t)
	ctx := servertest.Ctx(t)
	env.Tenant("a")
	alice := env.User("alice", "a", api.RoleTenantAdmin)
	if _, err := env.Admin.Create(ctx, storagePool("ceph", api.StoragePoolSpec{Driver: api.PoolDriverRBD,
		RBD: &api.RBDPoolSpec{Monitors: []string{"192.0.2.1"}, Pool: "vms"}})); err != nil {
		t.Fatal(err)
	}
	shared := poolVolume("shared", "a", "ceph")
	local := &api.Volume{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Volume"}, Metadata: api.ObjectMeta{Name: "local", Tenant: "a"},
		Spec: api.VolumeSpec{Size: 1 << 30}}
	for _, v := range []*api.Volume{shared, local} {
		if _, err := alice.Create(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.Create(ctx, &api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"},
		Metadata: api.ObjectMeta{Name: "lan", Tenant: "a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Create(ctx, &api.Subnet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Subnet"}, Metadata: api.ObjectMeta{Name: "lan-a", Tenant: "a"},
		Spec: api.SubnetSpec{Network: "lan", CIDR: "10.0.0.0/24", Gateway: "10.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	withNIC := func(vm *api.VirtualMachine) *api.VirtualMachine {
		vm.Spec.NICs = []api.VMNIC{{Network: "lan"}}
		return vm
	}
	vm := func(name string, disks ...api.VMDisk) *api.VirtualMachine {
		return &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"}, Metadata: api.ObjectMeta{Name: name, Tenant: "a"},
			Spec: api.VirtualMachineSpec{Host: "h1", CPUs: 1, Memory: 256 << 20, Disks: disks}}
	}
	for _, tt := range []struct {
		vm   *api.VirtualMachine
		want string // "" means the move is accepted
	}{
		{vm("on-shared", api.VMDisk{Volume: "shared"}), ""},
		{vm("on-local", api.VMDisk{Volume: "local"}), "lives on h1's disk"},
		{vm("on-image", api.VMDisk{Image: "debian", Size: 1 << 30}), "clone of image debian"},
		{withNIC(vm("with-nic", api.VMDisk{Volume: "shared"})), ""},
	} {
		if _, err := alice.Create(ctx, tt.vm); err != nil {
			t.Fatalf("%s: %v", tt.vm.Metadata.Name, err)
		}
		_, err := alice.Patch(ctx, "VirtualMachine", "a", tt.vm.Metadata.Name, map[string]any{"spec": map[string]any{"host": "h2"}}, false)
		got, gerr := env.Admin.Get(ctx, "VirtualMachine", "a", tt.vm.Metadata.Name)
		if gerr != nil {
			t.Fatal(gerr)
		}
		host := got.(*api.VirtualMachine).Spec.Host
		switch {
		case tt.want == "" && (err != nil || host != "h2"):
			t.Errorf("%s: move = %v, host %q; want it moving to h2", tt.vm.Metadata.Name, err, host)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), "spec.host") || !strings.Contains(err.Error(), tt.want) || host != "h1"):
			t.Errorf("%s: move = %v, host %q; want a 422 on spec.host saying %q, and the VM left on h1", tt.vm.Metadata.Name, err, host, tt.want)
		}
	}
}
