package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/reconcile"
)

// Snapshots of volumes in a pool are the pool driver's (storage.Driver's
// Snapshot): an RBD snapshot inside the volume's image, protected so it
// can be cloned; a flattened copy on an NFS share; a file in a local
// pool's directory. The agent of the volume's host takes them, as it
// makes the volume, and records in the Snapshot's status the pool and the
// volume's uid, which name the snapshot in the pool: a volume made from
// it (in the same pool, by any host that reaches it) and its deletion
// need both, also once the Volume object is gone.
//
// A snapshot is taken while no VM runs on the volume, as for local
// volumes: an NFS copy of a disk being written is torn, an RBD snapshot
// only crash-consistent.

// notePoolSnapshot remembers the last seen of each snapshot that lives in
// a pool, so it can be deleted from the pool once its object is gone.
func (v *volumeController) notePoolSnapshot(ch client.Change) {
	if ch.New == nil {
		return
	}
	if s := ch.New.(*api.Snapshot); s.Status.Pool != "" && s.Status.VolumeUID != "" {
		v.mu.Lock()
		v.poolSnaps[ch.Key] = s
		v.mu.Unlock()
	}
}

// poolSnapshotGone deletes from its pool a snapshot whose object is gone
// (or left this host); handled reports whether it was a pool's.
func (v *volumeController) poolSnapshotGone(ctx context.Context, key string) (handled bool, err error) {
	v.mu.Lock()
	last := v.poolSnaps[key]
	v.mu.Unlock()
	if last == nil {
		return false, nil
	}
	return true, v.deletePoolSnapshot(ctx, key, last)
}

// retryGoneSnapshots tries again, now, to delete the tenant's snapshots
// whose objects are gone but which stayed in their pool: a volume cloned
// from one was just deleted.
func (v *volumeController) retryGoneSnapshots(tenant string) {
	v.mu.Lock()
	var keys []string
	for k := range v.poolSnaps {
		if t, _ := client.SplitKey(k); t == tenant {
			keys = append(keys, k)
		}
	}
	v.mu.Unlock()
	for _, k := range keys {
		if o, ok := v.a.cache.snapshots.Get(k); !ok || o.GetMetadata().DeletionTimestamp != nil {
			v.snapCtl.EnqueueNow(k)
		}
	}
}

// isPoolSnapshot reports whether snap is, or is to be, a pool's: its
// status says so, or its volume names a pool.
func (v *volumeController) isPoolSnapshot(snap *api.Snapshot) bool {
	if snap.Status.Pool != "" {
		return true
	}
	o, ok := v.a.cache.volumes.Get(snap.Metadata.Tenant + "/" + snap.Spec.Volume)
	return ok && o.(*api.Volume).Spec.Pool != ""
}

// reconcilePoolSnapshot takes one snapshot of a volume in a pool, once,
// and reports it.
func (v *volumeController) reconcilePoolSnapshot(ctx context.Context, snap *api.Snapshot) (reconcile.Result, error) {
	st, now, pending := v.snapshotStatus(ctx, snap)
	if st.ReadyToUse {
		return reconcile.Result{}, nil // taken once; the pool keeps it
	}
	volKey := snap.Metadata.Tenant + "/" + snap.Spec.Volume
	o, ok := v.a.cache.volumes.Get(volKey)
	if !ok || o.GetMetadata().DeletionTimestamp != nil {
		return pending(api.SnapshotFailed, api.ReasonVolumeMissing, fmt.Sprintf("volume %s is not on %s (deleted?)", snap.Spec.Volume, v.a.cfg.Name))
	}
	vol := o.(*api.Volume)
	d, err := v.a.pools.forVolume(ctx, vol)
	switch {
	case errors.Is(err, errWaiting):
		return pending(api.SnapshotPending, api.ReasonWaiting, waitMessage(err))
	case err != nil:
		return pending(api.SnapshotFailed, api.ReasonSnapshotFailed, err.Error())
	}
	defer v.hold("pool:" + volKey)()
	stat, err := d.Stat(ctx, vol.Metadata.UID)
	if errors.Is(err, fs.ErrNotExist) {
		return pending(api.SnapshotPending, api.ReasonVolumeNotReady, fmt.Sprintf("volume %s has not been made in pool %s yet", snap.Spec.Volume, vol.Spec.Pool))
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	users, err := v.poolUsers(ctx, vol, d.Shared())
	if err != nil {
		return reconcile.Result{}, err
	}
	if vm := runningOf(users); vm != "" {
		return pending(api.SnapshotPending, api.ReasonVolumeInUse, fmt.Sprintf(
			"volume %s is in use by the running VM %s: stop the VM (spec.powerState: Stopped) and the snapshot is taken then; Hearth copies a volume only while nothing writes to it",
			snap.Spec.Volume, vm))
	}
	// Where it will be, recorded first: a snapshot taken by an agent that
	// then died is still found, and deleted, through its status.
	st.Pool, st.VolumeUID = vol.Spec.Pool, vol.Metadata.UID
	if err := v.writeSnapshotStatus(ctx, snap, *st); err != nil {
		return reconcile.Result{}, err
	}
	if err := d.Snapshot(ctx, vol.Metadata.UID, snap.Metadata.UID); err != nil {
		st.Phase = api.SnapshotFailed
		st.SetCondition(api.Condition{Type: condReady, Status: api.ConditionFalse, Reason: api.ReasonSnapshotFailed, Message: err.Error()}, now)
		_ = v.writeSnapshotStatus(ctx, snap, *st)
		return reconcile.Result{}, err
	}
	t := now.UTC().Truncate(time.Second)
	st.TakenAt = &t
	v.a.rec.Eventf(ctx, snap, api.EventNormal, "Taken", "took a snapshot of volume %s in %s pool %s", snap.Spec.Volume, d.Kind(), vol.Spec.Pool)
	st.Phase, st.ReadyToUse, st.Size = api.SnapshotReady, true, api.Bytes(stat.Size)
	st.SetCondition(api.Condition{Type: condReady, Status: api.ConditionTrue, Reason: api.ReasonTaken,
		Message: "the snapshot is in " + d.Kind() + " pool " + vol.Spec.Pool}, now)
	return reconcile.Result{}, v.writeSnapshotStatus(ctx, snap, *st)
}

// deletePoolSnapshot deletes a snapshot whose object is gone from its
// pool. While volumes are cloned from it, it stays: rbd refuses (busy),
// and for the other drivers, whose clones read their snapshot's file,
// the agent asks the API first. Either way the delete is tried again,
// with backoff, until the clones are gone.
func (v *volumeController) deletePoolSnapshot(ctx context.Context, key string, last *api.Snapshot) error {
	tenant, name := client.SplitKey(key)
	vol := &api.Volume{Metadata: api.ObjectMeta{Tenant: tenant, UID: last.Status.VolumeUID}, Spec: api.VolumeSpec{Pool: last.Status.Pool}}
	d, err := v.a.pools.forVolume(ctx, vol)
	if err != nil {
		return fmt.Errorf("deleting snapshot %s from pool %s: %w", key, last.Status.Pool, err)
	}
	if d.Kind() != "rbd" {
		objs, _, err := v.a.c.List(ctx, "Volume", tenant, client.ListOptions{})
		if err != nil {
			return fmt.Errorf("deleting snapshot %s: listing the volumes that may be cloned from it: %w", key, err)
		}
		for _, o := range objs {
			if cv := o.(*api.Volume); cv.Spec.Source.Snapshot == name && cv.Spec.Pool == last.Status.Pool {
				return fmt.Errorf("deleting snapshot %s from pool %s: volume %s is cloned from it; it goes once that volume is deleted", key, last.Status.Pool, cv.Metadata.Name)
			}
		}
	}
	if err := d.DeleteSnapshot(ctx, last.Status.VolumeUID, last.Metadata.UID); err != nil {
		return fmt.Errorf("deleting snapshot %s from pool %s: %w", key, last.Status.Pool, err)
	}
	v.mu.Lock()
	if v.poolSnaps[key] == last {
		delete(v.poolSnaps, key)
	}
	v.mu.Unlock()
	slog.Info("removed snapshot", "snapshot", key, "pool", last.Status.Pool)
	return nil
}

// poolSnapshotSource checks that a volume in a pool can be made from the
// snapshot it names, and returns the snapshot: one taken in the same pool.
func (v *volumeController) poolSnapshotSource(ctx context.Context, vol *api.Volume) (*api.Snapshot, error) {
	name := vol.Spec.Source.Snapshot
	snap, err := v.snapshot(ctx, vol.Metadata.Tenant, name)
	if err != nil {
		return nil, err
	}
	if !snap.Status.ReadyToUse {
		return nil, waiting("snapshot %s has not been taken yet", name)
	}
	switch {
	case snap.Status.Pool == "":
		return nil, fmt.Errorf("spec.source.snapshot: snapshot %s is of a local volume on host %s; a volume in pool %s cannot be made from it (leave spec.pool out to make a local volume there)",
			name, snap.Spec.Host, vol.Spec.Pool)
	case snap.Status.Pool != vol.Spec.Pool:
		return nil, fmt.Errorf("spec.source.snapshot: snapshot %s is in pool %s; a volume made from it must be in that pool too (spec.pool: %s)",
			name, snap.Status.Pool, snap.Status.Pool)
	}
	return snap, nil
}
