package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/reconcile"
	"hearth.dev/hearth/storage"
)

// reconcilePoolVolume makes one volume that names a pool match its
// object, through the pool's driver: the agent of the volume's host
// (spec.host) makes, grows and deletes it and reports its status, for a
// shared volume as for a local one; VMs on any host attach a shared one.
func (v *volumeController) reconcilePoolVolume(ctx context.Context, vol *api.Volume) (reconcile.Result, error) {
	key := vol.Metadata.Tenant + "/" + vol.Metadata.Name
	defer v.hold("pool:" + key)()
	st := vol.Status
	st.Conditions = slices.Clone(st.Conditions)
	st.ObservedGeneration = vol.Metadata.Generation
	now := time.Now()
	markBound(vol, &st.CommonStatus, now)
	fail := func(phase, reason string, err error) (reconcile.Result, error) {
		st.Phase = phase
		st.SetCondition(api.Condition{Type: condReady, Status: api.ConditionFalse, Reason: reason, Message: err.Error()}, now)
		if werr := v.writeVolumeStatus(ctx, vol, st); werr != nil {
			return reconcile.Result{}, werr
		}
		if phase == api.VolumePending {
			return reconcile.Result{}, nil // it hears of what it waits for
		}
		return reconcile.Result{}, err
	}

	d, err := v.a.pools.forVolume(ctx, vol)
	switch {
	case errors.Is(err, errWaiting):
		return fail(api.VolumePending, api.ReasonWaiting, err)
	case err != nil:
		return fail(api.VolumeFailed, api.ReasonCreateFailed, err)
	}
	id := vol.Metadata.UID
	att, err := d.Attachment(id)
	if err != nil {
		return fail(api.VolumeFailed, api.ReasonCreateFailed, err)
	}
	st.Path = location(att)
	users, err := v.poolUsers(ctx, vol, d.Shared())
	if err != nil {
		return reconcile.Result{}, err
	}
	st.AttachedTo = ""
	if len(users) > 0 {
		st.AttachedTo = users[0].Metadata.Name
	}

	stat, err := d.Stat(ctx, id)
	if errors.Is(err, fs.ErrNotExist) {
		err = v.createInPool(ctx, d, vol, &st)
		switch {
		case missingKind(err) == "Image":
			st.Phase = api.VolumePending
			st.SetCondition(api.Condition{Type: condReady, Status: api.ConditionFalse, Reason: api.ReasonImageNotFound, Message: err.Error()}, now)
			return reconcile.Result{}, v.writeVolumeStatus(ctx, vol, st)
		case errors.Is(err, errWaiting):
			return fail(api.VolumePending, api.ReasonWaiting, err)
		case err != nil:
			return fail(api.VolumeFailed, api.ReasonCreateFailed, err)
		}
		v.a.rec.Eventf(ctx, vol, api.EventNormal, "Created", "made %s in pool %s", describeVolume(vol), vol.Spec.Pool)
		if stat, err = d.Stat(ctx, id); err != nil {
			return reconcile.Result{}, err
		}
	} else if err != nil {
		return fail(api.VolumeFailed, api.ReasonCreateFailed, err)
	}

	grown, err := v.grow(ctx, vol, &st, now, stat.Size,
		func() string { return runningOf(users) },
		func(want int64) error { return d.Resize(ctx, id, want) })
	if err != nil {
		return reconcile.Result{}, err
	}
	if grown {
		if stat, err = d.Stat(ctx, id); err != nil {
			return reconcile.Result{}, err
		}
	}
	if int64(vol.Spec.Size) <= stat.Size {
		removeCondition(&st.CommonStatus, condResized)
	}
	st.Size, st.ActualSize = api.Bytes(stat.Size), api.Bytes(stat.Allocated)
	st.Phase = api.VolumeAvailable
	if st.AttachedTo != "" {
		st.Phase = api.VolumeInUse
	}
	msg := "the volume is in " + d.Kind() + " pool " + vol.Spec.Pool
	if !d.Shared() {
		msg += " on " + v.a.cfg.Name
	}
	if len(users) > 1 {
		names := make([]string, len(users))
		for i, u := range users {
			names[i] = u.Metadata.Name
		}
		msg += fmt.Sprintf("; VMs %s all list it, but a volume serves one VM at a time", strings.Join(names, ", "))
	}
	st.SetCondition(api.Condition{Type: condReady, Status: api.ConditionTrue, Reason: api.ReasonCreated, Message: msg}, now)
	return reconcile.Result{}, v.writeVolumeStatus(ctx, vol, st)
}

// createInPool makes a volume in its pool: blank, or a copy-on-write clone
// of its image, which the pool imports the first time (rbd, nfs).
func (v *volumeController) createInPool(ctx context.Context, d storage.Driver, vol *api.Volume, st *api.VolumeStatus) error {
	size, id := int64(vol.Spec.Size), vol.Metadata.UID
	src := vol.Spec.Source
	switch {
	case src.Snapshot != "":
		snap, err := v.poolSnapshotSource(ctx, vol)
		if err != nil {
			return err
		}
		return d.CloneSnapshot(ctx, snap.Status.VolumeUID, snap.Metadata.UID, id, size)
	case src.Image != "":
		v.a.imgs.mu.RLock()
		defer v.a.imgs.mu.RUnlock()
		img, base, err := v.sourceImage(ctx, vol, st)
		if err != nil {
			return err
		}
		// The checksum names the image in the pool, so equal images are
		// imported once. The cache keeps a downloaded image under its
		// checksum's hex; a file:// image is used where it is, checked
		// against the checksum its Image gives.
		_, sum, _ := v.a.imageSource(img)
		if filepath.Dir(base) == filepath.Join(v.a.images.Dir, "sha256") {
			sum = "sha256:" + filepath.Base(base)
		}
		return d.CloneImage(ctx, storage.Image{Checksum: sum, Path: base}, id, size)
	}
	return d.CreateVolume(ctx, id, size)
}

// poolVolumeGone deals with a volume in a pool that is deleted (cur, the
// object still placed here, held by api.FinalizerPoolVolume) or has left
// this host's cache (cur nil). A deleted volume's data is deleted from the
// pool and the status says so (Ready False, reason Deleted), so the
// server lets the object go. One that left the cache is looked up first:
// it is deleted only if the API no longer has it (a volume made before the
// finalizer existed); one that moved to another host (the server moves a
// deleted volume off a lost host) is that host's to delete.
func (v *volumeController) poolVolumeGone(ctx context.Context, key string, cur, last *api.Volume) error {
	if cur == nil {
		tenant, name := client.SplitKey(key)
		o, err := v.a.c.Get(ctx, "Volume", tenant, name)
		switch {
		case api.IsNotFound(err):
		case err != nil:
			return fmt.Errorf("looking up volume %s, which left this host: %w", key, err)
		case o.GetMetadata().UID != last.Metadata.UID:
			// Deleted, and another made under its name.
		default:
			// Still there, placed on another host (or back here, which
			// the cache will say): not this host's to delete.
			v.forgetPoolVolume(key, last)
			return nil
		}
		return v.deletePoolVolume(ctx, key, last)
	}
	if err := v.deletePoolVolume(ctx, key, last); err != nil {
		return err
	}
	if !cur.Metadata.HasFinalizer(api.FinalizerPoolVolume) {
		return nil
	}
	if c := cur.Status.Condition(condReady); c != nil && c.Reason == api.ReasonDeleted {
		return nil
	}
	st := cur.Status
	st.Conditions = slices.Clone(st.Conditions)
	st.AttachedTo = ""
	st.SetCondition(api.Condition{Type: condReady, Status: api.ConditionFalse, Reason: api.ReasonDeleted,
		Message: fmt.Sprintf("deleted from pool %s by %s", cur.Spec.Pool, v.a.cfg.Name)}, time.Now())
	return v.writeVolumeStatus(ctx, cur, st)
}

// forgetPoolVolume forgets the last seen of a volume in a pool.
func (v *volumeController) forgetPoolVolume(key string, last *api.Volume) {
	v.mu.Lock()
	if v.poolVols[key] == last {
		delete(v.poolVols, key)
	}
	v.mu.Unlock()
}

// deletePoolVolume deletes a volume that is gone from the API (or from
// this host) from its pool. On rbd a volume some QEMU still has open is
// busy: the delete is tried again, with backoff, until it is let go.
func (v *volumeController) deletePoolVolume(ctx context.Context, key string, last *api.Volume) error {
	d, err := v.a.pools.forVolume(ctx, last)
	if err != nil {
		return fmt.Errorf("deleting volume %s from pool %s: %w", key, last.Spec.Pool, err)
	}
	if err := d.DeleteVolume(ctx, last.Metadata.UID); err != nil {
		return fmt.Errorf("deleting volume %s from pool %s: %w", key, last.Spec.Pool, err)
	}
	v.forgetPoolVolume(key, last)
	slog.Info("removed volume", "volume", key, "pool", last.Spec.Pool)
	// A snapshot deleted while this volume was cloned from it may go now.
	v.retryGoneSnapshots(last.Metadata.Tenant)
	return nil
}

// poolUsers returns the VMs whose disks list the volume, oldest first:
// those on this host, or, for a shared volume, on any host (from the
// API), since any host may run them.
func (v *volumeController) poolUsers(ctx context.Context, vol *api.Volume, shared bool) ([]*api.VirtualMachine, error) {
	var vms []api.Object
	if shared {
		objs, _, err := v.a.c.List(ctx, "VirtualMachine", vol.Metadata.Tenant, client.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("listing the VMs that may use volume %s: %w", vol.Metadata.Name, err)
		}
		vms = objs
	} else {
		vms = v.a.cache.vms.List()
	}
	var out []*api.VirtualMachine
	for _, o := range vms {
		vm := o.(*api.VirtualMachine)
		if vm.Metadata.Tenant != vol.Metadata.Tenant || vm.Metadata.DeletionTimestamp != nil {
			continue
		}
		if slices.ContainsFunc(vm.Spec.Disks, func(d api.VMDisk) bool { return d.Volume == vol.Metadata.Name }) {
			out = append(out, vm)
		}
	}
	slices.SortFunc(out, func(a, b *api.VirtualMachine) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
	return out, nil
}

// runningOf names a VM of vms that runs (or is starting or moving), "" if
// none does: its disk must not change under it.
func runningOf(vms []*api.VirtualMachine) string {
	for _, vm := range vms {
		switch vm.Status.Phase {
		case api.VMRunning, api.VMStarting, api.VMPaused:
			return vm.Metadata.Name
		}
	}
	return ""
}

// preparePoolDisk makes disk the volume vol in its pool, as this host
// reaches it, once the volume's host has made it; grown first if its spec
// asks for more (the VM is not running, so nothing holds it).
func (a *Agent) preparePoolDisk(ctx context.Context, vol *api.Volume, field string, disk *compute.Disk) error {
	d, err := a.pools.forVolume(ctx, vol)
	if errors.Is(err, errWaiting) {
		return waitingFor(api.ReasonVolumeNotReady, "%s.volume: %v", field, err)
	}
	if err != nil {
		return fmt.Errorf("%s.volume %s: %w", field, vol.Metadata.Name, err)
	}
	id := vol.Metadata.UID
	stat, err := d.Stat(ctx, id)
	if errors.Is(err, fs.ErrNotExist) {
		why := "its phase is " + vol.Status.Phase
		if c := vol.Status.Condition(api.ConditionReady); c != nil && c.Message != "" {
			why = c.Message
		}
		return waitingFor(api.ReasonVolumeNotReady, "%s.volume: volume %s is not made in pool %s yet (%s)", field, vol.Metadata.Name, vol.Spec.Pool, why)
	}
	if err != nil {
		return fmt.Errorf("%s.volume %s: %w", field, vol.Metadata.Name, err)
	}
	if want := int64(vol.Spec.Size); want > stat.Size {
		if err := d.Resize(ctx, id, want); err != nil {
			return fmt.Errorf("%s.volume %s: %w", field, vol.Metadata.Name, err)
		}
	}
	att, err := d.Attachment(id)
	if err != nil {
		return fmt.Errorf("%s.volume %s: %w", field, vol.Metadata.Name, err)
	}
	poolDisk(att, disk)
	return nil
}
