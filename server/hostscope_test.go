package server_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/server/store"
)

// hostScopeLab is two tenants' objects: tenant a has VM web-1 on h1 (with
// the SSHKey, SecurityGroup, Volume and network it names, and an SSHKey
// and a SecurityGroup it does not name); tenant b has the same on h2.
func hostScopeLab(t *testing.T, env *servertest.Env) {
	t.Helper()
	ctx := servertest.Ctx(t)
	for _, tenant := range []string{"a", "b"} {
		env.Tenant(tenant)
		env.Needs("VirtualMachine", tenant)
		unused := servertest.Example("SSHKey", tenant)
		unused.GetMetadata().Name = "unused"
		spare := servertest.Example("SecurityGroup", tenant)
		spare.GetMetadata().Name = "spare"
		vm := servertest.Example("VirtualMachine", tenant).(*api.VirtualMachine)
		vm.Spec.Host = map[string]string{"a": "h1", "b": "h2"}[tenant]
		// A volume cloned from a snapshot of web-1-root, placed on
		// the other host: web-1's host deletes the snapshot's data
		// only once no such clone is left.
		clone := servertest.Example("Volume", tenant).(*api.Volume)
		clone.Metadata.Name, clone.Spec.Host = "clone", "h3"
		clone.Spec.Source = api.VolumeSource{Snapshot: "web-1-root-before-upgrade"}
		for _, o := range []api.Object{servertest.Example("SSHKey", tenant), unused, servertest.Example("SecurityGroup", tenant), spare,
			servertest.Example("Volume", tenant), servertest.Example("Snapshot", tenant), clone, vm} {
			if _, err := env.Admin.Create(ctx, o); err != nil {
				t.Fatalf("creating %s: %v", api.Ref(o), err)
			}
		}
	}
}

// keys lists kind as c reads it across tenants, as tenant/name keys.
func keys(t *testing.T, c *client.Client, kind string) ([]string, string) {
	t.Helper()
	objs, rv, err := c.List(servertest.Ctx(t), kind, "", client.ListOptions{AllTenants: true})
	if err != nil {
		t.Fatalf("listing %s: %v", kind, err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, client.Key(o))
	}
	return out, rv
}

// TestHostReadsOnlyWhatItNeeds: a host's credential reads the VMs placed
// on it and the SSHKeys, SecurityGroups, Volumes and networks they use,
// and not another tenant's VM, key, group, volume or network that nothing
// on it needs, by get, list or watch; nor its own tenant's key or group
// that no VM of it names.
func TestHostReadsOnlyWhatItNeeds(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	h1 := env.Host("h1")
	env.Host("h2")
	hostScopeLab(t, env)
	ctx := servertest.Ctx(t)

	tests := []struct {
		kind, tenant, name string
		reads              bool
	}{
		{"VirtualMachine", "a", "web-1", true},
		{"SSHKey", "a", "alice", true},
		{"SecurityGroup", "a", "web", true},
		{"Volume", "a", "web-1-root", true},
		{"Network", "a", "net1", true},
		{"Subnet", "a", "net1-a", true},
		{"Volume", "a", "clone", true},
		{"SSHKey", "a", "unused", false},
		{"SecurityGroup", "a", "spare", false},
		{"VirtualMachine", "b", "web-1", false},
		{"SSHKey", "b", "alice", false},
		{"SecurityGroup", "b", "web", false},
		{"Volume", "b", "web-1-root", false},
		{"Network", "b", "net1", false},
		{"Subnet", "b", "net1-a", false},
		{"Volume", "b", "clone", false},
	}
	listed := map[string][]string{}
	for _, tt := range tests {
		key := tt.tenant + "/" + tt.name
		_, err := h1.Get(ctx, tt.kind, tt.tenant, tt.name)
		switch {
		case tt.reads && err != nil:
			t.Errorf("h1 getting %s %s, which it needs: %v", tt.kind, key, err)
		case !tt.reads && !api.IsNotFound(err):
			t.Errorf("h1 getting %s %s, which nothing on it needs: got %v, want NotFound", tt.kind, key, err)
		}
		if _, ok := listed[tt.kind]; !ok {
			listed[tt.kind], _ = keys(t, h1, tt.kind)
		}
		if got := slices.Contains(listed[tt.kind], key); got != tt.reads {
			t.Errorf("h1's list of %s: has %s = %v, want %v (%v)", tt.kind, key, got, tt.reads, listed[tt.kind])
		}
		objs, _, err := h1.List(ctx, tt.kind, tt.tenant, client.ListOptions{})
		if err != nil {
			t.Errorf("h1 listing %s in tenant %s: %v", tt.kind, tt.tenant, err)
		}
		if got := slices.ContainsFunc(objs, func(o api.Object) bool { return client.Key(o) == key }); got != tt.reads {
			t.Errorf("h1's list of %s in tenant %s: has %s = %v, want %v", tt.kind, tt.tenant, key, got, tt.reads)
		}
	}

	// Watches: a change of what h1 does not need is never sent; a
	// change of what it needs, made after, is.
	for _, kind := range []string{"VirtualMachine", "SSHKey", "SecurityGroup", "Volume"} {
		_, rv := keys(t, h1, kind)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		events, _, err := h1.WatchOnce(wctx, kind, "", client.ListOptions{AllTenants: true, ResourceVersion: rv})
		if err != nil {
			t.Fatalf("h1 watching %s: %v", kind, err)
		}
		name := api.Examples()[kind].GetMetadata().Name
		for _, tenant := range []string{"b", "a"} {
			patch := map[string]any{"metadata": map[string]any{"labels": map[string]string{"touched": "yes"}}}
			if _, err := env.Admin.Patch(ctx, kind, tenant, name, patch, false); err != nil {
				t.Fatal(err)
			}
		}
		for ev := range events {
			if ev.Object == nil {
				continue
			}
			if key := client.Key(ev.Object); key != "a/"+name {
				t.Errorf("h1's watch of %s: got %s %s, which nothing on it needs", kind, ev.Type, key)
				continue
			}
			break
		}
		if wctx.Err() != nil {
			t.Errorf("h1's watch of %s: the change of a/%s it needs never came", kind, name)
		}
		cancel()
	}
}

// TestHostScopeFollowsPlacement: what a host reads follows what is placed
// on it, in an informer's cache as it watches (the scope's change ends
// the watch, and the informer lists again): tenant b's SSHKey and
// network appear when a VM of b naming them is placed on h1, and go
// when it leaves; a VM moving to h1 is read, with the source still
// reading it while it runs there.
func TestHostScopeFollowsPlacement(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	h1, h2, h3 := env.Host("h1"), env.Host("h2"), env.Host("h3")
	hostScopeLab(t, env)
	ctx := servertest.Ctx(t)
	all := client.ListOptions{AllTenants: true}
	infs := map[string]*client.Informer{}
	for _, kind := range []string{"SSHKey", "SecurityGroup", "Network", "Volume"} {
		infs[kind] = client.NewInformer(h1, kind, "", all)
		go infs[kind].Run(ctx)
		if err := infs[kind].WaitSynced(ctx); err != nil {
			t.Fatal(err)
		}
	}
	has := func(kind, key string, want bool) func() error {
		return func() error {
			if _, ok := infs[kind].Get(key); ok != want {
				return fmt.Errorf("h1's informer of %s: has %s = %v, want %v (%v)", kind, key, ok, want, infs[kind].Keys())
			}
			return nil
		}
	}
	for kind, key := range map[string]string{"SSHKey": "b/alice", "SecurityGroup": "b/web", "Network": "b/net1", "Volume": "b/web-1-root"} {
		servertest.Eventually(t, 5*time.Second, has(kind, key, false))
	}
	// A second VM of b, on h1.
	vm := servertest.Example("VirtualMachine", "b").(*api.VirtualMachine)
	vm.Metadata.Name, vm.Spec.Host = "web-2", "h1"
	if _, err := env.Admin.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	for kind, key := range map[string]string{"SSHKey": "b/alice", "SecurityGroup": "b/web", "Network": "b/net1", "Volume": "b/web-1-root"} {
		servertest.Eventually(t, 10*time.Second, has(kind, key, true))
	}
	servertest.Eventually(t, 5*time.Second, has("SSHKey", "b/unused", false))
	if _, err := env.Admin.Delete(ctx, "VirtualMachine", "b", "web-2"); err != nil {
		t.Fatal(err)
	}
	for kind, key := range map[string]string{"SSHKey": "b/alice", "SecurityGroup": "b/web", "Network": "b/net1", "Volume": "b/web-1-root"} {
		servertest.Eventually(t, 10*time.Second, has(kind, key, false))
	}

	// b's mover moves from h2 to h3 (the destination says so, as its
	// agent does when its QEMU listens): both read it while it moves,
	// h1 does not.
	mover := servertest.Example("VirtualMachine", "b").(*api.VirtualMachine)
	mover.Metadata.Name, mover.Spec.Host, mover.Spec.NICs = "mover", "h3", nil
	mover.Spec.Disks = []api.VMDisk{{Image: "debian-12", Size: 10 << 30}}
	if _, err := env.Admin.Create(ctx, mover); err != nil {
		t.Fatal(err)
	}
	if _, err := h2.Get(ctx, "VirtualMachine", "b", "mover"); !api.IsNotFound(err) {
		t.Errorf("h2 reading b's VM on h3 before it moves from h2: got %v, want NotFound", err)
	}
	migration := map[string]any{"status": map[string]any{"migration": map[string]any{"from": "h2", "incoming": "tcp:127.0.0.1:4444"}}}
	if _, err := h3.Patch(ctx, "VirtualMachine", "b", "mover", migration, true); err != nil {
		t.Fatalf("h3 writing the migration of its VM: %v", err)
	}
	for name, c := range map[string]*client.Client{"h2": h2, "h3": h3} {
		if _, err := c.Get(ctx, "VirtualMachine", "b", "mover"); err != nil {
			t.Errorf("%s reading the VM moving from h2 to h3: %v", name, err)
		}
	}
	if _, err := h1.Get(ctx, "VirtualMachine", "b", "mover"); !api.IsNotFound(err) {
		t.Errorf("h1 reading b's VM moving from h2 to h3: got %v, want NotFound", err)
	}
}

// placeVM places a VM of tenant on host, so that the host reads the
// tenant's images and networks (see TestHostReadsOnlyWhatItNeeds).
func placeVM(t *testing.T, env *servertest.Env, tenant, host string) {
	t.Helper()
	vm := servertest.Example("VirtualMachine", tenant).(*api.VirtualMachine)
	vm.Metadata.Name, vm.Spec.Host, vm.Spec.NICs = "on-"+host, host, nil
	vm.Spec.Disks = []api.VMDisk{{Image: "debian-12", Size: 10 << 30}}
	if _, err := env.Admin.Create(servertest.Ctx(t), vm); err != nil {
		t.Fatalf("placing a VM of tenant %s on %s: %v", tenant, host, err)
	}
}

// A list of several prefixes (a host's tenants, or a tenant's own and
// the shared objects) reads every prefix at one revision: read at two,
// an object created between the reads is in neither the list nor the
// watch from the list's revision. Store.ListAt reads at the revision it
// is given, not the latest.
func TestListAtOneRevision(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	env.Tenant("a")
	env.Tenant("b")
	k, _ := api.KindByName("SSHKey")
	st := env.Server.Store()
	mk := func(tenant, name string) {
		o := servertest.Example("SSHKey", tenant)
		o.GetMetadata().Name = name
		if _, err := env.Admin.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	mk("a", "first")
	_, rev, err := st.ListAt(ctx, k, store.TenantPrefix(k, "a"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	mk("b", "later")
	objs, got, err := st.ListAt(ctx, k, store.TenantPrefix(k, "b"), nil, rev)
	if err != nil {
		t.Fatal(err)
	}
	if got != rev || len(objs) != 0 {
		t.Errorf("ListAt(b, %d) = %d objects at revision %d, want none at %d", rev, len(objs), got, rev)
	}
	objs, got, err = st.ListAt(ctx, k, store.TenantPrefix(k, "b"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got <= rev || len(objs) != 1 {
		t.Errorf("ListAt(b, 0) = %d objects at revision %d, want 1 after %d", len(objs), got, rev)
	}
}
