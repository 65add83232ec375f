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

// ConditionBound is the condition VolumePlacement writes on a Volume or
// Snapshot it has not bound to a host yet.
const ConditionBound = api.ConditionBound

// VolumePlacement binds local storage to hosts. A local Volume's data is a
// file on one host, so it is made where it is first needed:
//
//   - a Volume made from a Snapshot goes to the snapshot's host, where the
//     snapshot's file is;
//   - any other Volume goes to the host of the first placed VM (oldest
//     first) whose spec.disks name it, and stays Pending until there is
//     one;
//   - a Snapshot goes to its volume's host, once the volume has one.
//
// Once bound, the host cannot change (validation refuses it), and the
// scheduler sends every VM that uses a local volume there. Volumes in
// shared pools (nfs, rbd) are bound the same way, to the host of the
// first VM that uses them, but only so that one agent makes, grows,
// deletes and reports each: every host reaches them, so the scheduler
// lets VMs using them go anywhere.
type VolumePlacement struct {
	Client   *client.Client
	Recorder *client.Recorder
	// Resync is how often every unbound volume and snapshot is looked at
	// again even without a change (default 30s).
	Resync time.Duration
	Now    func() time.Time

	vols, snaps, vms *client.Informer
	volCtl, snapCtl  *reconcile.Controller
}

// Run runs the controller until ctx ends.
func (c *VolumePlacement) Run(ctx context.Context) error {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Resync == 0 {
		c.Resync = 30 * time.Second
	}
	all := client.ListOptions{AllTenants: true}
	c.vols = client.NewInformer(c.Client, "Volume", "", all)
	c.snaps = client.NewInformer(c.Client, "Snapshot", "", all)
	c.vms = client.NewInformer(c.Client, "VirtualMachine", "", all)
	c.volCtl = &reconcile.Controller{Name: "volume-placement", Reconciler: reconcile.ReconcilerFunc(c.reconcileVolume),
		Resync: c.Resync, List: func(context.Context) ([]string, error) { return unbound(c.vols), nil }}
	c.snapCtl = &reconcile.Controller{Name: "snapshot-placement", Reconciler: reconcile.ReconcilerFunc(c.reconcileSnapshot),
		Resync: c.Resync, List: func(context.Context) ([]string, error) { return unbound(c.snaps), nil }}

	ownVol, ownSnap := enqueueOwn(c.volCtl, ""), enqueueOwn(c.snapCtl, "")
	c.vols.OnUpdate(func(ch client.Change) {
		ownVol(ch)
		key := ch.Key
		// Snapshots of the volume may now have a host to go to.
		tenant, name := client.SplitKey(key)
		for _, o := range c.snaps.List() {
			if s := o.(*api.Snapshot); s.Metadata.Tenant == tenant && s.Spec.Volume == name && s.Spec.Host == "" {
				c.snapCtl.Enqueue(client.Key(s))
			}
		}
	})
	c.snaps.OnUpdate(func(ch client.Change) {
		ownSnap(ch)
		key := ch.Key
		tenant, name := client.SplitKey(key)
		for _, o := range c.vols.List() {
			if v := o.(*api.Volume); v.Metadata.Tenant == tenant && v.Spec.Source.Snapshot == name && v.Spec.Host == "" {
				c.volCtl.Enqueue(client.Key(v))
			}
		}
	})
	c.vms.OnChange(func(key string, obj api.Object) {
		if obj == nil {
			return // a VM going away binds nothing
		}
		vm := obj.(*api.VirtualMachine)
		if vm.Spec.Host == "" {
			return
		}
		for _, d := range vm.Spec.Disks {
			if d.Volume != "" {
				c.volCtl.Enqueue(vm.Metadata.Tenant + "/" + d.Volume)
			}
		}
	})
	for _, inf := range []*client.Informer{c.vols, c.snaps, c.vms} {
		go inf.Run(ctx)
	}
	for _, inf := range []*client.Informer{c.vols, c.snaps, c.vms} {
		if inf.WaitSynced(ctx) != nil {
			return nil
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- c.snapCtl.Run(ctx) }()
	err := c.volCtl.Run(ctx)
	if serr := <-errc; err == nil {
		err = serr
	}
	return err
}

// unbound lists the keys of the objects of an informer of Volumes or
// Snapshots that have no host yet.
func unbound(inf *client.Informer) []string {
	var keys []string
	for _, o := range inf.List() {
		if placedOn(o) == "" && o.GetMetadata().DeletionTimestamp == nil {
			keys = append(keys, client.Key(o))
		}
	}
	return keys
}

// placedOn is the host of a Volume or Snapshot ("" while unbound).
func placedOn(o api.Object) string {
	switch x := o.(type) {
	case *api.Volume:
		return x.Spec.Host
	case *api.Snapshot:
		return x.Spec.Host
	}
	return ""
}

func (c *VolumePlacement) reconcileVolume(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := c.vols.Get(key)
	if !ok {
		return reconcile.Result{}, nil
	}
	vol := obj.(*api.Volume)
	if vol.Spec.Host != "" || vol.Metadata.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	if vol.Spec.Shared() && vol.Spec.Source.Snapshot != "" {
		return reconcile.Result{}, c.markPending(ctx, vol, fmt.Sprintf("volumes on %s storage cannot be made from a snapshot yet", vol.Spec.Backend))
	}
	host, why := c.volumeHost(vol)
	if host == "" {
		return reconcile.Result{}, c.markPending(ctx, vol, why)
	}
	return c.bind(ctx, vol, host, why)
}

// volumeHost decides where a local volume goes, and says why; "" with the
// reason it waits.
func (c *VolumePlacement) volumeHost(vol *api.Volume) (host, why string) {
	t := vol.Metadata.Tenant
	if snap := vol.Spec.Source.Snapshot; snap != "" {
		o, ok := c.snaps.Get(t + "/" + snap)
		switch {
		case !ok:
			return "", fmt.Sprintf("waiting for snapshot %s, which it starts from, to exist", snap)
		case o.(*api.Snapshot).Spec.Host == "":
			return "", fmt.Sprintf("waiting for snapshot %s, which it starts from, to be placed on a host", snap)
		}
		h := o.(*api.Snapshot).Spec.Host
		return h, fmt.Sprintf("snapshot %s, which it starts from, is on %s", snap, h)
	}
	var users []*api.VirtualMachine
	for _, o := range c.vms.List() {
		vm := o.(*api.VirtualMachine)
		if vm.Metadata.Tenant == t && vm.Spec.Host != "" && vm.Metadata.DeletionTimestamp == nil &&
			slices.ContainsFunc(vm.Spec.Disks, func(d api.VMDisk) bool { return d.Volume == vol.Metadata.Name }) {
			users = append(users, vm)
		}
	}
	if len(users) == 0 {
		return "", "waiting for a VM that uses it to be placed: a local volume is made on the host of its VM"
	}
	sort.SliceStable(users, func(i, j int) bool {
		a, b := users[i].Metadata.CreationTimestamp, users[j].Metadata.CreationTimestamp
		if a != nil && b != nil && !a.Equal(*b) {
			return a.Before(*b)
		}
		return users[i].Metadata.Name < users[j].Metadata.Name
	})
	return users[0].Spec.Host, fmt.Sprintf("VM %s, which uses it, runs there", users[0].Metadata.Name)
}

// bind sets spec.host, conditional on the version decided on.
func (c *VolumePlacement) bind(ctx context.Context, obj api.Object, host, why string) (reconcile.Result, error) {
	kind, m := obj.GetTypeMeta().Kind, obj.GetMetadata()
	patch := map[string]any{
		"metadata": map[string]any{"resourceVersion": m.ResourceVersion},
		"spec":     map[string]any{"host": host},
	}
	out, err := c.Client.Patch(ctx, kind, m.Tenant, m.Name, patch, false)
	switch {
	case api.IsConflict(err):
		// Changed since the cache saw it: decide again on the newer one.
		return reconcile.Result{RequeueAfter: 200 * time.Millisecond}, nil
	case api.IsNotFound(err):
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("binding %s %s to host %s: %w", kind, client.Key(obj), host, err)
	}
	c.Recorder.Eventf(ctx, out, api.EventNormal, "Bound", "placed on %s: %s", host, why)
	return reconcile.Result{}, nil
}

// markPending records why a volume or snapshot has no host yet. Only the
// phase and the Bound condition are written; the agent owns the rest of
// the status once there is a host.
func (c *VolumePlacement) markPending(ctx context.Context, obj api.Object, why string) error {
	cache := c.vols
	if obj.GetTypeMeta().Kind == "Snapshot" {
		cache = c.snaps
	}
	now := c.Now().UTC()
	_, _, err := client.WriteStatus(ctx, c.Client, cache, obj, func(obj api.Object) {
		if placedOn(obj) != "" {
			return // bound meanwhile: the status is its agent's now
		}
		st := obj.CommonStatus()
		st.Phase = api.VolumePending // Snapshots say Pending too
		st.SetCondition(api.Condition{Type: ConditionBound, Status: api.ConditionFalse, Reason: api.ReasonWaiting, Message: why,
			ObservedGeneration: obj.GetMetadata().Generation}, now)
	})
	if err != nil && !api.IsNotFound(err) {
		return err
	}
	return nil
}

func (c *VolumePlacement) reconcileSnapshot(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := c.snaps.Get(key)
	if !ok {
		return reconcile.Result{}, nil
	}
	snap := obj.(*api.Snapshot)
	if snap.Spec.Host != "" || snap.Metadata.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	o, ok := c.vols.Get(snap.Metadata.Tenant + "/" + snap.Spec.Volume)
	switch {
	case !ok:
		return reconcile.Result{}, c.markPending(ctx, snap, fmt.Sprintf("waiting for volume %s to exist", snap.Spec.Volume))
	case o.(*api.Volume).Spec.Backend != "" && o.(*api.Volume).Spec.Backend != api.BackendLocal:
		return reconcile.Result{}, c.markPending(ctx, snap, fmt.Sprintf("volume %s is on %s storage; snapshots of shared volumes are not supported yet", snap.Spec.Volume, o.(*api.Volume).Spec.Backend))
	case o.(*api.Volume).Spec.Host == "":
		return reconcile.Result{}, c.markPending(ctx, snap, fmt.Sprintf("waiting for volume %s to be placed on a host", snap.Spec.Volume))
	}
	host := o.(*api.Volume).Spec.Host
	return c.bind(ctx, snap, host, fmt.Sprintf("volume %s is there", snap.Spec.Volume))
}
