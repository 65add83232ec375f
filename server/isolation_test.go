package server_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

// verbs tries every verb on one object and reports the error of each.
func verbs(ctx context.Context, c *client.Client, obj api.Object) map[string]error {
	kind, m := obj.GetTypeMeta().Kind, obj.GetMetadata()
	out := map[string]error{}
	_, out["get"] = c.Get(ctx, kind, m.Tenant, m.Name)
	_, _, out["list"] = c.List(ctx, kind, m.Tenant, client.ListOptions{})
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, _, out["watch"] = c.WatchOnce(wctx, kind, m.Tenant, client.ListOptions{})
	cancel()
	fresh := api.DeepCopy(obj)
	fresh.GetMetadata().Name = "intruder"
	fresh.GetMetadata().ResourceVersion = ""
	_, out["create"] = c.Create(ctx, fresh)
	upd := api.DeepCopy(obj)
	upd.GetMetadata().Labels = map[string]string{"touched": "yes"}
	_, out["update"] = c.Update(ctx, upd)
	_, out["patch"] = c.Patch(ctx, kind, m.Tenant, m.Name, map[string]any{"metadata": map[string]any{"labels": map[string]string{"touched": "yes"}}}, false)
	_, out["status"] = c.Patch(ctx, kind, m.Tenant, m.Name, map[string]any{"status": map[string]any{"phase": "Hijacked"}}, true)
	_, out["delete"] = c.Delete(ctx, kind, m.Tenant, m.Name)
	return out
}

// TestTenantIsolation: for every kind and verb, a user of tenant A can
// neither read nor change tenant B's objects (nor list across tenants), and
// B's object is untouched afterwards.
func TestTenantIsolation(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("a")
	env.Tenant("b")
	users := map[string]*client.Client{
		"a-admin":  env.User("a-admin", "a", api.RoleTenantAdmin),
		"a-member": env.User("a-member", "a", api.RoleTenantMember),
		"a-viewer": env.User("a-viewer", "a", api.RoleViewer),
	}
	ctx := servertest.Ctx(t)
	for _, k := range api.Kinds() {
		// B's object: tenant-scoped kinds in tenant b; cluster kinds at
		// cluster level; a TenantOptional kind in tenant b.
		obj := servertest.Example(k.Kind, "b")
		if k.Scope == api.TenantOptional {
			obj.GetMetadata().Tenant = "b"
		}
		if k.Kind == "Tenant" {
			obj.GetMetadata().Name = "b" // tenant b itself
		}
		if k.Kind == "User" {
			obj.(*api.User).Spec.Tenant = "b"
		}
		if k.Kind != "Tenant" {
			if _, err := env.Admin.Create(ctx, obj); err != nil {
				t.Fatalf("creating %s: %v", k.Kind, err)
			}
		}
		stored, err := env.Admin.Get(ctx, k.Kind, obj.GetMetadata().Tenant, obj.GetMetadata().Name)
		if err != nil {
			t.Fatal(err)
		}
		for uname, c := range users {
			t.Run(k.Kind+"/"+uname, func(t *testing.T) {
				filtered := k.Kind == "Tenant" || k.Kind == "User"
				for verb, err := range verbs(ctx, c, stored) {
					if filtered && (verb == "list" || verb == "watch") && err == nil {
						// Allowed, but filtered to the caller's tenant.
						continue
					}
					if !api.IsForbidden(err) {
						t.Errorf("%s %s of tenant b's %s: got %v, want Forbidden", uname, verb, k.Kind, err)
					}
				}
				if filtered {
					list, _, _ := c.List(ctx, k.Kind, "", client.ListOptions{})
					if containsName(list, stored.GetMetadata().Name) {
						t.Errorf("%s lists tenant b's %s", uname, k.Kind)
					}
				}
				if k.Scope == api.TenantScoped {
					_, _, err := c.List(ctx, k.Kind, "", client.ListOptions{AllTenants: true})
					if !api.IsForbidden(err) {
						t.Errorf("%s list of %s across tenants: got %v, want Forbidden", uname, k.Plural, err)
					}
				}
			})
		}
		after, err := env.Admin.Get(ctx, k.Kind, obj.GetMetadata().Tenant, obj.GetMetadata().Name)
		if err != nil {
			t.Fatalf("%s of tenant b is gone after the attempts: %v", k.Kind, err)
		}
		if after.GetMetadata().ResourceVersion != stored.GetMetadata().ResourceVersion {
			t.Errorf("%s of tenant b was changed by another tenant's users", k.Kind)
		}
		if _, err := env.Admin.Get(ctx, k.Kind, obj.GetMetadata().Tenant, "intruder"); err == nil {
			t.Errorf("another tenant's user created %s/intruder", k.Kind)
		}
	}
}

// TestViewerAndMember: in their own tenant a viewer reads but cannot
// write; a member writes; lists and watches show only the own tenant.
func TestViewerAndMember(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("a")
	env.Tenant("b")
	viewer := env.User("a-viewer", "a", api.RoleViewer)
	member := env.User("a-member", "a", api.RoleTenantMember)
	ctx := servertest.Ctx(t)
	for _, k := range api.Kinds() {
		if k.Scope != api.TenantScoped {
			continue
		}
		t.Run(k.Kind, func(t *testing.T) {
			env.Needs(k.Kind, "a")
			env.Needs(k.Kind, "b")
			mine := servertest.Example(k.Kind, "a")
			if _, err := member.Create(ctx, mine); err != nil {
				t.Fatalf("member create in own tenant: %v", err)
			}
			if _, err := env.Admin.Create(ctx, servertest.Example(k.Kind, "b")); err != nil {
				t.Fatal(err)
			}
			stored, err := viewer.Get(ctx, k.Kind, "a", mine.GetMetadata().Name)
			if err != nil {
				t.Fatalf("viewer get in own tenant: %v", err)
			}
			list, _, err := viewer.List(ctx, k.Kind, "a", client.ListOptions{})
			if err != nil || len(list) != 1 {
				t.Fatalf("viewer list: %v, %d items, want 1", err, len(list))
			}
			for verb, err := range verbs(ctx, viewer, stored) {
				read := verb == "get" || verb == "list" || verb == "watch"
				if read && err != nil {
					t.Errorf("viewer %s: %v", verb, err)
				}
				if !read && !api.IsForbidden(err) {
					t.Errorf("viewer %s: got %v, want Forbidden", verb, err)
				}
			}
		})
	}
	t.Run("CannotGrantClusterAdmin", func(t *testing.T) {
		admin := env.User("a-admin", "a", api.RoleTenantAdmin)
		u := servertest.Example("User", "")
		u.GetMetadata().Name = "escalate"
		u.(*api.User).Spec = api.UserSpec{Role: api.RoleClusterAdmin}
		if _, err := admin.Create(ctx, u); !api.IsForbidden(err) {
			t.Fatalf("tenant admin created a cluster-admin: %v", err)
		}
		u.(*api.User).Spec = api.UserSpec{Tenant: "a", Role: api.RoleTenantMember}
		if _, err := admin.Create(ctx, u); err != nil {
			t.Fatalf("tenant admin creating a member of its tenant: %v", err)
		}
		users, _, err := admin.List(ctx, "User", "", client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range users {
			if x.(*api.User).Spec.Tenant != "a" {
				t.Errorf("tenant admin sees user %s of tenant %q", x.GetMetadata().Name, x.(*api.User).Spec.Tenant)
			}
		}
	})
}

// TestWatchIsolation: a tenant's watch carries only its own objects, and
// for shared-readable kinds the shared ones too.
func TestWatchIsolation(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("a")
	env.Tenant("b")
	member := env.User("a-member", "a", api.RoleTenantMember)
	ctx := servertest.Ctx(t)
	for _, kind := range []string{"Network", "Image", "Event"} {
		t.Run(kind, func(t *testing.T) {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			ch, _, err := member.WatchOnce(wctx, kind, "a", client.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			k, _ := api.KindByName(kind)
			theirs := servertest.Example(kind, "b")
			theirs.GetMetadata().Name = "theirs"
			if _, err := env.Admin.Create(ctx, theirs); err != nil {
				t.Fatal(err)
			}
			want := []string{}
			if k.SharedReadable {
				shared := servertest.Example(kind, "")
				shared.GetMetadata().Name = "shared"
				if _, err := env.Admin.Create(ctx, shared); err != nil {
					t.Fatal(err)
				}
				want = append(want, "shared")
			}
			mine := servertest.Example(kind, "a")
			mine.GetMetadata().Name = "mine"
			if _, err := env.Admin.Create(ctx, mine); err != nil {
				t.Fatal(err)
			}
			want = append(want, "mine")
			var got []string
			for ev := range ch {
				if ev.Type == "BOOKMARK" {
					continue
				}
				got = append(got, ev.Object.GetMetadata().Tenant+"/"+ev.Object.GetMetadata().Name)
				if ev.Object.GetMetadata().Name == "mine" {
					break
				}
			}
			for _, g := range got {
				if g == "b/theirs" {
					t.Fatalf("tenant a's watch saw tenant b's %s: %v", kind, got)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("watch saw %v, want %v", got, want)
			}
		})
	}
}

// TestHostCredential: a joined host writes its own Host's status and the
// status of objects placed on it, and nothing else.
func TestHostCredential(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	h1 := env.Host("h1")

	if _, err := h1.Patch(ctx, "Host", "", "h1", map[string]any{"status": map[string]any{"phase": "Ready", "cpus": 4}}, true); err != nil {
		t.Fatalf("host writing its own status: %v", err)
	}
	other := servertest.Example("Host", "")
	other.GetMetadata().Name = "h2"
	if _, err := env.Admin.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	if _, err := h1.Patch(ctx, "Host", "", "h2", map[string]any{"status": map[string]any{"phase": "NotReady"}}, true); !api.IsForbidden(err) {
		t.Errorf("h1 writing h2's status: got %v, want Forbidden", err)
	}
	if _, err := h1.Delete(ctx, "Host", "", "h1"); !api.IsForbidden(err) {
		t.Errorf("host deleting its own Host: got %v, want Forbidden", err)
	}

	env.Needs("VirtualMachine", "lab")
	for _, placed := range []struct{ name, host string }{{"on-h1", "h1"}, {"on-h2", "h2"}} {
		vm := servertest.Example("VirtualMachine", "lab")
		vm.GetMetadata().Name = placed.name
		vm.(*api.VirtualMachine).Spec.Host = placed.host
		if _, err := env.Admin.Create(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h1.Patch(ctx, "VirtualMachine", "lab", "on-h1", map[string]any{"status": map[string]any{"phase": "Running"}}, true); err != nil {
		t.Errorf("h1 writing the status of its VM: %v", err)
	}
	if _, err := h1.Patch(ctx, "VirtualMachine", "lab", "on-h2", map[string]any{"status": map[string]any{"phase": "Running"}}, true); !api.IsForbidden(err) {
		t.Errorf("h1 writing the status of h2's VM: got %v, want Forbidden", err)
	}
	if _, err := h1.Patch(ctx, "VirtualMachine", "lab", "on-h1", map[string]any{"spec": map[string]any{"cpus": 8}}, false); !api.IsForbidden(err) {
		t.Errorf("h1 changing its VM's spec: got %v, want Forbidden", err)
	}
	if _, err := h1.Create(ctx, servertest.Example("Network", "lab")); !api.IsForbidden(err) {
		t.Errorf("host creating a Network: got %v, want Forbidden", err)
	}
	if _, _, err := h1.List(ctx, "User", "", client.ListOptions{}); !api.IsForbidden(err) {
		t.Errorf("host listing users: got %v, want Forbidden", err)
	}
	if _, _, err := h1.List(ctx, "VirtualMachine", "", client.ListOptions{AllTenants: true}); err != nil {
		t.Errorf("host listing VMs across tenants (it must find what is placed on it): %v", err)
	}
	if err := h1.Do(ctx, http.MethodPost, api.PathPrefix+"/jointokens", map[string]string{}, nil); !api.IsForbidden(err) {
		t.Errorf("host minting join tokens: got %v, want Forbidden", err)
	}
}

// TestTokens: tokens are stored hashed, revocation is immediate, and a
// disabled user is refused.
func TestTokens(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("a")
	ctx := servertest.Ctx(t)
	alice := env.User("alice", "a", api.RoleTenantMember)
	if _, err := alice.WhoAmI(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := env.Server.Etcd().Get(ctx, "/hearth/", clientv3WithPrefix()...)
	if err != nil {
		t.Fatal(err)
	}
	secret := tokenOf(t, alice)
	for _, kv := range resp.Kvs {
		if containsBytes(kv.Value, secret) || containsBytes(kv.Key, secret) {
			t.Fatalf("the token secret is stored in etcd at %s", kv.Key)
		}
	}
	var list struct {
		Items []struct{ ID string } `json:"items"`
	}
	if err := env.Admin.Do(ctx, http.MethodGet, api.PathPrefix+"/users/alice/tokens", nil, &list); err != nil || len(list.Items) != 1 {
		t.Fatalf("listing alice's tokens: %v, %d", err, len(list.Items))
	}
	if err := env.Admin.Do(ctx, http.MethodDelete, api.PathPrefix+"/users/alice/tokens/"+list.Items[0].ID, nil, nil); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 5*time.Second, func() error {
		_, err := alice.WhoAmI(ctx)
		if err == nil {
			return errString("revoked token still accepted")
		}
		return nil
	})
	bob := env.User("bob", "a", api.RoleTenantMember)
	if _, err := env.Admin.Patch(ctx, "User", "", "bob", map[string]any{"spec": map[string]any{"disabled": true}}, false); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 5*time.Second, func() error {
		if _, err := bob.WhoAmI(ctx); err == nil {
			return errString("disabled user still accepted")
		}
		return nil
	})
	anon := env.ClientWithToken("", "")
	if _, _, err := anon.List(ctx, "Tenant", "", client.ListOptions{}); api.ReasonOf(err) != api.ReasonUnauthorized {
		t.Fatalf("no token: got %v, want Unauthorized", err)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// TestCredentialsOnlyForAdmins: a Machine's BMC password and webhook
// header values read back to cluster admins only; a cluster viewer and a
// host get them blanked from get, list and watch, and the stored object
// keeps them.
func TestCredentialsOnlyForAdmins(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	viewer := env.User("auditor", "", api.RoleViewer)
	host := env.Host("boot")
	m := &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"},
		Metadata: api.ObjectMeta{Name: "node1"},
		Spec:     api.MachineSpec{MAC: "52:54:00:aa:bb:01", Power: api.MachinePower{Driver: "ipmi", Address: "bmc1", Username: "hearth", Password: "s3cret"}}}
	hook := &api.Machine{TypeMeta: m.TypeMeta, Metadata: api.ObjectMeta{Name: "node2"},
		Spec: api.MachineSpec{MAC: "52:54:00:aa:bb:02", Power: api.MachinePower{Driver: "webhook",
			Webhook: &api.PowerWebhook{OnURL: "http://plug/on", OffURL: "http://plug/off", Headers: map[string]string{"Authorization": "Bearer t0ken"}}}}}
	// Inline credentials are no longer accepted; these are machines an
	// older Hearth stored, written to the store directly.
	for _, o := range []api.Object{m, hook} {
		if _, err := env.Server.Store().Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	hidden := func(who string, o api.Object) {
		t.Helper()
		s := o.(*api.Machine).Spec
		if s.Power.Password != "" || (s.Power.Webhook != nil && s.Power.Webhook.Headers["Authorization"] != "") {
			t.Errorf("%s reads credentials of %s: %+v", who, o.GetMetadata().Name, s.Power)
		}
		if s.Power.Webhook != nil {
			if _, ok := s.Power.Webhook.Headers["Authorization"]; !ok {
				t.Errorf("%s does not see that %s has an Authorization header", who, o.GetMetadata().Name)
			}
		}
	}
	for who, c := range map[string]*client.Client{"viewer": viewer, "host": host} {
		for _, name := range []string{"node1", "node2"} {
			o, err := c.Get(ctx, "Machine", "", name)
			if err != nil {
				t.Fatalf("%s get %s: %v", who, name, err)
			}
			hidden(who, o)
		}
		objs, rv, err := c.List(ctx, "Machine", "", client.ListOptions{})
		if err != nil || len(objs) != 2 {
			t.Fatalf("%s list: %d machines, %v", who, len(objs), err)
		}
		for _, o := range objs {
			hidden(who, o)
		}
		wctx, cancel := context.WithCancel(ctx)
		events, _, err := c.WatchOnce(wctx, "Machine", "", client.ListOptions{ResourceVersion: rv})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.Admin.Patch(ctx, "Machine", "", "node1", map[string]any{"metadata": map[string]any{"labels": map[string]string{"seen-by": who}}}, false); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-events:
			hidden(who+" (watch)", ev.Object)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s's watch brought nothing", who)
		}
		cancel()
	}
	o, err := env.Admin.Get(ctx, "Machine", "", "node1")
	if err != nil {
		t.Fatal(err)
	}
	if o.(*api.Machine).Spec.Power.Password != "s3cret" {
		t.Fatalf("the admin reads password %q, want the stored one", o.(*api.Machine).Spec.Power.Password)
	}
	o, err = env.Admin.Get(ctx, "Machine", "", "node2")
	if err != nil {
		t.Fatal(err)
	}
	if o.(*api.Machine).Spec.Power.Webhook.Headers["Authorization"] != "Bearer t0ken" {
		t.Fatalf("the admin reads headers %v, want the stored ones", o.(*api.Machine).Spec.Power.Webhook.Headers)
	}
}

// TestFieldSelectorCannotProbeCredentials: a field selector matches the
// object as the caller is shown it, so a viewer cannot test guesses of a
// redacted BMC password or webhook header (list and watch), while an
// admin's selector still sees the stored values.
func TestFieldSelectorCannotProbeCredentials(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	viewer := env.User("auditor", "", api.RoleViewer)
	m := &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"},
		Metadata: api.ObjectMeta{Name: "node1"},
		Spec: api.MachineSpec{MAC: "52:54:00:aa:bb:01", Power: api.MachinePower{Driver: "webhook",
			Webhook: &api.PowerWebhook{OnURL: "http://plug/on", OffURL: "http://plug/off", Headers: map[string]string{"Authorization": "Bearer t0ken"}}}}}
	ipmi := &api.Machine{TypeMeta: m.TypeMeta, Metadata: api.ObjectMeta{Name: "node2"},
		Spec: api.MachineSpec{MAC: "52:54:00:aa:bb:02", Power: api.MachinePower{Driver: "ipmi", Address: "bmc2", Username: "hearth", Password: "s3cret"}}}
	for _, o := range []api.Object{m, ipmi} { // as an older Hearth stored them
		if _, err := env.Server.Store().Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	right := []string{"spec.power.password=s3cret", "power.password=s3cret", "spec.power.webhook.headers.Authorization=Bearer t0ken"}
	for _, sel := range right {
		objs, _, err := viewer.List(ctx, "Machine", "", client.ListOptions{FieldSelector: sel})
		if err != nil {
			t.Fatalf("viewer list %s: %v", sel, err)
		}
		if len(objs) != 0 {
			t.Errorf("viewer list with the right guess %q finds %d machines; want none, like a wrong guess", sel, len(objs))
		}
		objs, _, err = env.Admin.List(ctx, "Machine", "", client.ListOptions{FieldSelector: sel})
		if err != nil || len(objs) != 1 {
			t.Errorf("admin list %s: %d machines, %v; want 1", sel, len(objs), err)
		}
	}

	// A watch with the right guess sees nothing of a change, though its
	// bookmarks show the change went by.
	_, rv, err := viewer.List(ctx, "Machine", "", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, _, err := viewer.WatchOnce(wctx, "Machine", "", client.ListOptions{ResourceVersion: rv, FieldSelector: "spec.power.password=s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	changed, err := env.Admin.Patch(ctx, "Machine", "", "node2", map[string]any{"metadata": map[string]any{"labels": map[string]string{"touched": "yes"}}}, false)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := strconv.ParseInt(changed.GetMetadata().ResourceVersion, 10, 64)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("the watch ended")
			}
			if ev.Type != "BOOKMARK" {
				t.Fatalf("the viewer's watch with the right password guess got %s %s", ev.Type, ev.Object.GetMetadata().Name)
			}
			if got, _ := strconv.ParseInt(ev.ResourceVersion, 10, 64); got >= want {
				return
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no bookmark past the change")
		}
	}
}
