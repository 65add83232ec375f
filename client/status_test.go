package client_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

// TestWriteStatus: the one status writer writes nothing when nothing
// changed; clears what its change clears (which a merge patch of the
// status could not); on a conflict reads again and re-applies its change,
// keeping what the other writer wrote; puts what it wrote into the cache
// at once; and never writes into another object of the same name.
func TestWriteStatus(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	env.Needs("VirtualMachine", "lab")
	ctx := servertest.Ctx(t)
	c := env.Admin
	inf := client.NewInformer(c, "VirtualMachine", "lab", client.ListOptions{})
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	go inf.Run(ictx)
	if err := inf.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	created, err := c.Create(ctx, servertest.Example("VirtualMachine", "lab"))
	if err != nil {
		t.Fatal(err)
	}
	vm := created.(*api.VirtualMachine)
	now := time.Now().UTC().Truncate(time.Second)
	running := func(pid int) func(*api.VirtualMachine) {
		return func(vm *api.VirtualMachine) {
			vm.Status.Phase, vm.Status.PID = api.VMRunning, pid
			vm.Status.SetCondition(api.Condition{Type: api.ConditionRunning, Status: api.ConditionTrue, Reason: api.ReasonGuestOutput}, now)
		}
	}

	out, wrote, err := client.WriteStatus(ctx, c, inf, vm, running(42))
	if err != nil || !wrote || out.Status.PID != 42 {
		t.Fatalf("first write: wrote %v, pid %d, err %v", wrote, out.Status.PID, err)
	}
	if o, ok := inf.Get(client.Key(vm)); !ok || o.GetMetadata().ResourceVersion != out.Metadata.ResourceVersion {
		t.Fatalf("the cache does not hold the version written (%s) at once", out.Metadata.ResourceVersion)
	}
	again, wrote, err := client.WriteStatus(ctx, c, inf, out, running(42))
	if err != nil || wrote || again.Metadata.ResourceVersion != out.Metadata.ResourceVersion {
		t.Fatalf("an unchanged status was written: wrote %v, resourceVersion %s → %s, err %v", wrote, out.Metadata.ResourceVersion, again.Metadata.ResourceVersion, err)
	}

	// Another writer adds its condition; a write from the version before
	// it conflicts, reads again, and keeps the other's condition.
	other, _, err := client.WriteStatus(ctx, c, nil, out, func(vm *api.VirtualMachine) {
		vm.Status.SetCondition(api.Condition{Type: api.ConditionResolvedRefs, Status: api.ConditionTrue, Reason: api.ReasonResolved}, now)
	})
	if err != nil {
		t.Fatal(err)
	}
	stopped, wrote, err := client.WriteStatus(ctx, c, inf, out, func(vm *api.VirtualMachine) {
		vm.Status.Phase, vm.Status.PID = api.VMStopped, 0
		vm.Status.SetCondition(api.Condition{Type: api.ConditionRunning, Status: api.ConditionFalse, Reason: api.ReasonVMStopped}, now)
	})
	if err != nil || !wrote {
		t.Fatalf("write after a conflict: wrote %v, err %v", wrote, err)
	}
	stored, err := c.Get(ctx, "VirtualMachine", "lab", vm.Metadata.Name)
	if err != nil {
		t.Fatal(err)
	}
	st := stored.(*api.VirtualMachine).Status
	if st.PID != 0 || st.Phase != api.VMStopped {
		t.Errorf("stored status: pid %d, phase %s; want the pid cleared and Stopped", st.PID, st.Phase)
	}
	if c := st.Condition(api.ConditionResolvedRefs); c == nil {
		t.Errorf("the other writer's condition was lost: %+v", st.Conditions)
	}
	if c := st.Condition(api.ConditionRunning); c == nil || c.Status != api.ConditionFalse {
		t.Errorf("Running condition %+v, want False", c)
	}
	if stored.GetMetadata().ResourceVersion != stopped.Metadata.ResourceVersion || stopped.Metadata.ResourceVersion == other.Metadata.ResourceVersion {
		t.Errorf("returned version %s, stored %s", stopped.Metadata.ResourceVersion, stored.GetMetadata().ResourceVersion)
	}

	// The VM is deleted and another made under its name: a write meant
	// for the first is refused as NotFound and leaves the second alone.
	if _, err := c.Delete(ctx, "VirtualMachine", "lab", vm.Metadata.Name); err != nil {
		t.Fatal(err)
	}
	second, err := c.Create(ctx, servertest.Example("VirtualMachine", "lab"))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = client.WriteStatus(ctx, c, nil, stopped, running(7))
	if !api.IsNotFound(err) {
		t.Fatalf("a write meant for a replaced VM: %v, want NotFound", err)
	}
	if o, _ := c.Get(ctx, "VirtualMachine", "lab", vm.Metadata.Name); o.GetMetadata().ResourceVersion != second.GetMetadata().ResourceVersion {
		t.Fatalf("the replacement was written to")
	}
}

// TestChangeStatusOnly: an informer tells a status write (anyone's) from
// a change of spec or metadata, and says what it had before, also when
// the writer put its write into the cache first.
func TestChangeStatusOnly(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	env.Needs("VirtualMachine", "lab")
	ctx := servertest.Ctx(t)
	c := env.Admin
	inf := client.NewInformer(c, "VirtualMachine", "lab", client.ListOptions{})
	var mu sync.Mutex
	var seen []client.Change
	inf.OnUpdate(func(ch client.Change) {
		mu.Lock()
		seen = append(seen, ch)
		mu.Unlock()
	})
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	go inf.Run(ictx)
	if err := inf.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	created, err := c.Create(ctx, servertest.Example("VirtualMachine", "lab"))
	if err != nil {
		t.Fatal(err)
	}
	name := created.GetMetadata().Name
	vm := created.(*api.VirtualMachine)
	steps := []struct {
		what       string
		do         func() error
		statusOnly bool
	}{
		{"status write", func() error {
			_, _, err := client.WriteStatus(ctx, c, inf, vm, func(vm *api.VirtualMachine) { vm.Status.Phase = api.VMStarting })
			return err
		}, true},
		{"label", func() error {
			_, err := c.Patch(ctx, "VirtualMachine", "lab", name, map[string]any{"metadata": map[string]any{"labels": map[string]string{"a": "b"}}}, false)
			return err
		}, false},
		{"spec", func() error {
			_, err := c.Patch(ctx, "VirtualMachine", "lab", name, map[string]any{"spec": map[string]any{"powerState": api.PowerStopped}}, false)
			return err
		}, false},
		{"delete", func() error {
			_, err := c.Delete(ctx, "VirtualMachine", "lab", name)
			return err
		}, false},
	}
	want := []bool{false} // the create
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		want = append(want, s.statusOnly)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) < len(want) {
			return fmt.Errorf("%d changes seen, want %d", len(seen), len(want))
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	var got []bool
	for _, ch := range seen {
		got = append(got, ch.StatusOnly())
	}
	if !slices.Equal(got, want) {
		t.Errorf("StatusOnly of create, %s: %v, want %v", "status write, label, spec, delete", got, want)
	}
	if seen[0].Old != nil || seen[len(seen)-1].New != nil || seen[len(seen)-1].Old == nil {
		t.Errorf("the create should have no Old, the delete an Old and no New")
	}
	// The status write went into the cache at once (Observe), and its
	// change still shows what it changed, for whoever watches that.
	if w := seen[1]; w.Old.CommonStatus().Phase == w.New.CommonStatus().Phase {
		t.Errorf("the change of a status write the writer observed: phase %q before and after", w.New.CommonStatus().Phase)
	}
}

// TestChangeOldIsWhatHandlersSaw: a version put into the cache by Observe
// is not what the next change's Old says: handlers are told the change
// from the version they were last told about.
func TestChangeOldIsWhatHandlersSaw(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	env.Needs("VirtualMachine", "lab")
	ctx := servertest.Ctx(t)
	c := env.Admin
	inf := client.NewInformer(c, "VirtualMachine", "lab", client.ListOptions{})
	changes := make(chan client.Change, 10)
	inf.OnUpdate(func(ch client.Change) { changes <- ch })
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	go inf.Run(ictx)
	if err := inf.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	created, err := c.Create(ctx, servertest.Example("VirtualMachine", "lab"))
	if err != nil {
		t.Fatal(err)
	}
	<-changes
	future := api.DeepCopy(created).(*api.VirtualMachine)
	future.Metadata.ResourceVersion = "999999999"
	future.Status.Phase = "Observed"
	inf.Observe(future)
	if _, _, err := client.WriteStatus(ctx, c, nil, created.(*api.VirtualMachine), func(vm *api.VirtualMachine) { vm.Status.Phase = api.VMStarting }); err != nil {
		t.Fatal(err)
	}
	select {
	case ch := <-changes:
		if got := ch.Old.CommonStatus().Phase; got != created.CommonStatus().Phase {
			t.Errorf("Old has phase %q, want %q, the version the handlers saw", got, created.CommonStatus().Phase)
		}
		if got := ch.New.CommonStatus().Phase; got != api.VMStarting {
			t.Errorf("New has phase %q, want Starting", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no change after the status write")
	}
}
