package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/server/store"
)

// bindingVM is a VM that needs nothing but a host.
func bindingVM(tenant, name string) *api.VirtualMachine {
	return &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
		Metadata: api.ObjectMeta{Name: name, Tenant: tenant},
		Spec: api.VirtualMachineSpec{CPUs: 1, Memory: 64 << 20,
			Boot: api.VMBoot{From: api.BootFromKernel, Kernel: &api.BootFile{Image: "vmlinuz"}}}}
}

func createVMs(t *testing.T, c *client.Client, tenant string, names ...string) map[string]*api.VirtualMachine {
	t.Helper()
	out := map[string]*api.VirtualMachine{}
	for _, n := range names {
		o, err := c.Create(servertest.Ctx(t), bindingVM(tenant, n))
		if err != nil {
			t.Fatalf("creating VM %s: %v", n, err)
		}
		out[n] = o.(*api.VirtualMachine)
	}
	return out
}

func storedVM(t *testing.T, env *servertest.Env, tenant, name string) *api.VirtualMachine {
	t.Helper()
	o, err := env.Admin.Get(servertest.Ctx(t), "VirtualMachine", tenant, name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*api.VirtualMachine)
}

// TestBindingsBatch: bindings written together each stand alone. The
// bound VMs are Scheduled and have their Scheduled event, all in one etcd
// transaction (one resourceVersion); a VM changed after the version its
// binding names is not bound and keeps its change (a Conflict); a VM
// that is gone is NotFound; and a VM named twice is bound once, the
// second binding finding it changed.
func TestBindingsBatch(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	vms := createVMs(t, env.Admin, "lab", "a", "b", "c", "d")
	// b changes after the scheduler read it.
	if _, err := env.Admin.Patch(ctx, "VirtualMachine", "lab", "b", map[string]any{"metadata": map[string]any{"labels": map[string]string{"changed": "yes"}}}, false); err != nil {
		t.Fatal(err)
	}
	item := func(name, host string) api.BindingItem {
		return api.BindingItem{Tenant: "lab", Name: name, ResourceVersion: vms[name].Metadata.ResourceVersion, Host: host}
	}
	gone := api.BindingItem{Tenant: "lab", Name: "gone", ResourceVersion: "5", Host: "h1"}
	out, err := env.Admin.Bind(ctx, []api.BindingItem{item("a", "h1"), item("b", "h2"), item("c", "h2"), gone})
	if err != nil {
		t.Fatal(err)
	}
	// Twice in one request: etcd refuses a transaction that writes a
	// key twice, so these go one by one.
	twice, err := env.Admin.Bind(ctx, []api.BindingItem{item("d", "h1"), item("d", "h2")})
	if err != nil {
		t.Fatal(err)
	}
	out.Items = append(out.Items, twice.Items...)
	wantErr := []api.Reason{"", api.ReasonConflict, "", api.ReasonNotFound, "", api.ReasonConflict}
	for i, o := range out.Items {
		var got api.Reason
		if o.Error != nil {
			got = o.Error.Reason
		}
		if got != wantErr[i] || (got == "") != (o.ResourceVersion != "") {
			t.Errorf("item %d: error %+v, resourceVersion %q; want error reason %q", i, o.Error, o.ResourceVersion, wantErr[i])
		}
	}
	if out.Items[0].ResourceVersion != out.Items[2].ResourceVersion {
		t.Errorf("a and c bound at versions %s and %s: not one transaction", out.Items[0].ResourceVersion, out.Items[2].ResourceVersion)
	}
	for name, host := range map[string]string{"a": "h1", "c": "h2", "d": "h1"} {
		vm := storedVM(t, env, "lab", name)
		c := vm.Status.Condition(api.ConditionScheduled)
		if vm.Spec.Host != host || c == nil || c.Status != api.ConditionTrue || c.Message != "placed on "+host || vm.Status.Phase != api.VMScheduled {
			t.Errorf("VM %s: host %q, phase %q, Scheduled %+v; want bound to %s and Scheduled", name, vm.Spec.Host, vm.Status.Phase, c, host)
		}
		if vm.Metadata.Generation != 2 {
			t.Errorf("VM %s: generation %d, want 2 (the binding changed the spec)", name, vm.Metadata.Generation)
		}
		evs, _, err := env.Admin.List(ctx, "Event", "lab", client.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, o := range evs {
			if e := o.(*api.Event).Spec; e.Reason == "Scheduled" && e.Message == "placed on "+host && e.InvolvedObject.UID == vm.Metadata.UID {
				n++
			}
		}
		if n != 1 {
			t.Errorf("VM %s: %d Scheduled events, want 1", name, n)
		}
	}
	b := storedVM(t, env, "lab", "b")
	if b.Spec.Host != "" || b.Metadata.Labels["changed"] != "yes" {
		t.Errorf("VM b changed before its binding: host %q, labels %v; want unbound with its change kept", b.Spec.Host, b.Metadata.Labels)
	}
}

// TestBindingsRefused: a malformed request changes nothing and says
// what is wrong; an item that names no host is refused alone, by its
// field path.
func TestBindingsRefused(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	vms := createVMs(t, env.Admin, "lab", "a", "b")
	out, err := env.Admin.Bind(ctx, []api.BindingItem{
		{Tenant: "lab", Name: "a", ResourceVersion: vms["a"].Metadata.ResourceVersion},
		{Tenant: "lab", Name: "b", ResourceVersion: vms["b"].Metadata.ResourceVersion, Host: "h1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if e := out.Items[0].Error; e == nil || e.Reason != api.ReasonInvalid || !strings.Contains(e.Error(), "items[0].host") {
		t.Errorf("a binding without a host: %+v, want Invalid naming items[0].host", e)
	}
	if out.Items[1].Error != nil {
		t.Errorf("b, in the same request: %+v, want bound", out.Items[1].Error)
	}
	if a := storedVM(t, env, "lab", "a"); a.Spec.Host != "" {
		t.Errorf("a bound to %q", a.Spec.Host)
	}
	for _, tc := range []struct{ name, body, want string }{
		{"unknown field", `{"items":[{"tenant":"lab","name":"a","resourceVersion":"1","host":"h1","extra":1}]}`, "unknown field"},
		{"too many", `{"items":[` + strings.Repeat(`{"tenant":"lab","name":"a","resourceVersion":"1","host":"h1"},`, 500) + `{"tenant":"lab","name":"a","resourceVersion":"1","host":"h1"}]}`, "items: 501 bindings"},
	} {
		err := env.Admin.Do(ctx, http.MethodPost, api.BindingsPath, []byte(tc.body), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	if a := storedVM(t, env, "lab", "a"); a.Spec.Host != "" {
		t.Errorf("a bound to %q by a refused request", a.Spec.Host)
	}
}

// TestBindingsTenantIsolation: a tenant's user cannot bind another
// tenant's VM through a batch, nor learn whether it exists (the same
// Forbidden for a VM that is there and one that is not), and a viewer
// cannot bind even its own tenant's; the VMs stay as they were.
func TestBindingsTenantIsolation(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	env.Tenant("other")
	ctx := context.Background()
	theirs := createVMs(t, env.Admin, "other", "secret")["secret"]
	ours := createVMs(t, env.Admin, "lab", "mine")["mine"]
	member := env.User("mallory", "lab", api.RoleTenantMember)
	viewer := env.User("victor", "lab", api.RoleViewer)
	out, err := member.Bind(ctx, []api.BindingItem{
		{Tenant: "other", Name: "secret", ResourceVersion: theirs.Metadata.ResourceVersion, Host: "h1"},
		{Tenant: "other", Name: "absent", ResourceVersion: "5", Host: "h1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out.Items {
		if o.Error == nil || o.Error.Reason != api.ReasonForbidden {
			t.Errorf("item %d: %+v, want Forbidden", i, o.Error)
		}
	}
	if a, b := out.Items[0].Error, out.Items[1].Error; a != nil && b != nil && a.Code != b.Code {
		t.Errorf("an existing VM of another tenant answers %d, a missing one %d: tells them apart", a.Code, b.Code)
	}
	out, err = viewer.Bind(ctx, []api.BindingItem{{Tenant: "lab", Name: "mine", ResourceVersion: ours.Metadata.ResourceVersion, Host: "h1"}})
	if err != nil {
		t.Fatal(err)
	}
	if e := out.Items[0].Error; e == nil || e.Reason != api.ReasonForbidden {
		t.Errorf("a viewer's binding: %+v, want Forbidden", e)
	}
	if vm := storedVM(t, env, "other", "secret"); vm.Spec.Host != "" || vm.Metadata.ResourceVersion != theirs.Metadata.ResourceVersion {
		t.Errorf("another tenant's VM changed: host %q, version %s (was %s)", vm.Spec.Host, vm.Metadata.ResourceVersion, theirs.Metadata.ResourceVersion)
	}
	if vm := storedVM(t, env, "lab", "mine"); vm.Spec.Host != "" {
		t.Errorf("a viewer bound a VM to %q", vm.Spec.Host)
	}
}

// TestListPages: a list is read from etcd a page at a time and written as
// it comes; every object is there once, in order, the label selector
// applies on every page, and the list names one revision.
func TestListPages(t *testing.T) {
	defer func(n int64) { store.ListPage = n }(store.ListPage)
	store.ListPage = 2
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	var want []string
	for i := range 7 {
		vm := bindingVM("lab", fmt.Sprintf("vm%d", i))
		if i%2 == 0 {
			vm.Metadata.Labels = map[string]string{"even": "yes"}
		}
		if _, err := env.Admin.Create(ctx, vm); err != nil {
			t.Fatal(err)
		}
		want = append(want, vm.Metadata.Name)
	}
	for _, tc := range []struct {
		sel  string
		want []string
	}{{"", want}, {"even=yes", []string{"vm0", "vm2", "vm4", "vm6"}}} {
		objs, rv, err := env.Admin.List(ctx, "VirtualMachine", "", client.ListOptions{AllTenants: true, LabelSelector: tc.sel})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, o := range objs {
			got = append(got, o.GetMetadata().Name)
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("list %q: %v, want %v", tc.sel, got, tc.want)
		}
		if rv == "" {
			t.Errorf("list %q names no resourceVersion", tc.sel)
		}
	}
}
