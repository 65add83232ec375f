package controllers

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/reconcile"
)

// PoolVolumeSweep sees that every deleted Volume of a shared pool (rbd,
// nfs) leaves the pool. Such a volume carries api.FinalizerPoolVolume
// (admission adds it), so deleting it only marks it; then:
//
//   - the agent of its host deletes its data from the pool and says so
//     (Ready False, reason Deleted), and this controller removes the
//     finalizer, which lets the object go;
//   - a host that was down when the volume was deleted does so when it
//     comes back, as the marked volume is still placed on it;
//   - a host that is lost (its lease ran out, or its Host is deleted)
//     never will: the volume's data is in the pool, not on that host, so
//     this controller moves the deleted volume to a live host (spec.host;
//     only the server may), whose agent deletes it. No fencing is needed:
//     the volume is deleted, so whatever the lost host still has open of
//     it is lost with it;
//   - a volume never placed on a host was never made: the finalizer goes
//     at once.
type PoolVolumeSweep struct {
	Client   *client.Client
	Recorder *client.Recorder
	// Leases are the hosts' leases; nil trusts the Host's phase alone.
	Leases HostLeases
	// Resync is how often the deleted volumes are looked at again
	// (default 30s).
	Resync time.Duration
	// Informers, when set, are shared with the term's other controllers.
	Informers *Informers

	vols, hosts, pools *client.Informer
	ctl                *reconcile.Controller
}

// Run runs the controller until ctx ends.
func (c *PoolVolumeSweep) Run(ctx context.Context) error {
	if c.Resync == 0 {
		c.Resync = 30 * time.Second
	}
	c.vols = c.Informers.informer(ctx, c.Client, "Volume")
	c.hosts = c.Informers.informer(ctx, c.Client, "Host")
	c.pools = c.Informers.informer(ctx, c.Client, "StoragePool")
	c.ctl = &reconcile.Controller{Name: "pool-volume-sweep", Reconciler: reconcile.ReconcilerFunc(c.reconcile),
		Resync: c.Resync, List: func(context.Context) ([]string, error) { return c.deleted(""), nil }}
	c.vols.OnUpdateUntil(ctx, func(ch client.Change) {
		if ch.New != nil && sweeping(ch.New.(*api.Volume)) {
			c.ctl.Enqueue(ch.Key)
		}
	})
	onHost := func(host string) {
		for _, k := range c.deleted(host) {
			c.ctl.Enqueue(k)
		}
	}
	c.hosts.OnChangeUntil(ctx, func(key string, _ api.Object) { onHost(key) })
	if c.Leases != nil {
		stop := c.Leases.OnChange(onHost)
		defer stop()
		if err := c.Leases.WaitSynced(ctx); err != nil {
			return nil
		}
	}
	if c.vols.WaitSynced(ctx) != nil || c.hosts.WaitSynced(ctx) != nil || c.pools.WaitSynced(ctx) != nil {
		return nil
	}
	return c.ctl.Run(ctx)
}

// sweeping reports whether vol is a deleted volume whose data may still
// be in its pool.
func sweeping(vol *api.Volume) bool {
	return vol.Metadata.DeletionTimestamp != nil && vol.Metadata.HasFinalizer(api.FinalizerPoolVolume)
}

// deleted lists the keys of the deleted volumes still held by the
// finalizer (on host, or on any host for "").
func (c *PoolVolumeSweep) deleted(host string) []string {
	var keys []string
	for _, o := range c.vols.List() {
		if vol := o.(*api.Volume); sweeping(vol) && (host == "" || vol.Spec.Host == host) {
			keys = append(keys, client.Key(vol))
		}
	}
	return keys
}

func (c *PoolVolumeSweep) reconcile(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := c.vols.Get(key)
	if !ok || !sweeping(obj.(*api.Volume)) {
		return reconcile.Result{}, nil
	}
	vol := obj.(*api.Volume)
	ready := vol.Status.Condition(api.ConditionReady)
	switch {
	case vol.Spec.Host == "", ready != nil && ready.Status == api.ConditionFalse && ready.Reason == api.ReasonDeleted:
		return c.release(ctx, vol)
	}
	why, lost := c.lost(vol.Spec.Host)
	if !lost {
		return reconcile.Result{}, nil // its agent deletes it
	}
	to := c.liveHost(vol.Spec.Host, c.poolSite(vol.Spec.Pool))
	if to == "" {
		return reconcile.Result{RequeueAfter: c.Resync}, nil // a host comes, or this one back
	}
	m := vol.Metadata
	patch := map[string]any{"metadata": map[string]any{"resourceVersion": m.ResourceVersion}, "spec": map[string]any{"host": to}}
	out, err := c.Client.Patch(ctx, "Volume", m.Tenant, m.Name, patch, false)
	switch {
	case api.IsConflict(err):
		return reconcile.Result{RequeueAfter: 200 * time.Millisecond}, nil
	case api.IsNotFound(err):
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("moving deleted volume %s off lost host %s: %w", key, vol.Spec.Host, err)
	}
	c.Recorder.Eventf(ctx, out, api.EventNormal, "Moved", "host %s is lost (%s); %s deletes the volume from pool %s", vol.Spec.Host, why, to, vol.Spec.Pool)
	return reconcile.Result{}, nil
}

// release removes the finalizer: the volume's data is gone from its pool
// (or was never made), so the object may go.
func (c *PoolVolumeSweep) release(ctx context.Context, vol *api.Volume) (reconcile.Result, error) {
	m := vol.Metadata
	rest := slices.DeleteFunc(slices.Clone(m.Finalizers), func(f string) bool { return f == api.FinalizerPoolVolume })
	patch := map[string]any{"metadata": map[string]any{"resourceVersion": m.ResourceVersion, "finalizers": rest}}
	_, err := c.Client.Patch(ctx, "Volume", m.Tenant, m.Name, patch, false)
	switch {
	case api.IsConflict(err):
		return reconcile.Result{RequeueAfter: 200 * time.Millisecond}, nil
	case api.IsNotFound(err):
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("releasing deleted volume %s: %w", client.Key(vol), err)
	}
	return reconcile.Result{}, nil
}

// lost reports whether host is gone for good as far as its volumes go:
// its Host is deleted, or its lease ran out (HostLiveness said so and the
// lease is not back).
func (c *PoolVolumeSweep) lost(name string) (why string, lost bool) {
	obj, ok := c.hosts.Get(name)
	if !ok {
		return "its Host is deleted", true
	}
	h := obj.(*api.Host)
	cond := h.Status.Condition(api.ConditionReady)
	if h.Status.Phase != api.HostNotReady || cond == nil || cond.Reason != api.ReasonLeaseExpired {
		return "", false
	}
	if c.Leases != nil && c.Leases.Alive(h.Metadata.Name, h.Metadata.UID) {
		return "", false
	}
	return cond.Message, true
}

// poolSite is the site whose hosts reach a pool ("" for every site's).
func (c *PoolVolumeSweep) poolSite(name string) string {
	if o, ok := c.pools.Get(name); ok {
		return o.(*api.StoragePool).Spec.Site
	}
	return ""
}

// liveHost picks the Ready host, other than not, that deletes a volume
// for a lost one: the first by name of those in the pool's site (any
// site for ""), since every host there reaches the pool.
func (c *PoolVolumeSweep) liveHost(not, site string) string {
	var names []string
	for _, o := range c.hosts.List() {
		h := o.(*api.Host)
		if h.Metadata.Name != not && h.Metadata.DeletionTimestamp == nil && h.Status.Phase == api.HostReady &&
			(site == "" || h.Spec.Site == site) {
			names = append(names, h.Metadata.Name)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return ""
	}
	return names[0]
}
