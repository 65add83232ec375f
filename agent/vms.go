package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"hearth.dev/hearth/agent/console"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/atomicfile"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/reconcile"
)

// startedMarker is written when the agent starts a VM and removed when it
// stops it on purpose. A VM whose process is gone while the marker exists
// crashed (or was killed), and its restart policy applies.
const startedMarker = "started"

// specFile records the compute.Spec a VM was started with, so a change to
// the VirtualMachine that needs a restart is noticed, even after the agent
// itself restarted.
const specFile = "spec.json"

// startedSpec is what specFile holds: the compute.Spec (its fields at the
// top level, as older agents wrote it) and the disks as the VirtualMachine
// listed them, since a resolved path does not tell which image a disk was
// cloned from or how big it was asked to be.
type startedSpec struct {
	compute.Spec
	VMDisks []api.VMDisk `json:"vmDisks,omitempty"`
	// RestartRequested is the VM's spec.restartRequested at the start: a
	// different one asks for a restart.
	RestartRequested *time.Time `json:"restartRequested,omitempty"`
}

// vmController converges the VMs placed on this host.
type vmController struct {
	a   *Agent
	inf *client.Informer
	ctl *reconcile.Controller

	mu       sync.Mutex
	uids     map[string]string // key → uid of VMs seen on this host
	watching map[string]bool   // uids with a goroutine waiting for their process

	// dirMu keeps capConsoleLogs out of a VM directory teardown is
	// removing, so no console.log.1 is made in one that goes.
	dirMu sync.Mutex
	// logErrs is the last error capping each VM's console log, so a
	// lasting one is logged once (capConsoleLogs only).
	logErrs map[string]string
}

// consoleLogCheck is how often every VM's console log is measured against
// Config.ConsoleLogMax: a stat per VM.
const consoleLogCheck = 2 * time.Second

func newVMController(a *Agent) *vmController {
	v := &vmController{a: a, uids: map[string]string{}, watching: map[string]bool{}, logErrs: map[string]string{}}
	v.inf = client.NewInformer(a.c, "VirtualMachine", "", client.ListOptions{AllTenants: true, FieldSelector: "spec.host=" + a.cfg.Name})
	v.ctl = &reconcile.Controller{Name: "vms", Reconciler: v, Workers: 16, Resync: a.cfg.Resync,
		List: func(context.Context) ([]string, error) { return v.inf.Keys(), nil }}
	v.inf.OnChange(func(key string, obj api.Object) {
		if obj != nil {
			v.mu.Lock()
			v.uids[key] = obj.GetMetadata().UID
			v.mu.Unlock()
		}
		v.ctl.Enqueue(key)
	})
	return v
}

func (v *vmController) run(ctx context.Context) error {
	go v.inf.Run(ctx)
	if err := v.inf.WaitSynced(ctx); err != nil {
		return nil
	}
	go every(ctx, v.a.cfg.Resync, v.collectOrphans)
	go every(ctx, consoleLogCheck, v.capConsoleLogs)
	return v.ctl.Run(ctx)
}

func (v *vmController) dir(uid string) string { return filepath.Join(v.a.cfg.DataDir, "vms", uid) }

// Reconcile makes one VM's process match its object.
func (v *vmController) Reconcile(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := v.inf.Get(key)
	if !ok || obj.GetMetadata().DeletionTimestamp != nil || obj.(*api.VirtualMachine).Spec.Host != v.a.cfg.Name {
		v.mu.Lock()
		uid := v.uids[key]
		delete(v.uids, key)
		v.mu.Unlock()
		if uid != "" {
			return reconcile.Result{}, v.teardown(ctx, uid)
		}
		return reconcile.Result{}, nil
	}
	vm := api.DeepCopy(obj).(*api.VirtualMachine)
	uid, dir := vm.Metadata.UID, v.dir(vm.Metadata.UID)
	drv := v.a.cfg.Driver
	info, running, err := drv.Lookup(ctx, uid, dir)
	if err != nil {
		return reconcile.Result{}, err
	}
	st := vm.Status
	// st is changed below and compared with vm.Status: it must not share
	// the conditions' backing array.
	st.Conditions = append([]api.Condition(nil), vm.Status.Conditions...)
	st.Host = v.a.cfg.Name
	st.ObservedGeneration = vm.Metadata.Generation

	switch vm.Spec.PowerState {
	case api.PowerStopped:
		if running {
			if err := drv.Shutdown(ctx, uid, dir, v.a.cfg.ShutdownTimeout); err != nil {
				return reconcile.Result{}, err
			}
			v.a.rec.Eventf(ctx, vm, api.EventNormal, "Stopped", "the VM was shut down")
		}
		os.Remove(filepath.Join(dir, startedMarker))
		st.Phase, st.PID, st.StartedAt, st.FirstOutputAt = api.VMStopped, 0, nil, nil
		return reconcile.Result{}, v.writeStatus(ctx, vm, st)
	}

	if !running {
		if _, err := os.Stat(filepath.Join(dir, startedMarker)); err == nil {
			// The process went away without us stopping it.
			if vm.Spec.RestartPolicy == api.RestartNever {
				os.Remove(filepath.Join(dir, startedMarker))
				v.a.rec.Eventf(ctx, vm, api.EventWarning, "Crashed", "QEMU exited unexpectedly; not restarting (restart policy Never)")
				st.Phase, st.PID = api.VMFailed, 0
				st.SetCondition(api.Condition{Type: "Running", Status: api.ConditionFalse, Reason: "Crashed", Message: "QEMU exited unexpectedly"}, time.Now())
				return reconcile.Result{}, v.writeStatus(ctx, vm, st)
			}
			st.RestartCount++
			v.a.rec.Eventf(ctx, vm, api.EventWarning, "Restarted", "QEMU exited unexpectedly; restarting it (restart policy %s, restart %d)", vm.Spec.RestartPolicy, st.RestartCount)
		}
		// Say at once that this host has taken the VM up: downloads and
		// disk clones can take a while, and the moment is the end of the
		// control plane's share of create→Running.
		if c := st.Condition("Running"); c == nil || c.Reason != "Preparing" {
			st.Phase = api.VMStarting
			st.SetCondition(api.Condition{Type: "Running", Status: api.ConditionFalse, Reason: "Preparing",
				Message: "preparing disks, boot files and the cloud-init seed"}, time.Now())
			if err := v.writeStatus(ctx, vm, st); err != nil {
				return reconcile.Result{}, err
			}
			st.Conditions = append([]api.Condition(nil), st.Conditions...)
		}
		spec, err := v.a.prepare(ctx, vm, dir)
		if err != nil {
			st.Phase = api.VMFailed
			st.SetCondition(api.Condition{Type: "Running", Status: api.ConditionFalse, Reason: "PrepareFailed", Message: err.Error()}, time.Now())
			if werr := v.writeStatus(ctx, vm, st); werr != nil {
				slog.Warn("writing VM status", "vm", key, "err", werr)
			}
			return reconcile.Result{}, err
		}
		// The moment before the launch: a guest may write to its console
		// before Start returns (QEMU's control socket answers after the
		// guest has begun), and firstOutput counts output from here.
		launched := time.Now().UTC()
		info, err = drv.Start(ctx, spec)
		if err != nil {
			st.Phase = api.VMFailed
			st.SetCondition(api.Condition{Type: "Running", Status: api.ConditionFalse, Reason: "StartFailed", Message: err.Error()}, time.Now())
			_ = v.writeStatus(ctx, vm, st)
			v.a.rec.Eventf(ctx, vm, api.EventWarning, "StartFailed", "%v", err)
			return reconcile.Result{}, err
		}
		if err := writeJSONFile(filepath.Join(dir, specFile), startedSpec{Spec: spec, VMDisks: vm.Spec.Disks, RestartRequested: vm.Spec.RestartRequested}); err != nil {
			return reconcile.Result{}, err
		}
		if err := os.WriteFile(filepath.Join(dir, startedMarker), nil, 0o600); err != nil {
			return reconcile.Result{}, err
		}
		v.a.rec.Eventf(ctx, vm, api.EventNormal, "Started", "QEMU started (pid %d, %s)", info.PID, info.Accelerator)
		// This agent's clock is more precise than the process start
		// time the driver derives from /proc (whole-second boot time);
		// adoption later keeps what is recorded here.
		st.StartedAt, st.FirstOutputAt = &launched, nil
		running = true
	} else if why := restartReason(vm, dir); why != "" {
		// Asked for, or the VM's hardware changed: a cold restart.
		v.a.rec.Eventf(ctx, vm, api.EventNormal, "Restarting", "%s", why)
		os.Remove(filepath.Join(dir, startedMarker))
		if err := drv.Shutdown(ctx, uid, dir, v.a.cfg.ShutdownTimeout); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{RequeueAfter: time.Millisecond}, nil
	}
	v.watch(key, uid, dir)

	switch {
	case vm.Spec.PowerState == api.PowerPaused && info.State == compute.Running:
		if err := drv.Pause(ctx, uid, dir); err != nil {
			return reconcile.Result{}, err
		}
		info.State = compute.Paused
	case vm.Spec.PowerState == api.PowerRunning && info.State == compute.Paused:
		if err := drv.Resume(ctx, uid, dir); err != nil {
			return reconcile.Result{}, err
		}
		info.State = compute.Running
	}
	st.PID, st.Accelerator = info.PID, info.Accelerator
	if st.StartedAt == nil && !info.StartedAt.IsZero() {
		st.StartedAt = &info.StartedAt
	}
	st.ConsoleLog = filepath.Join(dir, compute.ConsoleLog)
	if st.FirstOutputAt == nil {
		if t, ok := firstOutput(dir, st.StartedAt); ok {
			st.FirstOutputAt = &t
		}
	}
	now := time.Now()
	switch {
	case info.State == compute.Paused:
		st.Phase = api.VMPaused
	case st.FirstOutputAt != nil:
		st.Phase = api.VMRunning
		st.SetCondition(api.Condition{Type: "Running", Status: api.ConditionTrue, Reason: "GuestOutput", Message: "QEMU runs and the guest writes to its console"}, now)
	default:
		st.Phase = api.VMStarting
		st.SetCondition(api.Condition{Type: "Running", Status: api.ConditionFalse, Reason: "Booting", Message: "QEMU runs; waiting for the guest's first console output"}, now)
	}
	if err := v.writeStatus(ctx, vm, st); err != nil {
		return reconcile.Result{}, err
	}
	if st.FirstOutputAt == nil {
		// Look for the guest's first words soon; the console log is
		// written by QEMU, not by us, so there is no event to wait for.
		return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	return reconcile.Result{}, nil
}

// firstOutput reports whether the guest has written to its console since
// the start, by the modification time of the console log. A rotation
// (console.RotateLog) may have moved that output to console.log.1 and
// emptied console.log, whose time is then the rotation's: so an empty
// console.log says nothing, and console.log.1, which carries the time of
// the last output it holds, is looked at too. console.log comes first:
// a rotation renames console.log.1 into place before it empties
// console.log, so output is found in one or the other.
func firstOutput(dir string, since *time.Time) (time.Time, bool) {
	for _, name := range []string{compute.ConsoleLog, compute.ConsoleLogPrevious} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err == nil && fi.Size() > 0 && (since == nil || !fi.ModTime().Before(*since)) {
			return time.Now().UTC(), true
		}
	}
	return time.Time{}, false
}

// capConsoleLogs rotates the console log of every VM directory on this
// host that has outgrown Config.ConsoleLogMax (see console.RotateLog).
// Only running VMs' logs grow, but a stopped VM's is capped alike (and
// without loss, as nothing writes it).
func (v *vmController) capConsoleLogs(ctx context.Context) {
	entries, err := os.ReadDir(filepath.Join(v.a.cfg.DataDir, "vms"))
	if err != nil {
		return
	}
	seen := map[string]bool{}
	for _, e := range entries {
		if ctx.Err() != nil {
			return
		}
		if !e.IsDir() {
			continue
		}
		uid := e.Name()
		seen[uid] = true
		v.dirMu.Lock()
		rotated, err := console.RotateLog(v.dir(uid), v.a.cfg.ConsoleLogMax)
		v.dirMu.Unlock()
		switch {
		case err != nil:
			if v.logErrs[uid] != err.Error() {
				slog.Warn("capping a VM's console log", "uid", uid, "err", err)
				v.logErrs[uid] = err.Error()
			}
		case rotated:
			slog.Debug("rotated a VM's console log", "uid", uid, "max", v.a.cfg.ConsoleLogMax)
			delete(v.logErrs, uid)
		default:
			delete(v.logErrs, uid)
		}
	}
	for uid := range v.logErrs {
		if !seen[uid] {
			delete(v.logErrs, uid)
		}
	}
}

// restartReason says why the running VM in dir must be restarted (a
// restart was asked for, or its hardware changed since it started), or ""
// when it need not be.
func restartReason(vm *api.VirtualMachine, dir string) string {
	old, ok := readStartedSpec(dir)
	if !ok {
		return "" // started by an older agent: leave it be
	}
	if r := vm.Spec.RestartRequested; r != nil && (old.RestartRequested == nil || !old.RestartRequested.Equal(*r)) {
		return "restarting as asked (spec.restartRequested " + r.UTC().Format(time.RFC3339) + ")"
	}
	disksChanged := len(old.Disks) != len(vm.Spec.Disks)
	if old.VMDisks != nil || len(vm.Spec.Disks) == 0 {
		// Attaching, detaching or swapping a volume, or another image or
		// size of a cloned disk: the disk list as the VM asks for it.
		disksChanged = !slices.Equal(old.VMDisks, vm.Spec.Disks)
	}
	if old.CPUs != vm.Spec.CPUs || old.MemoryMiB != int64(vm.Spec.Memory>>20) || old.Firmware != vm.Spec.Firmware ||
		disksChanged || old.Boot.From != bootFrom(vm) || old.Boot.Cmdline != vm.Spec.Boot.Cmdline {
		return fmt.Sprintf("restarting to apply a changed spec (generation %d)", vm.Metadata.Generation)
	}
	return ""
}

// readStartedSpec reads what the VM in dir was started with.
func readStartedSpec(dir string) (startedSpec, bool) {
	var s startedSpec
	data, err := os.ReadFile(filepath.Join(dir, specFile))
	if err != nil || json.Unmarshal(data, &s) != nil {
		return s, false
	}
	return s, true
}

// watch starts, once per VM, a goroutine that wakes the controller when
// the VM's process exits, whoever started it.
func (v *vmController) watch(key, uid, dir string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.watching[uid] {
		return
	}
	v.watching[uid] = true
	go func() {
		_ = v.a.cfg.Driver.Wait(context.Background(), uid, dir)
		v.mu.Lock()
		delete(v.watching, uid)
		v.mu.Unlock()
		v.ctl.Enqueue(key)
	}()
}

// writeStatus writes the VM's status if it changed.
func (v *vmController) writeStatus(ctx context.Context, vm *api.VirtualMachine, st api.VirtualMachineStatus) error {
	a, _ := json.Marshal(vm.Status)
	b, _ := json.Marshal(st)
	if string(a) == string(b) {
		return nil
	}
	// The write is conditional on the version read: should anyone else
	// have written the VM since, the informer brings the newer version
	// and the reconcile runs again. The version written goes into the
	// cache at once, so this agent's own next write is not the stale one.
	patch := map[string]any{"metadata": map[string]any{"resourceVersion": vm.Metadata.ResourceVersion}, "status": json.RawMessage(b)}
	out, err := v.a.c.Patch(ctx, "VirtualMachine", vm.Metadata.Tenant, vm.Metadata.Name, patch, true)
	switch {
	case api.IsNotFound(err):
		return nil
	case err != nil:
		return err
	}
	v.inf.Observe(out)
	vm.Metadata.ResourceVersion = out.GetMetadata().ResourceVersion
	vm.Status = st
	return nil
}

// teardown stops a VM that should no longer be here and removes its files.
func (v *vmController) teardown(ctx context.Context, uid string) error {
	dir := v.dir(uid)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	os.Remove(filepath.Join(dir, startedMarker))
	if _, running, _ := v.a.cfg.Driver.Lookup(ctx, uid, dir); running {
		if err := v.a.cfg.Driver.Shutdown(ctx, uid, dir, min(v.a.cfg.ShutdownTimeout, 10*time.Second)); err != nil {
			return fmt.Errorf("stopping VM %s: %w", uid, err)
		}
	}
	slog.Info("removed VM", "uid", uid)
	v.dirMu.Lock()
	defer v.dirMu.Unlock()
	return os.RemoveAll(dir)
}

// every runs fn now and then every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func(context.Context)) {
	for {
		fn(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// collectOrphans removes VMs that exist on disk but not in the API (deleted
// while the agent was down, or moved to another host).
func (v *vmController) collectOrphans(ctx context.Context) {
	entries, err := os.ReadDir(filepath.Join(v.a.cfg.DataDir, "vms"))
	if err != nil {
		return
	}
	live := map[string]bool{}
	for _, o := range v.inf.List() {
		if o.GetMetadata().DeletionTimestamp == nil {
			live[o.GetMetadata().UID] = true
		}
	}
	for _, e := range entries {
		if e.IsDir() && !live[e.Name()] {
			if err := v.teardown(ctx, e.Name()); err != nil {
				slog.Warn("removing orphaned VM", "uid", e.Name(), "err", err)
			}
		}
	}
}

func writeJSONFile(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}
