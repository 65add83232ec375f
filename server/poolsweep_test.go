package server_test

import (
	"fmt"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// TestPoolVolumeFinalizer: a volume made in a shared pool carries
// api.FinalizerPoolVolume and a local pool's does not; deleting a shared
// one that no host ever made (never placed) lets it go at once, through
// the server's pool-volume sweep; one placed on a host stays, marked
// deleted, until that host says its data is gone, then goes.
func TestPoolVolumeFinalizer(t *testing.T) {
	env := servertest.Start(t)
	ctx := servertest.Ctx(t)
	env.Tenant("a")
	alice := env.User("alice", "a", api.RoleTenantAdmin)
	for _, p := range []*api.StoragePool{
		storagePool("ceph", api.StoragePoolSpec{Driver: api.PoolDriverRBD, RBD: &api.RBDPoolSpec{Monitors: []string{"192.0.2.1"}, Pool: "vms"}}),
		storagePool("bulk", api.StoragePoolSpec{Driver: api.PoolDriverLocal}),
	} {
		if _, err := env.Admin.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		pool string
		want bool
	}{{"ceph", true}, {"bulk", false}} {
		out, err := alice.Create(ctx, poolVolume("in-"+tt.pool, "a", tt.pool))
		if err != nil {
			t.Fatal(err)
		}
		if got := out.GetMetadata().HasFinalizer(api.FinalizerPoolVolume); got != tt.want {
			t.Errorf("volume in pool %s: finalizers %v, want %s: %v", tt.pool, out.GetMetadata().Finalizers, api.FinalizerPoolVolume, tt.want)
		}
	}
	gone := func(name string) {
		t.Helper()
		servertest.Eventually(t, 15*time.Second, func() error {
			if o, err := alice.Get(ctx, "Volume", "a", name); !api.IsNotFound(err) {
				return fmt.Errorf("volume %s still there (%v): %+v", name, err, o)
			}
			return nil
		})
	}
	if _, err := alice.Delete(ctx, "Volume", "a", "in-ceph"); err != nil {
		t.Fatal(err)
	}
	gone("in-ceph")

	// Placed on a host: kept until the host reports the data deleted.
	h1 := env.Host("h1")
	v := poolVolume("placed", "a", "ceph")
	v.Spec.Host = "h1"
	if _, err := env.Admin.Create(ctx, v); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Delete(ctx, "Volume", "a", "placed"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	o, err := h1.Get(ctx, "Volume", "a", "placed")
	if err != nil || o.GetMetadata().DeletionTimestamp == nil {
		t.Fatalf("deleted volume on a live host: %v, %v; want it kept, marked deleted", o, err)
	}
	vol := o.(*api.Volume)
	vol.Status.SetCondition(api.Condition{Type: api.ConditionReady, Status: api.ConditionFalse, Reason: api.ReasonDeleted, Message: "deleted from pool ceph by h1"}, time.Now())
	if _, err := h1.UpdateStatus(ctx, vol); err != nil {
		t.Fatalf("h1 reporting the data deleted: %v", err)
	}
	gone("placed")
}
