package agent_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// TestPoolVolumeSweep: a deleted volume of a shared pool (a real Ceph
// pool) leaves the pool whatever happened to its host. Deleted while its
// host's agent was down, it is deleted from the pool when the agent comes
// back; deleted once its host is lost for good (lease run out), the
// server moves it to a live host, whose agent deletes it. Until its data
// is gone the Volume object stays (marked deleted, held by
// api.FinalizerPoolVolume). Nobody but the server moves a shared volume
// to another host: a cluster admin's write of spec.host is refused.
func TestPoolVolumeSweep(t *testing.T) {
	needQEMUImg(t)
	l := newLab(t)
	p := rbdPool(t, l)
	pool := p.pool.Metadata.Name
	_, stopH2 := l.addStoppableAgent(t, "h2")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := l.env.Admin.Patch(ctx, "Host", "", "h2", map[string]any{"spec": map[string]any{"leaseSeconds": 5}}, false); err != nil {
		t.Fatal(err)
	}
	make := func(name, host string) *api.Volume {
		t.Helper()
		vol := volume(name, 4<<20, api.VolumeSource{})
		vol.Spec.Host, vol.Spec.Pool = host, pool
		l.create(t, vol)
		v := l.waitVolume(t, name, phase(api.VolumeAvailable, 4<<20))
		if !v.Metadata.HasFinalizer(api.FinalizerPoolVolume) {
			t.Fatalf("volume %s in shared pool %s: finalizers %v, want %s", name, pool, v.Metadata.Finalizers, api.FinalizerPoolVolume)
		}
		return v
	}
	inPool := func(v *api.Volume) bool {
		_, err := p.driver.Stat(ctx, v.Metadata.UID)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		return err == nil
	}
	waitSwept := func(v *api.Volume) {
		t.Helper()
		servertest.Eventually(t, 2*time.Minute, func() error {
			if inPool(v) {
				return fmt.Errorf("volume %s is still in pool %s", v.Metadata.Name, pool)
			}
			if o, err := l.env.Admin.Get(ctx, "Volume", "lab", v.Metadata.Name); !api.IsNotFound(err) {
				return fmt.Errorf("volume %s still in the API (%v): host %q, status %+v", v.Metadata.Name, err, o.(*api.Volume).Spec.Host, o.CommonStatus())
			}
			return nil
		})
	}

	// Only the server moves a shared volume.
	live := make("live", "h2")
	_, err := l.env.Admin.Patch(ctx, "Volume", "lab", "live", map[string]any{"spec": map[string]any{"host": "h1"}}, false)
	if api.ReasonOf(err) != api.ReasonInvalid || !strings.Contains(err.Error(), "spec.host") {
		t.Errorf("a cluster admin moving shared volume live to h1: got %v, want 422 on spec.host", err)
	}
	u := l.env.User(randomName("admin-"), "lab", api.RoleTenantAdmin)
	_, err = u.Patch(ctx, "Volume", "lab", "live", map[string]any{"spec": map[string]any{"host": "h1"}}, false)
	if api.ReasonOf(err) != api.ReasonInvalid || !strings.Contains(err.Error(), "spec.host") {
		t.Errorf("the tenant's admin moving shared volume live to h1: got %v, want 422 on spec.host", err)
	}

	// Deleted while h1's agent is down: kept, then deleted when it is back.
	back := make("back", "h1")
	l.stopAgent()
	l.delete(t, "Volume", "lab", "back")
	time.Sleep(2 * time.Second)
	o, err := l.env.Admin.Get(ctx, "Volume", "lab", "back")
	if err != nil || o.GetMetadata().DeletionTimestamp == nil || !inPool(back) {
		t.Fatalf("volume back deleted while its host is down: got %v (err %v), in pool %v; want it marked deleted and still in the pool", o, err, inPool(back))
	}
	// Deleted, it still moves only by the server's hand.
	_, err = l.env.Admin.Patch(ctx, "Volume", "lab", "back", map[string]any{"spec": map[string]any{"host": "h2"}}, false)
	if api.ReasonOf(err) != api.ReasonInvalid || !strings.Contains(err.Error(), "spec.host") {
		t.Errorf("a cluster admin moving deleted shared volume back to h2: got %v, want 422 on spec.host", err)
	}
	l.startAgent(t)
	waitSwept(back)

	// Deleted once h2 is lost: moved to h1, which deletes it.
	stopH2()
	servertest.Eventually(t, time.Minute, func() error {
		h, err := l.env.Admin.Get(ctx, "Host", "", "h2")
		if err != nil {
			return err
		}
		if c := h.CommonStatus().Condition(api.ConditionReady); c == nil || c.Reason != api.ReasonLeaseExpired {
			return fmt.Errorf("host h2 is %q, want its lease expired", h.CommonStatus().Phase)
		}
		return nil
	})
	l.delete(t, "Volume", "lab", "live")
	waitSwept(live)
}
