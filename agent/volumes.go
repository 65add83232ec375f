package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/reconcile"
	"hearth.dev/hearth/storage"
)

// Local volumes and snapshots are files on their host:
//
//	DATA-DIR/volumes/<volume uid>.qcow2 (or .raw)   a Volume
//	DATA-DIR/snapshots/<snapshot uid>.qcow2         a Snapshot: a flattened copy
//
// A volume starts blank, as a thin clone of a cached image, or as a thin
// clone of a snapshot of this host; so a snapshot's file stays as long as
// a volume is cloned from it, even after the Snapshot is deleted, as does
// an image's. Attaching a volume is listing it in a VM's spec.disks; the
// VM's agent applies a changed disk list by restarting the VM.

// volumeController converges the Volumes and Snapshots placed on this
// host: it makes and grows volume files, takes snapshots, reports their
// status, and removes the files of objects that are gone. It reads the
// agent's cache and owns the status of the volumes and snapshots placed
// here.
type volumeController struct {
	a       *Agent
	volCtl  *reconcile.Controller
	snapCtl *reconcile.Controller

	mu        sync.Mutex
	volFiles  map[string]string        // volume key → file, for volumes seen here
	poolVols  map[string]*api.Volume   // volume key → the last seen of a volume in a pool
	snapFiles map[string]string        // snapshot key → file
	poolSnaps map[string]*api.Snapshot // snapshot key → the last seen of a snapshot in a pool
	busy      map[string]*sync.Mutex   // volume file → held while qemu-img works on it
}

func newVolumeController(a *Agent) *volumeController {
	v := &volumeController{a: a, volFiles: map[string]string{}, poolVols: map[string]*api.Volume{},
		snapFiles: map[string]string{}, poolSnaps: map[string]*api.Snapshot{}, busy: map[string]*sync.Mutex{}}
	v.volCtl = &reconcile.Controller{Name: "volumes", Reconciler: reconcile.ReconcilerFunc(v.reconcileVolume), Workers: 4,
		Resync: a.cfg.Resync, List: func(context.Context) ([]string, error) { return a.cache.volumes.Keys(), nil }}
	v.snapCtl = &reconcile.Controller{Name: "snapshots", Reconciler: reconcile.ReconcilerFunc(v.reconcileSnapshot), Workers: 2,
		Resync: a.cfg.Resync, List: func(context.Context) ([]string, error) { return a.cache.snapshots.Keys(), nil }}
	return v
}

// volumeChanged hears of a change to a volume placed here, and tells the
// snapshots of it not yet taken when it came, went or its phase changed
// (its file was made).
func (v *volumeController) volumeChanged(ch client.Change) {
	if ch.New != nil {
		v.mu.Lock()
		if vol := ch.New.(*api.Volume); vol.Spec.Pool != "" {
			v.poolVols[ch.Key] = vol
		} else {
			v.volFiles[ch.Key] = v.a.volumePath(vol)
		}
		v.mu.Unlock()
	}
	ownChange(ch, v.volCtl.EnqueueNow)
	if ch.StatusOnly() && ch.Old.CommonStatus().Phase == ch.New.CommonStatus().Phase {
		return
	}
	tenant, name := client.SplitKey(ch.Key)
	for _, o := range v.a.cache.snapshots.List() {
		if s := o.(*api.Snapshot); s.Metadata.Tenant == tenant && s.Spec.Volume == name && !s.Status.ReadyToUse {
			v.snapCtl.EnqueueNow(client.Key(s))
		}
	}
}

// snapshotChanged hears of a change to a snapshot placed here, and tells
// the volumes made from it when it came, went or was taken.
func (v *volumeController) snapshotChanged(ch client.Change) {
	if ch.New != nil {
		v.mu.Lock()
		v.snapFiles[ch.Key] = v.a.snapshotPath(ch.New.GetMetadata().UID)
		v.mu.Unlock()
	}
	v.notePoolSnapshot(ch)
	ownChange(ch, v.snapCtl.EnqueueNow)
	if ch.StatusOnly() && ch.Old.(*api.Snapshot).Status.ReadyToUse == ch.New.(*api.Snapshot).Status.ReadyToUse {
		return
	}
	tenant, name := client.SplitKey(ch.Key)
	for _, o := range v.a.cache.volumes.List() {
		if vol := o.(*api.Volume); vol.Metadata.Tenant == tenant && vol.Spec.Source.Snapshot == name {
			v.volCtl.EnqueueNow(client.Key(vol))
		}
	}
}

// vmChanged tells the volumes a VM lists, before and after the change,
// when it attaches, detaches, starts or stops: that changes their status,
// and may let a snapshot be taken or a resize be applied.
func (v *volumeController) vmChanged(ch client.Change) {
	if ch.StatusOnly() && ch.Old.CommonStatus().Phase == ch.New.CommonStatus().Phase {
		return
	}
	keys := map[string]bool{}
	for _, o := range []api.Object{ch.Old, ch.New} {
		if o == nil {
			continue
		}
		vm := o.(*api.VirtualMachine)
		for _, d := range vm.Spec.Disks {
			if d.Volume != "" {
				keys[vm.Metadata.Tenant+"/"+d.Volume] = true
			}
		}
	}
	for k := range keys {
		v.volCtl.EnqueueNow(k)
		v.enqueueSnapshotsOf(k)
	}
}

// poolChanged tries the volumes in a pool again when the pool came, went
// or changed.
func (v *volumeController) poolChanged(ch client.Change) {
	if ch.StatusOnly() {
		return
	}
	for _, o := range v.a.cache.volumes.List() {
		if o.(*api.Volume).Spec.Pool == ch.Key {
			v.volCtl.EnqueueNow(client.Key(o))
		}
	}
}

// imageChanged tries the volumes waiting for an image again when what it
// offers changed (it was created, or its upload arrived).
func (v *volumeController) imageChanged(ch client.Change) {
	if !imageOffers(ch) {
		return
	}
	for _, o := range v.a.cache.volumes.List() {
		vol := o.(*api.Volume)
		if imageNamedBy(ch.Key, vol.Metadata.Tenant, vol.Spec.Source.Image) &&
			vol.Status.Phase != api.VolumeAvailable && vol.Status.Phase != api.VolumeInUse {
			v.volCtl.EnqueueNow(client.Key(vol))
		}
	}
}

// enqueueSnapshotsOf reconciles the snapshots not yet taken of the volume
// at key.
func (v *volumeController) enqueueSnapshotsOf(key string) {
	tenant, name := client.SplitKey(key)
	for _, o := range v.a.cache.snapshots.List() {
		if s := o.(*api.Snapshot); s.Metadata.Tenant == tenant && s.Spec.Volume == name && !s.Status.ReadyToUse {
			v.snapCtl.EnqueueNow(client.Key(s))
		}
	}
}

func (v *volumeController) run(ctx context.Context) error {
	for _, d := range []string{"volumes", "snapshots"} {
		if err := os.MkdirAll(filepath.Join(v.a.cfg.DataDir, d), 0o700); err != nil {
			return err
		}
	}
	if v.a.cache.waitSynced(ctx) != nil {
		return nil
	}
	go every(ctx, v.a.cfg.Resync, v.sweep)
	errc := make(chan error, 1)
	go func() { errc <- v.snapCtl.Run(ctx) }()
	err := v.volCtl.Run(ctx)
	if serr := <-errc; err == nil {
		err = serr
	}
	return err
}

// hold keeps the other controller off a volume's file while qemu-img
// works on it: a resize and a snapshot of the same volume, both set off by
// the VM that let go of it, would otherwise trip over each other's locks.
func (v *volumeController) hold(path string) (release func()) {
	v.mu.Lock()
	m := v.busy[path]
	if m == nil {
		m = &sync.Mutex{}
		v.busy[path] = m
	}
	v.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// volumePath is where a Volume's file is on its host.
func (a *Agent) volumePath(vol *api.Volume) string {
	return filepath.Join(a.cfg.DataDir, "volumes", vol.Metadata.UID+"."+volumeFormat(vol))
}

func volumeFormat(vol *api.Volume) string {
	if vol.Spec.Format == storage.FormatRaw {
		return storage.FormatRaw
	}
	return storage.FormatQCOW2
}

// snapshotPath is where a Snapshot's file is on its host.
func (a *Agent) snapshotPath(uid string) string {
	return filepath.Join(a.cfg.DataDir, "snapshots", uid+".qcow2")
}

// The conditions of a volume here: Ready says whether the volume's file
// is there, and while it is not, what it waits for (an image download
// with its progress, an upload, a snapshot) or why making it failed;
// Resized is False while a larger spec.size waits for the running VM
// that holds the volume to restart.
const (
	condReady   = api.ConditionReady
	condResized = api.ConditionResized
)

// reconcileVolume makes one volume's file match its object.
func (v *volumeController) reconcileVolume(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := v.a.cache.volumes.Get(key)
	gone := !ok || obj.GetMetadata().DeletionTimestamp != nil || obj.(*api.Volume).Spec.Host != v.a.cfg.Name
	v.mu.Lock()
	last := v.poolVols[key]
	v.mu.Unlock()
	if gone && last != nil {
		var cur *api.Volume
		if ok && obj.(*api.Volume).Spec.Host == v.a.cfg.Name {
			cur = api.DeepCopy(obj).(*api.Volume)
		}
		return reconcile.Result{}, v.poolVolumeGone(ctx, key, cur, last)
	}
	if ok && !gone && obj.(*api.Volume).Spec.Pool != "" {
		return v.reconcilePoolVolume(ctx, api.DeepCopy(obj).(*api.Volume))
	}
	if gone {
		v.mu.Lock()
		path := v.volFiles[key]
		delete(v.volFiles, key)
		delete(v.busy, path)
		v.mu.Unlock()
		if path == "" {
			return reconcile.Result{}, nil
		}
		// A VM still running with it keeps its open file until it stops;
		// the data is gone for everyone else, as the Volume is.
		if err := storage.DeleteVolume(path); err != nil {
			return reconcile.Result{}, err
		}
		slog.Info("removed volume", "volume", key, "file", path)
		return reconcile.Result{}, nil
	}
	vol := api.DeepCopy(obj).(*api.Volume)
	path := v.a.volumePath(vol)
	defer v.hold(path)()
	st := vol.Status
	st.Conditions = slices.Clone(st.Conditions)
	st.ObservedGeneration = vol.Metadata.Generation
	markBound(vol, &st.CommonStatus, time.Now())
	st.Path = path
	users := v.users(vol)
	st.AttachedTo = ""
	if len(users) > 0 {
		st.AttachedTo = users[0]
	}
	now := time.Now()

	info, err := storage.VolumeInfo(ctx, path)
	if errors.Is(err, os.ErrNotExist) {
		err = v.create(ctx, vol, path, &st)
		switch {
		case missingKind(err) == "Image":
			// Not a failure of the volume: it waits for the image, and
			// hears when it is made (the cache's wiring).
			st.Phase = api.VolumePending
			st.SetCondition(api.Condition{Type: condReady, Status: api.ConditionFalse, Reason: api.ReasonImageNotFound, Message: err.Error()}, now)
			return reconcile.Result{}, v.writeVolumeStatus(ctx, vol, st)
		case errors.Is(err, errWaiting):
			st.Phase = api.VolumePending
			st.SetCondition(api.Condition{Type: condReady, Status: api.ConditionFalse, Reason: api.ReasonWaiting, Message: waitMessage(err)}, now)
			return reconcile.Result{}, v.writeVolumeStatus(ctx, vol, st)
		case err != nil:
			st.Phase = api.VolumeFailed
			st.SetCondition(api.Condition{Type: condReady, Status: api.ConditionFalse, Reason: api.ReasonCreateFailed, Message: err.Error()}, now)
			if werr := v.writeVolumeStatus(ctx, vol, st); werr != nil {
				slog.Warn("writing volume status", "volume", key, "err", werr)
			}
			return reconcile.Result{}, err
		}
		// VMs waiting for the volume hear of it when its status says
		// it is made (the cache's wiring).
		v.a.rec.Eventf(ctx, vol, api.EventNormal, "Created", "made %s", describeVolume(vol))
		if info, err = storage.VolumeInfo(ctx, path); err != nil {
			return reconcile.Result{}, err
		}
	} else if err != nil {
		return reconcile.Result{}, err
	}

	grown, err := v.grow(ctx, vol, &st, now, info.VirtualSize,
		func() string { vm, _ := v.runningUser(ctx, path); return vm },
		func(want int64) error { return storage.ResizeVolume(ctx, path, want) })
	if err != nil {
		return reconcile.Result{}, err
	}
	if grown {
		if info, err = storage.VolumeInfo(ctx, path); err != nil {
			return reconcile.Result{}, err
		}
	}
	if int64(vol.Spec.Size) <= info.VirtualSize {
		removeCondition(&st.CommonStatus, condResized)
	}
	st.Size, st.ActualSize = api.Bytes(info.VirtualSize), api.Bytes(info.ActualSize)
	st.Phase = api.VolumeAvailable
	if st.AttachedTo != "" {
		st.Phase = api.VolumeInUse
	}
	msg := "the volume's file is on " + v.a.cfg.Name
	if len(users) > 1 {
		msg += fmt.Sprintf("; VMs %s all list it, but a volume serves one VM at a time", strings.Join(users, ", "))
	}
	st.SetCondition(api.Condition{Type: condReady, Status: api.ConditionTrue, Reason: api.ReasonCreated, Message: msg}, now)
	return reconcile.Result{}, v.writeVolumeStatus(ctx, vol, st)
}

// sourceImage looks up the volume's spec.source.image and makes sure it
// is on this host, reporting download progress in st as it goes. It
// returns the Image and its local file. Callers hold a.imgs.mu (read)
// while they use the file.
func (v *volumeController) sourceImage(ctx context.Context, vol *api.Volume, st *api.VolumeStatus) (*api.Image, string, error) {
	name := vol.Spec.Source.Image
	img, err := v.a.image(ctx, vol.Metadata.Tenant, name)
	if missingKind(err) != "" {
		return nil, "", fmt.Errorf("spec.source.image: %w", err)
	}
	if err != nil {
		return nil, "", err
	}
	base, err := v.a.ensureImage(ctx, img, func(pct int) {
		msg := "downloading image " + name
		if pct >= 0 {
			msg += fmt.Sprintf(": %d%%", pct)
		}
		st.Phase = api.VolumePending
		st.SetCondition(api.Condition{Type: condReady, Status: api.ConditionFalse, Reason: api.ReasonDownloadingImage, Message: msg}, time.Now())
		if err := v.writeVolumeStatus(ctx, vol, *st); err != nil {
			slog.Warn("reporting download progress", "volume", client.Key(vol), "err", err)
		}
	})
	if err != nil {
		return nil, "", fmt.Errorf("image %s: %w", name, err)
	}
	return img, base, nil
}

// create makes a volume's file from its source. It reports download
// progress of the volume's image in st as it goes.
func (v *volumeController) create(ctx context.Context, vol *api.Volume, path string, st *api.VolumeStatus) error {
	size, format := int64(vol.Spec.Size), volumeFormat(vol)
	src := vol.Spec.Source
	switch {
	case src.Image != "":
		v.a.imgs.mu.RLock()
		defer v.a.imgs.mu.RUnlock()
		_, base, err := v.sourceImage(ctx, vol, st)
		if err != nil {
			return err
		}
		return storage.CreateVolume(ctx, path, format, size, base)
	case src.Snapshot != "":
		snap, err := v.snapshot(ctx, vol.Metadata.Tenant, src.Snapshot)
		if err != nil {
			return err
		}
		if snap.Status.Pool != "" {
			return fmt.Errorf("spec.source.snapshot: snapshot %s is in storage pool %s: a volume made from it must name that pool (spec.pool: %s)", src.Snapshot, snap.Status.Pool, snap.Status.Pool)
		}
		if snap.Spec.Host != v.a.cfg.Name {
			return fmt.Errorf("snapshot %s lives on host %s, not %s: a volume made from it must be on that host", src.Snapshot, snap.Spec.Host, v.a.cfg.Name)
		}
		if !snap.Status.ReadyToUse {
			return waiting("snapshot %s has not been taken yet", src.Snapshot)
		}
		return storage.CreateVolume(ctx, path, format, size, v.a.snapshotPath(snap.Metadata.UID))
	}
	return storage.CreateVolume(ctx, path, format, size, "")
}

// snapshot finds a Snapshot of the tenant, in the cache when it is on this
// host, else from the API.
func (v *volumeController) snapshot(ctx context.Context, tenant, name string) (*api.Snapshot, error) {
	if o, ok := v.a.cache.snapshots.Get(tenant + "/" + name); ok {
		return o.(*api.Snapshot), nil
	}
	o, err := v.a.c.Get(ctx, "Snapshot", tenant, name)
	if api.IsNotFound(err) {
		return nil, waiting("snapshot %s does not exist in tenant %s", name, tenant)
	}
	if err != nil {
		return nil, err
	}
	return o.(*api.Snapshot), nil
}

// users returns the names of the VMs on this host whose disks list the
// volume, sorted.
func (v *volumeController) users(vol *api.Volume) []string {
	var out []string
	for _, o := range v.a.cache.vms.List() {
		vm := o.(*api.VirtualMachine)
		if vm.Metadata.Tenant != vol.Metadata.Tenant || vm.Metadata.DeletionTimestamp != nil {
			continue
		}
		if slices.ContainsFunc(vm.Spec.Disks, func(d api.VMDisk) bool { return d.Volume == vol.Metadata.Name }) {
			out = append(out, vm.Metadata.Name)
		}
	}
	slices.Sort(out)
	return out
}

// runningUser finds a running VM on this host that was started with the
// file at path as a disk: QEMU holds it, so qemu-img may not change or
// copy it. The started spec, not the VM's current one, says what the
// process holds.
// grow makes a volume of size bytes as large as its spec asks, unless a
// VM runs on it (running names it, or is ""): then the Resized condition
// says it grows at the VM's next start. It reports whether it resized, so
// the caller reads the volume's size again.
func (v *volumeController) grow(ctx context.Context, vol *api.Volume, st *api.VolumeStatus, now time.Time, size int64,
	running func() string, resize func(want int64) error) (bool, error) {
	want := int64(vol.Spec.Size)
	if want <= size {
		return false, nil
	}
	if vm := running(); vm != "" {
		st.SetCondition(api.Condition{Type: condResized, Status: api.ConditionFalse, Reason: api.ReasonPendingRestart,
			Message: fmt.Sprintf("grows from %s to %s when VM %s next starts: the disk of a running VM grows when it restarts", api.Bytes(size), vol.Spec.Size, vm)}, now)
		return false, nil
	}
	if err := resize(want); err != nil {
		return false, err
	}
	v.a.rec.Eventf(ctx, vol, api.EventNormal, "Resized", "grew from %s to %s", api.Bytes(size), vol.Spec.Size)
	return true, nil
}

func (v *volumeController) runningUser(ctx context.Context, path string) (string, bool) {
	for _, o := range v.a.cache.vms.List() {
		vm := o.(*api.VirtualMachine)
		dir := v.a.vmPath(vm.Metadata.UID)
		s, ok := v.a.specs.read(dir)
		if !ok || !slices.ContainsFunc(s.Disks, func(d compute.Disk) bool { return d.Path == path }) {
			continue
		}
		if _, running, err := v.a.cfg.Driver.Lookup(ctx, vm.Metadata.UID, dir); err != nil || running {
			return vm.Metadata.Name, true
		}
	}
	return "", false
}

// reconcileSnapshot takes one snapshot, once, and reports it.
func (v *volumeController) reconcileSnapshot(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := v.a.cache.snapshots.Get(key)
	if !ok || obj.GetMetadata().DeletionTimestamp != nil || obj.(*api.Snapshot).Spec.Host != v.a.cfg.Name {
		if handled, err := v.poolSnapshotGone(ctx, key); handled {
			return reconcile.Result{}, err
		}
		v.mu.Lock()
		path := v.snapFiles[key]
		delete(v.snapFiles, key)
		v.mu.Unlock()
		if path != "" {
			v.removeSnapshotFile(ctx, path)
		}
		return reconcile.Result{}, nil
	}
	snap := api.DeepCopy(obj).(*api.Snapshot)
	if v.isPoolSnapshot(snap) {
		return v.reconcilePoolSnapshot(ctx, snap)
	}
	path := v.a.snapshotPath(snap.Metadata.UID)
	st, now, pending := v.snapshotStatus(ctx, snap)

	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if st.ReadyToUse {
			return pending(api.SnapshotFailed, api.ReasonFileMissing, "the snapshot's file "+path+" is gone from "+v.a.cfg.Name)
		}
		o, ok := v.a.cache.volumes.Get(snap.Metadata.Tenant + "/" + snap.Spec.Volume)
		if !ok {
			return pending(api.SnapshotFailed, api.ReasonVolumeMissing, fmt.Sprintf("volume %s is not on %s (deleted?)", snap.Spec.Volume, v.a.cfg.Name))
		}
		volPath := v.a.volumePath(o.(*api.Volume))
		if _, err := os.Stat(volPath); err != nil {
			return pending(api.SnapshotPending, api.ReasonVolumeNotReady, fmt.Sprintf("volume %s has not been made yet", snap.Spec.Volume))
		}
		defer v.hold(volPath)()
		if vm, running := v.runningUser(ctx, volPath); running {
			return pending(api.SnapshotPending, api.ReasonVolumeInUse, fmt.Sprintf(
				"volume %s is in use by the running VM %s: stop the VM (spec.powerState: Stopped) and the snapshot is taken then; Hearth copies a volume only while nothing writes to it",
				snap.Spec.Volume, vm))
		}
		if err := storage.Snapshot(ctx, volPath, path); err != nil {
			st.Phase = api.SnapshotFailed
			st.SetCondition(api.Condition{Type: condReady, Status: api.ConditionFalse, Reason: api.ReasonSnapshotFailed, Message: err.Error()}, now)
			_ = v.writeSnapshotStatus(ctx, snap, *st)
			return reconcile.Result{}, err
		}
		t := now.UTC().Truncate(time.Second)
		st.TakenAt = &t
		v.a.rec.Eventf(ctx, snap, api.EventNormal, "Taken", "copied volume %s", snap.Spec.Volume)
	} else if err != nil {
		return reconcile.Result{}, err
	}
	info, err := storage.VolumeInfo(ctx, path)
	if err != nil {
		return reconcile.Result{}, err
	}
	if st.TakenAt == nil {
		if fi, err := os.Stat(path); err == nil {
			t := fi.ModTime().UTC().Truncate(time.Second)
			st.TakenAt = &t
		}
	}
	st.Phase, st.ReadyToUse, st.Size = api.SnapshotReady, true, api.Bytes(info.VirtualSize)
	st.SetCondition(api.Condition{Type: condReady, Status: api.ConditionTrue, Reason: api.ReasonTaken,
		Message: "the snapshot's file is on " + v.a.cfg.Name}, now)
	return reconcile.Result{}, v.writeSnapshotStatus(ctx, snap, *st)
}

// removeSnapshotFile deletes a snapshot's file unless a volume here is
// still cloned from it; the sweep deletes it once none is.
func (v *volumeController) removeSnapshotFile(ctx context.Context, path string) {
	backings, err := v.a.backingFiles(ctx)
	if err != nil || slices.Contains(backings, path) {
		return
	}
	if err := storage.DeleteVolume(path); err != nil {
		slog.Warn("removing snapshot", "file", path, "err", err)
		return
	}
	slog.Info("removed snapshot", "file", path)
}

// sweepStale is how old a hidden file (one being made) must be before the
// sweep takes it for the leftover of a crash.
const sweepStale = time.Hour

// sweep removes the files of volumes and snapshots the API no longer has
// (deleted while the agent was down), snapshot files no volume needs any
// more, and cached images nothing needs. It runs every resync.
func (v *volumeController) sweep(ctx context.Context) {
	liveVols, liveSnaps := map[string]bool{}, map[string]bool{}
	for _, o := range v.a.cache.volumes.List() {
		if o.GetMetadata().DeletionTimestamp == nil {
			liveVols[o.GetMetadata().UID] = true
		}
	}
	for _, o := range v.a.cache.snapshots.List() {
		if o.GetMetadata().DeletionTimestamp == nil {
			liveSnaps[o.GetMetadata().UID] = true
		}
	}
	for _, f := range v.orphans("volumes", liveVols) {
		if err := storage.DeleteVolume(f); err != nil {
			slog.Warn("removing orphaned volume", "file", f, "err", err)
		} else {
			slog.Info("removed orphaned volume", "file", f)
		}
	}
	if snaps := v.orphans("snapshots", liveSnaps); len(snaps) > 0 {
		for _, f := range snaps {
			v.removeSnapshotFile(ctx, f)
		}
	}
	v.a.collectImages(ctx)
}

// orphans lists the files in DATA-DIR/dir whose uid is not live, and
// hidden files left by a crash.
func (v *volumeController) orphans(dir string, live map[string]bool) []string {
	entries, err := os.ReadDir(filepath.Join(v.a.cfg.DataDir, dir))
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			if fi, err := e.Info(); err != nil || time.Since(fi.ModTime()) < sweepStale {
				continue
			}
		} else if uid, _, _ := strings.Cut(name, "."); live[uid] {
			continue
		}
		out = append(out, filepath.Join(v.a.cfg.DataDir, dir, name))
	}
	return out
}

// writeVolumeStatus makes the volume's status st (client.WriteStatus):
// the agent owns the status of a volume placed on its host, so the whole
// status is its, and fields that emptied (attachedTo after a detach) are
// emptied in the API too. vol becomes what was written. A Ready
// condition that turns False with a problem it did not have before is
// told in a Warning event, once, not at each retry.
func (v *volumeController) writeVolumeStatus(ctx context.Context, vol *api.Volume, st api.VolumeStatus) error {
	before := vol.Status.Condition(condReady)
	out, wrote, err := client.WriteStatus(ctx, v.a.c, v.a.cache.volumes, vol, func(cur *api.Volume) { cur.Status = st })
	switch {
	case api.IsNotFound(err):
		return nil
	case err != nil:
		return err
	}
	*vol = *out
	if c := vol.Status.Condition(condReady); wrote && c != nil && c.Status == api.ConditionFalse &&
		(c.Reason == api.ReasonImageNotFound || c.Reason == api.ReasonCreateFailed) &&
		(before == nil || before.Reason != c.Reason || before.Message != c.Message) {
		v.a.rec.Eventf(ctx, vol, api.EventWarning, c.Reason, "%s", c.Message)
	}
	return nil
}

// writeSnapshotStatus is writeVolumeStatus for a snapshot.
func (v *volumeController) writeSnapshotStatus(ctx context.Context, snap *api.Snapshot, st api.SnapshotStatus) error {
	out, _, err := client.WriteStatus(ctx, v.a.c, v.a.cache.snapshots, snap, func(cur *api.Snapshot) { cur.Status = st })
	switch {
	case api.IsNotFound(err):
		return nil
	case err != nil:
		return err
	}
	*snap = *out
	return nil
}

// markBound turns the Bound condition the volume-placement controller
// left while the volume waited for a host (False, with why) True, saying
// where it went and what that host does with it: a local volume's file
// is there; a volume in a shared pool lives in the pool, which every host
// reaches, and this host only makes, grows and reports it. A volume
// bound at once has no Bound condition, and gets none.
func markBound(vol *api.Volume, st *api.CommonStatus, now time.Time) {
	if st.Condition(api.ConditionBound) == nil {
		return
	}
	msg := fmt.Sprintf("placed on host %s, which holds its file", vol.Spec.Host)
	if vol.Spec.Pool != "" {
		msg = fmt.Sprintf("in pool %s, which every host reaches; placed on host %s, which makes, grows and reports it", vol.Spec.Pool, vol.Spec.Host)
	}
	st.SetCondition(api.Condition{Type: api.ConditionBound, Status: api.ConditionTrue, Reason: api.ReasonBound, Message: msg,
		ObservedGeneration: vol.Metadata.Generation}, now)
}

func removeCondition(st *api.CommonStatus, typ string) {
	st.Conditions = slices.DeleteFunc(st.Conditions, func(c api.Condition) bool { return c.Type == typ })
}

func describeVolume(vol *api.Volume) string {
	s := "a blank " + volumeFormat(vol) + " volume of " + vol.Spec.Size.String()
	switch src := vol.Spec.Source; {
	case src.Image != "":
		s = "a " + volumeFormat(vol) + " clone of image " + src.Image
	case src.Snapshot != "":
		s = "a " + volumeFormat(vol) + " clone of snapshot " + src.Snapshot
	}
	return s
}

// snapshotStatus is the status one reconcile of snap writes, as observed
// now, and pending, which writes it with snap not (yet) usable and why.
func (v *volumeController) snapshotStatus(ctx context.Context, snap *api.Snapshot) (st *api.SnapshotStatus, now time.Time, pending func(phase, reason, msg string) (reconcile.Result, error)) {
	st = &api.SnapshotStatus{}
	*st = snap.Status
	st.Conditions = slices.Clone(st.Conditions)
	st.ObservedGeneration = snap.Metadata.Generation
	now = time.Now()
	pending = func(phase, reason, msg string) (reconcile.Result, error) {
		st.Phase = phase
		st.SetCondition(api.Condition{Type: condReady, Status: api.ConditionFalse, Reason: reason, Message: msg}, now)
		return reconcile.Result{}, v.writeSnapshotStatus(ctx, snap, *st)
	}
	return st, now, pending
}
