package server_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

// tenantOf is the tenant an example of k is created in by these tests.
func tenantOf(k *api.KindInfo) string {
	if k.Scope == api.TenantScoped {
		return "lab"
	}
	return ""
}

// TestCRUDEveryKind creates, reads, lists, updates, patches, writes the
// status of and deletes one object of every kind, through the real API
// on a real etcd.
func TestCRUDEveryKind(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	for _, k := range api.Kinds() {
		t.Run(k.Kind, func(t *testing.T) {
			ctx := servertest.Ctx(t)
			c := env.Admin
			tenant := tenantOf(k)
			env.Needs(k.Kind, tenant)
			obj := servertest.Example(k.Kind, tenant)
			name := obj.GetMetadata().Name
			if k.Kind == "Tenant" {
				name = "crud-tenant"
				obj.GetMetadata().Name = name
			}
			created, err := c.Create(ctx, obj)
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			m := created.GetMetadata()
			if m.UID == "" || m.ResourceVersion == "" || m.Generation != 1 || m.CreationTimestamp == nil {
				t.Fatalf("create: server-owned metadata not set: %+v", m)
			}
			if _, err := c.Create(ctx, servertest.Example(k.Kind, tenant)); k.Kind != "Tenant" && !api.IsAlreadyExists(err) {
				t.Fatalf("second create: got %v, want AlreadyExists", err)
			}

			got, err := c.Get(ctx, k.Kind, tenant, name)
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			if !reflect.DeepEqual(got.SpecAny(), created.SpecAny()) {
				t.Fatalf("get: spec differs from create:\n got %s\nwant %s", servertest.JSON(got.SpecAny()), servertest.JSON(created.SpecAny()))
			}

			list, rv, err := c.List(ctx, k.Kind, tenant, client.ListOptions{})
			if err != nil || rv == "" {
				t.Fatalf("list: %v (rv %q)", err, rv)
			}
			if !containsName(list, name) {
				t.Fatalf("list: %s missing from %d items", name, len(list))
			}

			// Labels are metadata: an update changes them without
			// bumping the generation, which counts spec changes.
			got.GetMetadata().Labels = map[string]string{"env": "test"}
			upd, err := c.Update(ctx, got)
			if err != nil {
				t.Fatalf("update: %v", err)
			}
			if upd.GetMetadata().Generation != 1 || upd.GetMetadata().Labels["env"] != "test" {
				t.Fatalf("update: generation %d labels %v, want 1 and env=test", upd.GetMetadata().Generation, upd.GetMetadata().Labels)
			}
			sel, _, err := c.List(ctx, k.Kind, tenant, client.ListOptions{LabelSelector: "env=test"})
			if err != nil || !containsName(sel, name) {
				t.Fatalf("list -l env=test: %v, %d items", err, len(sel))
			}
			none, _, err := c.List(ctx, k.Kind, tenant, client.ListOptions{LabelSelector: "env=prod"})
			if err != nil || containsName(none, name) {
				t.Fatalf("list -l env=prod: %v, still has %s", err, name)
			}

			patched, err := c.Patch(ctx, k.Kind, tenant, name, map[string]any{"metadata": map[string]any{"annotations": map[string]string{"note": "patched"}}}, false)
			if err != nil {
				t.Fatalf("patch: %v", err)
			}
			if patched.GetMetadata().Annotations["note"] != "patched" || patched.GetMetadata().Labels["env"] != "test" {
				t.Fatalf("patch: metadata %+v", patched.GetMetadata())
			}

			// Status is written only through /status, and does not
			// change the generation.
			st, err := c.Patch(ctx, k.Kind, tenant, name, map[string]any{"status": map[string]any{"phase": "Testing", "observedGeneration": 1}}, true)
			if err != nil {
				t.Fatalf("status patch: %v", err)
			}
			if st.CommonStatus().Phase != "Testing" || st.GetMetadata().Generation != 1 {
				t.Fatalf("status patch: phase %q generation %d", st.CommonStatus().Phase, st.GetMetadata().Generation)
			}
			viaMain, err := c.Patch(ctx, k.Kind, tenant, name, map[string]any{"status": map[string]any{"phase": "Hacked"}}, false)
			if err != nil {
				t.Fatalf("patch of status through the main resource: %v", err)
			}
			if viaMain.CommonStatus().Phase != "Testing" {
				t.Fatalf("a main-resource write changed status to %q", viaMain.CommonStatus().Phase)
			}

			if _, err := c.Delete(ctx, k.Kind, tenant, name); err != nil {
				t.Fatalf("delete: %v", err)
			}
			if _, err := c.Get(ctx, k.Kind, tenant, name); !api.IsNotFound(err) {
				t.Fatalf("get after delete: got %v, want NotFound", err)
			}
			if _, err := c.Delete(ctx, k.Kind, tenant, name); !api.IsNotFound(err) {
				t.Fatalf("second delete: got %v, want NotFound", err)
			}
		})
	}
}

func containsName(objs []api.Object, name string) bool {
	for _, o := range objs {
		if o.GetMetadata().Name == name {
			return true
		}
	}
	return false
}

// TestValidationNamesFields checks that every kind refuses a bad object
// with 422 and the path of each bad field, and that nothing is written.
func TestValidationNamesFields(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	for _, k := range api.Kinds() {
		t.Run(k.Kind, func(t *testing.T) {
			obj := servertest.Example(k.Kind, tenantOf(k))
			obj.GetMetadata().Name = "Not_A_Name"
			obj.GetMetadata().Labels = map[string]string{"ok": "bad value!"}
			_, err := env.Admin.Create(ctx, obj)
			assertFields(t, err, "metadata.name", "metadata.labels.ok")
			if _, err := env.Admin.Get(ctx, k.Kind, tenantOf(k), "Not_A_Name"); err == nil {
				t.Fatalf("an invalid object was written")
			}
		})
	}
	cases := []struct {
		kind   string
		mutate func(api.Object)
		fields []string
	}{
		{"Subnet", func(o api.Object) {
			s := o.(*api.Subnet)
			s.Spec.CIDR = "10.0.0.0/33"
			s.Spec.Network = ""
		}, []string{"spec.cidr", "spec.network"}},
		{"Network", func(o api.Object) { o.(*api.Network).Spec.MTU = 100000 }, []string{"spec.mtu"}},
		{"Host", func(o api.Object) { o.(*api.Host).Spec.Address = "not-an-ip" }, []string{"spec.address"}},
		{"User", func(o api.Object) { o.(*api.User).Spec.Role = "superuser" }, []string{"spec.role"}},
		{"Network", func(o api.Object) { o.GetMetadata().Tenant = "" }, []string{"metadata.tenant"}},
	}
	for _, tc := range cases {
		t.Run(tc.kind+"/"+tc.fields[0], func(t *testing.T) {
			obj := servertest.Example(tc.kind, "lab")
			tc.mutate(obj)
			k, _ := api.KindByName(tc.kind)
			var err error
			if obj.GetMetadata().Tenant == "" && k.Scope == api.TenantScoped {
				// The client fills in its default tenant; post by hand.
				err = env.Admin.Do(ctx, http.MethodPost, api.PathPrefix+"/"+k.Plural, obj, nil)
				if st := new(api.Status); !errors.As(err, &st) || st.Code != http.StatusBadRequest {
					t.Fatalf("create without tenant: got %v, want 400", err)
				}
				return
			}
			_, err = env.Admin.Create(ctx, obj)
			assertFields(t, err, tc.fields...)
		})
	}
	t.Run("UnknownField", func(t *testing.T) {
		body := map[string]any{"apiVersion": api.APIVersion, "kind": "Subnet", "metadata": map[string]any{"name": "x"},
			"spec": map[string]any{"network": "n", "cdir": "10.0.0.0/24"}}
		err := env.Admin.Do(ctx, http.MethodPost, api.PathPrefix+"/tenants/lab/subnets", body, nil)
		assertFields(t, err, "spec.cdir")
	})
	t.Run("Immutable", func(t *testing.T) {
		s := servertest.Example("Subnet", "lab")
		if _, err := env.Admin.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		s.(*api.Subnet).Spec.CIDR = "10.9.0.0/24"
		_, err := env.Admin.Update(ctx, s)
		assertFields(t, err, "spec.cidr")
	})
	t.Run("MissingTenant", func(t *testing.T) {
		_, err := env.Admin.Create(ctx, servertest.Example("Network", "nosuchtenant"))
		assertFields(t, err, "metadata.tenant")
	})
}

func assertFields(t *testing.T, err error, fields ...string) {
	t.Helper()
	var st *api.Status
	if !errors.As(err, &st) {
		t.Fatalf("got %v, want a 422 naming %v", err, fields)
	}
	if st.Code != http.StatusUnprocessableEntity {
		t.Fatalf("got %d %s, want 422", st.Code, st.Message)
	}
	for _, f := range fields {
		found := false
		for _, fe := range st.Fields {
			found = found || fe.Field == f
		}
		if !found {
			t.Errorf("error does not name %s: %s", f, st.Message)
		}
	}
}

// TestWatchEveryKind watches each kind from a list's resourceVersion, sees
// create, update and delete in order, then resumes from the middle.
func TestWatchEveryKind(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	for _, k := range api.Kinds() {
		t.Run(k.Kind, func(t *testing.T) {
			ctx := servertest.Ctx(t)
			c := env.Admin
			tenant := tenantOf(k)
			_, rv, err := c.List(ctx, k.Kind, tenant, client.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			env.Needs(k.Kind, tenant)
			obj := servertest.Example(k.Kind, tenant)
			if k.Kind == "Tenant" {
				obj.GetMetadata().Name = "watched"
			}
			name := obj.GetMetadata().Name
			created, err := c.Create(ctx, obj)
			if err != nil {
				t.Fatal(err)
			}
			created.GetMetadata().Labels = map[string]string{"step": "2"}
			if _, err := c.Update(ctx, created); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Delete(ctx, k.Kind, tenant, name); err != nil {
				t.Fatal(err)
			}
			evs := collect(t, c, k.Kind, tenant, rv, 3)
			want := []string{"ADDED", "MODIFIED", "DELETED"}
			for i, ev := range evs {
				if ev.Type != want[i] || ev.Object.GetMetadata().Name != name {
					t.Fatalf("event %d: got %s %s, want %s %s", i, ev.Type, ev.Object.GetMetadata().Name, want[i], name)
				}
			}
			// Resume from the MODIFIED event: only the deletion follows.
			resumed := collect(t, c, k.Kind, tenant, evs[1].ResourceVersion, 1)
			if resumed[0].Type != "DELETED" {
				t.Fatalf("resumed watch: got %s, want DELETED", resumed[0].Type)
			}
		})
	}
}

// collect watches from rv until n object events arrive.
func collect(t *testing.T, c *client.Client, kind, tenant, rv string, n int) []client.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, werr, err := c.WatchOnce(ctx, kind, tenant, client.ListOptions{ResourceVersion: rv})
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	var out []client.Event
	for ev := range ch {
		if ev.Type == "BOOKMARK" {
			continue
		}
		out = append(out, ev)
		if len(out) == n {
			return out
		}
	}
	t.Fatalf("watch ended after %d of %d events: %v", len(out), n, werr())
	return nil
}

// TestWatchTooOld compacts etcd past a resourceVersion; a watch from it
// gets 410 Gone with a message saying to list again.
func TestWatchTooOld(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	_, rv, err := env.Admin.List(ctx, "Tenant", "", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var last api.Object
	for _, n := range []string{"t1", "t2", "t3"} {
		o := servertest.Example("Tenant", "")
		o.GetMetadata().Name = n
		if last, err = env.Admin.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	var rev int64
	for _, ch := range last.GetMetadata().ResourceVersion {
		rev = rev*10 + int64(ch-'0')
	}
	if _, err := env.Server.Etcd().Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	_, _, err = env.Admin.WatchOnce(ctx, "Tenant", "", client.ListOptions{ResourceVersion: rv})
	var st *api.Status
	if !errors.As(err, &st) || st.Code != http.StatusGone {
		t.Fatalf("watch from a compacted revision: got %v, want 410", err)
	}
	// The informer recovers by listing again.
	inf := client.NewInformer(env.Admin, "Tenant", "", client.ListOptions{})
	go inf.Run(ctx)
	if err := inf.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := inf.Get("t3"); !ok {
		t.Fatalf("informer is missing t3")
	}
}

// TestRacingUpdates sends two updates made from the same read: exactly one
// wins and the other gets 409, for every kind.
func TestRacingUpdates(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	for _, k := range api.Kinds() {
		t.Run(k.Kind, func(t *testing.T) {
			ctx := servertest.Ctx(t)
			tenant := tenantOf(k)
			obj := servertest.Example(k.Kind, tenant)
			if k.Kind == "Tenant" {
				obj.GetMetadata().Name = "raced"
			}
			created, err := env.Admin.Create(ctx, obj)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i := range errs {
				o := api.DeepCopy(created)
				o.GetMetadata().Labels = map[string]string{"writer": string(rune('a' + i))}
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = env.Admin.Update(ctx, o)
				}()
			}
			wg.Wait()
			wins, conflicts := 0, 0
			for _, err := range errs {
				switch {
				case err == nil:
					wins++
				case api.IsConflict(err):
					conflicts++
				default:
					t.Fatalf("unexpected error: %v", err)
				}
			}
			if wins != 1 || conflicts != 1 {
				t.Fatalf("got %d wins and %d conflicts, want 1 and 1", wins, conflicts)
			}
		})
	}
}

// TestFinalizers: an object with a finalizer is only marked on delete; it
// goes when the last finalizer is removed.
func TestFinalizers(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	obj := servertest.Example("Network", "lab")
	obj.GetMetadata().Finalizers = []string{"hearth.dev/test"}
	if _, err := env.Admin.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	marked, err := env.Admin.Delete(ctx, "Network", "lab", "net1")
	if err != nil {
		t.Fatal(err)
	}
	if marked.GetMetadata().DeletionTimestamp == nil {
		t.Fatalf("delete of an object with finalizers did not set deletionTimestamp")
	}
	got, err := env.Admin.Get(ctx, "Network", "lab", "net1")
	if err != nil {
		t.Fatalf("object with finalizers is gone: %v", err)
	}
	got.GetMetadata().Finalizers = append(got.GetMetadata().Finalizers, "hearth.dev/another")
	if _, err := env.Admin.Update(ctx, got); err == nil {
		t.Fatalf("adding a finalizer to an object being deleted succeeded")
	}
	if _, err := env.Admin.Patch(ctx, "Network", "lab", "net1", map[string]any{"metadata": map[string]any{"finalizers": nil}}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Admin.Get(ctx, "Network", "lab", "net1"); !api.IsNotFound(err) {
		t.Fatalf("after removing the last finalizer: got %v, want NotFound", err)
	}
}

// TestGenerationAndVNI: a spec change bumps the generation; every network
// gets its own VNI, freed on delete.
func TestGenerationAndVNI(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	env.Tenant("other")
	ctx := servertest.Ctx(t)
	a, err := env.Admin.Create(ctx, servertest.Example("Network", "lab"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := env.Admin.Create(ctx, servertest.Example("Network", "other"))
	if err != nil {
		t.Fatal(err)
	}
	va, vb := a.(*api.Network).Status.VNI, b.(*api.Network).Status.VNI
	if va == 0 || vb == 0 || va == vb {
		t.Fatalf("VNIs %d and %d: want two different non-zero VNIs", va, vb)
	}
	a.(*api.Network).Spec.MTU = 1400
	upd, err := env.Admin.Update(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if upd.GetMetadata().Generation != 2 {
		t.Fatalf("generation after spec change: got %d, want 2", upd.GetMetadata().Generation)
	}
	if upd.(*api.Network).Status.VNI != va {
		t.Fatalf("an update changed the VNI")
	}
	if _, err := env.Admin.Delete(ctx, "Network", "lab", "net1"); err != nil {
		t.Fatal(err)
	}
	c, err := env.Admin.Create(ctx, servertest.Example("Network", "lab"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.(*api.Network).Status.VNI; got != va {
		t.Fatalf("the freed VNI %d was not reused: got %d", va, got)
	}
}

// TestBindingSchedules checks that the write that gives a VM its host
// also makes it Scheduled, whether the scheduler binds it (a patch of
// spec.host) or its creator names the host, and that later writes leave
// the condition alone.
func TestBindingSchedules(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	scheduled := func(obj api.Object, host string) {
		t.Helper()
		vm := obj.(*api.VirtualMachine)
		c := vm.Status.Condition(api.ConditionScheduled)
		if vm.Status.Phase != api.VMScheduled || c == nil || c.Status != api.ConditionTrue || c.Message != "placed on "+host ||
			c.LastTransitionTime == nil || c.ObservedGeneration != vm.Metadata.Generation {
			t.Fatalf("VM %s: phase %q, Scheduled %+v; want Scheduled, True, placed on %s at generation %d",
				vm.Metadata.Name, vm.Status.Phase, c, host, vm.Metadata.Generation)
		}
	}

	env.Needs("VirtualMachine", "lab")
	vm := servertest.Example("VirtualMachine", "lab").(*api.VirtualMachine)
	vm.Spec.Host = ""
	created, err := env.Admin.Create(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	if st := created.(*api.VirtualMachine).Status; st.Phase != "" || len(st.Conditions) != 0 {
		t.Fatalf("a VM without a host has status %+v, want none", st)
	}
	bound, err := env.Admin.Patch(ctx, "VirtualMachine", "lab", vm.Metadata.Name, map[string]any{"spec": map[string]any{"host": "h1"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	scheduled(bound, "h1")
	// The agent takes the phase over; a later spec change keeps the
	// condition as it was.
	if _, err := env.Admin.Patch(ctx, "VirtualMachine", "lab", vm.Metadata.Name, map[string]any{"status": map[string]any{"phase": api.VMRunning}}, true); err != nil {
		t.Fatal(err)
	}
	later, err := env.Admin.Patch(ctx, "VirtualMachine", "lab", vm.Metadata.Name, map[string]any{"spec": map[string]any{"cpus": 2}}, false)
	if err != nil {
		t.Fatal(err)
	}
	lvm := later.(*api.VirtualMachine)
	if lvm.Status.Phase != api.VMRunning || !reflect.DeepEqual(lvm.Status.Condition(api.ConditionScheduled), bound.(*api.VirtualMachine).Status.Condition(api.ConditionScheduled)) {
		t.Fatalf("after a later spec change: phase %q, Scheduled %+v; want Running and the condition unchanged", lvm.Status.Phase, lvm.Status.Condition(api.ConditionScheduled))
	}

	pinned := servertest.Example("VirtualMachine", "lab").(*api.VirtualMachine)
	pinned.Metadata.Name = "pinned"
	pinned.Spec.Host = "h2"
	got, err := env.Admin.Create(ctx, pinned)
	if err != nil {
		t.Fatal(err)
	}
	scheduled(got, "h2")
}
