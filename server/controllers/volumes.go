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
//     snapshot's file is (for a snapshot in a shared pool, the host that
//     took it, which reaches the pool, makes the clone too);
//   - any other Volume goes to the host of the first placed VM (oldest
//     first) whose spec.disks name it, and stays Pending until there is
//     one;
//   - a Snapshot goes to its volume's host, once the volume has one (for
//     a volume in a shared pool, the host that manages it takes its
//     snapshots in the pool).
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
	// Informers, when set, are shared with the term's other controllers.
	Informers *Informers

	vols, snaps, vms *client.Informer
	volCtl, snapCtl  *reconcile.Controller
	// snapsOf files snapshots under their volume, volsFrom volumes under
	// the snapshot they start from, and users VMs under the volumes their
	// disks name (all "tenant/name"), so a change looks only at what it
	// concerns.
	snapsOf, volsFrom, users keyIndex
}

// Run runs the controller until ctx ends.
func (c *VolumePlacement) Run(ctx context.Context) error {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Resync == 0 {
		c.Resync = 30 * time.Second
	}
	c.vols = c.Informers.informer(ctx, c.Client, "Volume")
	c.snaps = c.Informers.informer(ctx, c.Client, "Snapshot")
	c.vms = c.Informers.informer(ctx, c.Client, "VirtualMachine")
	c.volCtl = &reconcile.Controller{Name: "volume-placement", Reconciler: reconcile.ReconcilerFunc(c.reconcileVolume),
		Resync: c.Resync, List: func(context.Context) ([]string, error) { return unbound(c.vols), nil }}
	c.snapCtl = &reconcile.Controller{Name: "snapshot-placement", Reconciler: reconcile.ReconcilerFunc(c.reconcileSnapshot),
		Resync: c.Resync, List: func(context.Context) ([]string, error) { return unbound(c.snaps), nil }}

	ownVol, ownSnap := enqueueOwn(c.volCtl, ""), enqueueOwn(c.snapCtl, "")
	c.vols.OnUpdateUntil(ctx, func(ch client.Change) {
		key := ch.Key
		var from []string
		if ch.New != nil {
			if v := ch.New.(*api.Volume); v.Spec.Source.Snapshot != "" {
				from = []string{v.Metadata.Tenant + "/" + v.Spec.Source.Snapshot}
			}
		}
		c.volsFrom.set(key, from)
		ownVol(ch)
		// Snapshots of the volume may now have a host to go to.
		for _, k := range c.snapsOf.keys(key) {
			c.snapCtl.Enqueue(k)
		}
	})
	c.snaps.OnUpdateUntil(ctx, func(ch client.Change) {
		key := ch.Key
		var of []string
		if ch.New != nil {
			s := ch.New.(*api.Snapshot)
			of = []string{s.Metadata.Tenant + "/" + s.Spec.Volume}
		}
		c.snapsOf.set(key, of)
		ownSnap(ch)
		// Volumes made from the snapshot may now have a host to go to.
		for _, k := range c.volsFrom.keys(key) {
			c.volCtl.Enqueue(k)
		}
	})
	c.vms.OnChangeUntil(ctx, func(key string, obj api.Object) {
		var uses []string
		if obj != nil {
			vm := obj.(*api.VirtualMachine)
			for _, d := range vm.Spec.Disks {
				if d.Volume != "" {
					uses = append(uses, vm.Metadata.Tenant+"/"+d.Volume)
				}
			}
		}
		c.users.set(key, uses)
		if obj == nil || obj.(*api.VirtualMachine).Spec.Host == "" {
			return // a VM going away, or not placed, binds nothing
		}
		for _, k := range uses {
			c.volCtl.Enqueue(k)
		}
	})
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
	for _, k := range c.users.keys(t + "/" + vol.Metadata.Name) {
		o, ok := c.vms.Get(k)
		if !ok {
			continue
		}
		vm := o.(*api.VirtualMachine)
		if vm.Metadata.Tenant == t && vm.Spec.Host != "" && vm.Metadata.DeletionTimestamp == nil &&
			slices.ContainsFunc(vm.Spec.Disks, func(d api.VMDisk) bool { return d.Volume == vol.Metadata.Name }) {
			users = append(users, vm)
		}
	}
	if len(users) == 0 {
		if vol.Spec.Pool != "" {
			return "", fmt.Sprintf("waiting for a VM that uses it to be placed: the host of its VM makes it in pool %s, which every host reaches", vol.Spec.Pool)
		}
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
	patch := api.BindTo(m.ResourceVersion, host)
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
	case o.(*api.Volume).Spec.Host == "":
		return reconcile.Result{}, c.markPending(ctx, snap, fmt.Sprintf("waiting for volume %s to be placed on a host", snap.Spec.Volume))
	}
	host := o.(*api.Volume).Spec.Host
	return c.bind(ctx, snap, host, fmt.Sprintf("volume %s is there", snap.Spec.Volume))
}
