package controllers_test

import (
	"fmt"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

// TestHostLiveness: a host that stops renewing its lease becomes NotReady
// with a condition and an event that say why.
func TestHostLiveness(t *testing.T) {
	env := servertest.Start(t)
	ctx := servertest.Ctx(t)
	h := env.Host("h1")
	if _, err := env.Admin.Patch(ctx, "Host", "", "h1", map[string]any{"spec": map[string]any{"leaseSeconds": 5}}, false); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if _, err := h.Patch(ctx, "Host", "", "h1", map[string]any{"status": map[string]any{"phase": api.HostReady, "lastHeartbeat": now}}, true); err != nil {
		t.Fatal(err)
	}
	// Still within the lease: Ready.
	time.Sleep(2 * time.Second)
	got, err := env.Admin.Get(ctx, "Host", "", "h1")
	if err != nil {
		t.Fatal(err)
	}
	if got.CommonStatus().Phase != api.HostReady {
		t.Fatalf("host went %s within its lease", got.CommonStatus().Phase)
	}
	servertest.Eventually(t, 15*time.Second, func() error {
		got, err := env.Admin.Get(ctx, "Host", "", "h1")
		if err != nil {
			return err
		}
		st := got.CommonStatus()
		c := st.Condition("Ready")
		if st.Phase != api.HostNotReady || c == nil || c.Status != api.ConditionFalse || c.Reason != "LeaseExpired" {
			return fmt.Errorf("phase %q, Ready condition %+v", st.Phase, c)
		}
		return nil
	})
	servertest.Eventually(t, 5*time.Second, func() error {
		evs, _, err := env.Admin.List(ctx, "Event", "", client.ListOptions{FieldSelector: "involvedObject.kind=Host,involvedObject.name=h1"})
		if err != nil {
			return err
		}
		for _, e := range evs {
			if e.(*api.Event).Spec.Reason == "HostNotReady" {
				return nil
			}
		}
		return fmt.Errorf("no HostNotReady event among %d", len(evs))
	})
	// A heartbeat makes it Ready again (the agent writes that).
	if _, err := h.Patch(ctx, "Host", "", "h1", map[string]any{"status": map[string]any{"phase": api.HostReady, "lastHeartbeat": time.Now().UTC()}}, true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	got, _ = env.Admin.Get(ctx, "Host", "", "h1")
	if got.CommonStatus().Phase != api.HostReady {
		t.Fatalf("after a fresh heartbeat the host is %s", got.CommonStatus().Phase)
	}
}

// TestGarbageCollection: dependents go when their owner goes (and not
// when a new owner of the same name exists); a deleted tenant's objects go.
func TestGarbageCollection(t *testing.T) {
	env := servertest.Start(t)
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	owner, err := env.Admin.Create(ctx, servertest.Example("Network", "lab"))
	if err != nil {
		t.Fatal(err)
	}
	ref := api.OwnerReference{Kind: "Network", Name: owner.GetMetadata().Name, UID: owner.GetMetadata().UID}
	dep := servertest.Example("Subnet", "lab")
	dep.GetMetadata().OwnerReferences = []api.OwnerReference{ref}
	if _, err := env.Admin.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	keep := servertest.Example("Subnet", "lab")
	keep.GetMetadata().Name = "unowned"
	keep.(*api.Subnet).Spec.CIDR = "10.0.1.0/24" // subnets of a network may not overlap
	if _, err := env.Admin.Create(ctx, keep); err != nil {
		t.Fatal(err)
	}
	// Wait long enough for the collector to have seen both, then check
	// it left the owned subnet alone while its owner exists.
	time.Sleep(time.Second)
	if _, err := env.Admin.Get(ctx, "Subnet", "lab", dep.GetMetadata().Name); err != nil {
		t.Fatalf("dependent of a live owner was collected: %v", err)
	}
	if _, err := env.Admin.Delete(ctx, "Network", "lab", ref.Name); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		if _, err := env.Admin.Get(ctx, "Subnet", "lab", dep.GetMetadata().Name); !api.IsNotFound(err) {
			return fmt.Errorf("dependent still there (%v)", err)
		}
		return nil
	})
	if _, err := env.Admin.Get(ctx, "Subnet", "lab", "unowned"); err != nil {
		t.Fatalf("an object without owners was collected: %v", err)
	}

	// A dependent whose owner was replaced (same name, new uid) goes too.
	if _, err := env.Admin.Create(ctx, servertest.Example("Network", "lab")); err != nil {
		t.Fatal(err)
	}
	stale := servertest.Example("Subnet", "lab")
	stale.GetMetadata().Name = "stale"
	stale.(*api.Subnet).Spec.CIDR = "10.0.2.0/24"
	stale.GetMetadata().OwnerReferences = []api.OwnerReference{ref} // the old uid
	if _, err := env.Admin.Create(ctx, stale); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		if _, err := env.Admin.Get(ctx, "Subnet", "lab", "stale"); !api.IsNotFound(err) {
			return fmt.Errorf("dependent of a replaced owner still there (%v)", err)
		}
		return nil
	})

	// Deleting a tenant removes everything in it.
	if _, err := env.Admin.Delete(ctx, "Tenant", "", "lab"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		for _, kind := range []string{"Network", "Subnet"} {
			left, _, err := env.Admin.List(ctx, kind, "", client.ListOptions{AllTenants: true})
			if err != nil {
				return err
			}
			if len(left) > 0 {
				return fmt.Errorf("%d %s of the deleted tenant left", len(left), kind)
			}
		}
		return nil
	})
}

// TestHostLivenessLease: a host that renews its lease through the API
// server (which writes nothing) stays Ready long after its last status
// write, and becomes NotReady soon after it stops renewing.
func TestHostLivenessLease(t *testing.T) {
	env := servertest.Start(t)
	ctx := servertest.Ctx(t)
	h := env.Host("h1")
	if _, err := env.Admin.Patch(ctx, "Host", "", "h1", map[string]any{"spec": map[string]any{"leaseSeconds": 5}}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Patch(ctx, "Host", "", "h1", map[string]any{"status": map[string]any{"phase": api.HostReady, "lastHeartbeat": time.Now().UTC()}}, true); err != nil {
		t.Fatal(err)
	}
	// Renew every second for three leases' worth.
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := h.RenewHostLease(ctx, "h1"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
	}
	got, err := env.Admin.Get(ctx, "Host", "", "h1")
	if err != nil {
		t.Fatal(err)
	}
	if st := got.CommonStatus(); st.Phase != api.HostReady {
		t.Fatalf("a host renewing its lease went %s (%+v)", st.Phase, st.Condition("Ready"))
	}
	stopped := time.Now()
	servertest.Eventually(t, 15*time.Second, func() error {
		got, err := env.Admin.Get(ctx, "Host", "", "h1")
		if err != nil {
			return err
		}
		st := got.CommonStatus()
		if c := st.Condition("Ready"); st.Phase != api.HostNotReady || c == nil || c.Reason != "LeaseExpired" {
			return fmt.Errorf("phase %q, Ready %+v", st.Phase, c)
		}
		return nil
	})
	if took := time.Since(stopped); took > 9*time.Second {
		t.Fatalf("NotReady %s after the last renewal of a 5s lease", took.Round(time.Second))
	}
}
