package controllers_test

import (
	"context"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/controllers"
	"hearth.dev/hearth/server/servertest"
)

// TestVMSetSpreadsAndScales: a set of 4 on two equal hosts ends up 2+2,
// its VMs carry the template's labels, the set label and an owner
// reference; scaled to 1, the extra VMs are deleted.
func TestVMSetSpreadsAndScales(t *testing.T) {
	env := servertest.Start(t)
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	addHost(t, env, "h1", api.HostReady, 8, 16<<30, nil)
	addHost(t, env, "h2", api.HostReady, 8, 16<<30, nil)

	four := 4
	set := &api.VirtualMachineSet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachineSet"},
		Metadata: api.ObjectMeta{Name: "workers", Tenant: "lab"},
		Spec: api.VirtualMachineSetSpec{Replicas: &four, Template: api.VMTemplate{
			Metadata: api.TemplateMeta{Labels: map[string]string{"app": "worker"}},
			Spec:     newVM("lab", "", 1, 1<<30, nil).Spec,
		}}}
	created, err := env.Admin.Create(ctx, set)
	if err != nil {
		t.Fatal(err)
	}
	uid := created.GetMetadata().UID

	list := func() ([]*api.VirtualMachine, error) {
		objs, _, err := env.Admin.List(ctx, "VirtualMachine", "lab", client.ListOptions{})
		if err != nil {
			return nil, err
		}
		out := make([]*api.VirtualMachine, len(objs))
		for i, o := range objs {
			out[i] = o.(*api.VirtualMachine)
		}
		return out, nil
	}
	name := regexp.MustCompile(`^workers-[a-z0-9]{5}$`)
	var first []*api.VirtualMachine
	servertest.Eventually(t, 15*time.Second, func() error {
		vms, err := list()
		if err != nil {
			return err
		}
		if len(vms) != 4 {
			return fmt.Errorf("%d VMs, want 4", len(vms))
		}
		per := map[string]int{}
		for _, vm := range vms {
			per[vm.Spec.Host]++
		}
		if per["h1"] != 2 || per["h2"] != 2 {
			return fmt.Errorf("VMs per host %v, want 2 on h1 and 2 on h2", per)
		}
		first = vms
		return nil
	})
	for _, vm := range first {
		m := vm.Metadata
		if !name.MatchString(m.Name) {
			t.Errorf("VM name %q does not look like workers-xxxxx", m.Name)
		}
		if m.Labels["app"] != "worker" || m.Labels[controllers.VMSetLabel] != "workers" {
			t.Errorf("VM %s labels %v", m.Name, m.Labels)
		}
		if len(m.OwnerReferences) != 1 || m.OwnerReferences[0] != (api.OwnerReference{Kind: "VirtualMachineSet", Name: "workers", UID: uid, Controller: true}) {
			t.Errorf("VM %s owner references %+v", m.Name, m.OwnerReferences)
		}
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		o, err := env.Admin.Get(ctx, "VirtualMachineSet", "lab", "workers")
		if err != nil {
			return err
		}
		s := o.(*api.VirtualMachineSet)
		if s.Status.Replicas != 4 || s.Status.ReadyReplicas != 0 || s.Status.ObservedGeneration != s.Metadata.Generation {
			return fmt.Errorf("status %s", servertest.JSON(s.Status))
		}
		return nil
	})

	// A VM that is Running counts as ready (its agent would say so).
	if _, err := env.Admin.Patch(ctx, "VirtualMachine", "lab", first[0].Metadata.Name, map[string]any{"status": map[string]any{"phase": api.VMRunning}}, true); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		o, err := env.Admin.Get(ctx, "VirtualMachineSet", "lab", "workers")
		if err != nil {
			return err
		}
		if s := o.(*api.VirtualMachineSet); s.Status.ReadyReplicas != 1 {
			return fmt.Errorf("readyReplicas %d, want 1", s.Status.ReadyReplicas)
		}
		return nil
	})

	// Scale down to 1.
	if _, err := env.Admin.Patch(ctx, "VirtualMachineSet", "lab", "workers", map[string]any{"spec": map[string]any{"replicas": 1}}, false); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 15*time.Second, func() error {
		vms, err := list()
		if err != nil {
			return err
		}
		if len(vms) != 1 {
			return fmt.Errorf("%d VMs, want 1", len(vms))
		}
		o, err := env.Admin.Get(ctx, "VirtualMachineSet", "lab", "workers")
		if err != nil {
			return err
		}
		if s := o.(*api.VirtualMachineSet); s.Status.Replicas != 1 || s.Status.ObservedGeneration != s.Metadata.Generation {
			return fmt.Errorf("status %s", servertest.JSON(s.Status))
		}
		return nil
	})
	vms, _ := list()
	gone := 0
	for _, vm := range first {
		if vm.Metadata.Name == vms[0].Metadata.Name {
			continue
		}
		if _, err := env.Admin.Get(ctx, "VirtualMachine", "lab", vm.Metadata.Name); !api.IsNotFound(err) {
			t.Errorf("scaled-down VM %s still there (%v)", vm.Metadata.Name, err)
		}
		gone++
	}
	if gone != 3 {
		t.Fatalf("the remaining VM %s is not one of the first four", vms[0].Metadata.Name)
	}

	// A deleted replica is replaced.
	if _, err := env.Admin.Delete(ctx, "VirtualMachine", "lab", vms[0].Metadata.Name); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		now, err := list()
		if err != nil {
			return err
		}
		if len(now) != 1 || now[0].Metadata.Name == vms[0].Metadata.Name {
			return fmt.Errorf("%d VMs after deleting the only replica; want a new one", len(now))
		}
		return nil
	})
}

// TestVMSetMakesEachReplicaOnce: a set counted from its cache never makes
// a VM too many, even while its VMs' status changes make it reconcile
// over and over before the cache shows what it made; scaling up makes
// exactly the difference and scaling down makes none.
func TestVMSetMakesEachReplicaOnce(t *testing.T) {
	env := servertest.Start(t)
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	addHost(t, env, "h1", api.HostReady, 64, 256<<30, nil)
	_, rv, err := env.Admin.List(ctx, "VirtualMachine", "lab", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Every VM ever made, from a watch started before the set.
	made := map[string]bool{}
	deleted := map[string]bool{}
	var mu sync.Mutex
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, _, err := env.Admin.WatchOnce(wctx, "VirtualMachine", "lab", client.ListOptions{ResourceVersion: rv})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for ev := range events {
			if ev.Object == nil {
				continue
			}
			mu.Lock()
			switch ev.Type {
			case "ADDED":
				made[ev.Object.GetMetadata().Name] = true
			case "DELETED":
				deleted[ev.Object.GetMetadata().Name] = true
			}
			mu.Unlock()
			// Churn: each new VM's status changes at once, as its agent's
			// would, which makes the set reconcile again.
			if ev.Type == "ADDED" {
				go env.Admin.Patch(ctx, "VirtualMachine", "lab", ev.Object.GetMetadata().Name, map[string]any{"status": map[string]any{"phase": api.VMRunning}}, true)
			}
		}
	}()
	count := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return len(made), len(deleted)
	}
	replicas := func(n int) {
		t.Helper()
		o, err := env.Admin.Get(ctx, "VirtualMachineSet", "lab", "burst")
		if api.IsNotFound(err) {
			set := &api.VirtualMachineSet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachineSet"},
				Metadata: api.ObjectMeta{Name: "burst", Tenant: "lab"},
				Spec: api.VirtualMachineSetSpec{Replicas: &n, Template: api.VMTemplate{Metadata: api.TemplateMeta{Labels: map[string]string{"app": "burst"}},
					Spec: newVM("lab", "", 1, 64<<20, nil).Spec}}}
			if _, err := env.Admin.Create(ctx, set); err != nil {
				t.Fatal(err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		_ = o
		if _, err := env.Admin.Patch(ctx, "VirtualMachineSet", "lab", "burst", map[string]any{"spec": map[string]any{"replicas": n}}, false); err != nil {
			t.Fatal(err)
		}
	}
	settle := func(wantMade, wantDeleted int) {
		t.Helper()
		servertest.Eventually(t, 20*time.Second, func() error {
			if m, d := count(); m != wantMade || d != wantDeleted {
				return fmt.Errorf("%d VMs made, %d deleted; want %d and %d", m, d, wantMade, wantDeleted)
			}
			return nil
		})
		// And nothing more after a while of status churn and resyncs.
		time.Sleep(2 * time.Second)
		if m, d := count(); m != wantMade || d != wantDeleted {
			t.Fatalf("%d VMs made, %d deleted; want %d and %d", m, d, wantMade, wantDeleted)
		}
	}
	replicas(12)
	settle(12, 0)
	replicas(20)
	settle(20, 0)
	replicas(5)
	settle(20, 15)
}

// TestVMSetExpectations: a set counts the VMs it made that its cache does
// not show yet, so reconciling again and again before the cache catches
// up (here: never) makes no VM twice; once ExpectFor has passed without
// the cache showing them, it trusts the cache again.
func TestVMSetExpectations(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	three := 3
	set := &api.VirtualMachineSet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachineSet"},
		Metadata: api.ObjectMeta{Name: "web", Tenant: "lab"},
		Spec: api.VirtualMachineSetSpec{Replicas: &three, Template: api.VMTemplate{
			Metadata: api.TemplateMeta{Labels: map[string]string{"app": "web"}},
			Spec:     newVM("lab", "", 1, 64<<20, nil).Spec}}}
	if _, err := env.Admin.Create(ctx, set); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	// A VM cache that never catches up: never started.
	never := client.NewInformer(env.Admin, "VirtualMachine", "", client.ListOptions{AllTenants: true})
	c, err := controllers.NewVMSetsWithCache(ctx, env.Admin, never, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	count := func() int {
		t.Helper()
		objs, _, err := env.Admin.List(ctx, "VirtualMachine", "lab", client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return len(objs)
	}
	for range 3 {
		if _, err := c.Reconcile(ctx, "lab/web"); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(); n != 3 {
		t.Fatalf("%d VMs after three reconciles with a cache that shows none; want 3", n)
	}
	now = now.Add(controllers.ExpectFor + time.Second)
	if _, err := c.Reconcile(ctx, "lab/web"); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 6 {
		t.Fatalf("%d VMs once the expectations lapsed; want 6 (the cache is trusted again)", n)
	}
}

// TestVMSetFailureToldOnce: a set its tenant's quota cannot hold says so
// in its ReplicaFailure condition and one FailedCreate event, and does
// not try again at the echo of its own status write: the event is not
// bumped at every retry, and the set's status is written a few times,
// not at each try.
func TestVMSetFailureToldOnce(t *testing.T) {
	env := servertest.Start(t)
	ctx := servertest.Ctx(t)
	tenant := &api.Tenant{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tenant"}, Metadata: api.ObjectMeta{Name: "small"},
		Spec: api.TenantSpec{Quota: api.Quota{VMs: 1}}}
	if _, err := env.Admin.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	addHost(t, env, "h1", api.HostReady, 8, 16<<30, nil)
	three := 3
	set := &api.VirtualMachineSet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachineSet"},
		Metadata: api.ObjectMeta{Name: "many", Tenant: "small"},
		Spec: api.VirtualMachineSetSpec{Replicas: &three, Template: api.VMTemplate{
			Metadata: api.TemplateMeta{Labels: map[string]string{"app": "many"}}, Spec: newVM("small", "", 1, 1<<30, nil).Spec}}}
	if _, err := env.Admin.Create(ctx, set); err != nil {
		t.Fatal(err)
	}
	var writes atomic.Int32
	inf := client.NewInformer(env.Admin, "VirtualMachineSet", "small", client.ListOptions{})
	inf.OnChange(func(string, api.Object) { writes.Add(1) })
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	go inf.Run(ictx)
	servertest.Eventually(t, 15*time.Second, func() error {
		o, err := env.Admin.Get(ctx, "VirtualMachineSet", "small", "many")
		if err != nil {
			return err
		}
		if c := o.CommonStatus().Condition(api.ConditionReplicaFailure); c == nil || c.Status != api.ConditionTrue || c.Reason != api.ReasonFailedScale {
			return fmt.Errorf("ReplicaFailure %+v", c)
		}
		return nil
	})
	time.Sleep(5 * time.Second)
	evs, _, err := env.Admin.List(ctx, "Event", "small", client.ListOptions{FieldSelector: "involvedObject.name=many"})
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for _, o := range evs {
		if e := o.(*api.Event); e.Spec.Reason == "FailedCreate" {
			failed += e.Spec.Count
		}
	}
	if failed != 1 {
		t.Errorf("%d FailedCreate events (counts summed), want 1", failed)
	}
	if n := writes.Load(); n > 4 {
		t.Errorf("the set was written %d times while it failed the same way", n)
	}
}
