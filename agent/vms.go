package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
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

// vmController converges the VMs placed on this host: it reads them from
// the agent's cache, decides (decide), acts (carryOut) and reports
// (vmStatus, written with client.WriteStatus).
type vmController struct {
	a   *Agent
	ctl *reconcile.Controller

	mu       sync.Mutex
	uids     map[string]string // key → uid of VMs seen on this host
	watching map[string]bool   // uids with a goroutine waiting for their process
	// crashes is each VM's crash-loop backoff: its quick crashes in a row
	// and when it may start again (decide), by uid. It lives as long as
	// the agent: a restarted agent starts a crashed VM at once.
	crashes map[string]crashLoop
	// failedSends are the live migrations this host failed to send
	// (migrateOut) and why, by VM uid and destination, so that each is
	// said once and not tried again; forgotten once the VM is placed here
	// again or gone from here (forgetFailedSends).
	failedSends map[string]string

	// dirMu keeps capConsoleLogs out of a VM directory teardown is
	// removing, so no console.log.1 is made in one that goes.
	dirMu sync.Mutex
	// logErrs is the last error capping each VM's console log, so a
	// lasting one is logged once (capConsoleLogs only).
	logErrs map[string]string
}

type crashLoop struct {
	n         int
	notBefore time.Time
}

// consoleLogCheck is how often every VM's console log is measured against
// Config.ConsoleLogMax: a stat per VM.
const consoleLogCheck = 2 * time.Second

func newVMController(a *Agent) *vmController {
	v := &vmController{a: a, uids: map[string]string{}, watching: map[string]bool{}, crashes: map[string]crashLoop{}, logErrs: map[string]string{},
		failedSends: map[string]string{}}
	v.ctl = &reconcile.Controller{Name: "vms", Reconciler: v, Workers: 16, Resync: a.cfg.Resync,
		List: func(context.Context) ([]string, error) { return a.cache.vms.Keys(), nil }}
	return v
}

// vmChanged hears of a change to a VM placed here.
func (v *vmController) vmChanged(ch client.Change) {
	if ch.New != nil {
		v.mu.Lock()
		v.uids[ch.Key] = ch.New.GetMetadata().UID
		v.mu.Unlock()
	}
	ownChange(ch, v.ctl.EnqueueNow)
}

// volumeChanged starts the VMs waiting for a volume once it is made here
// (or tells them it went): a VM's disks are its volumes' files.
func (v *vmController) volumeChanged(ch client.Change) {
	if ch.StatusOnly() && ch.Old.CommonStatus().Phase == ch.New.CommonStatus().Phase {
		return
	}
	tenant, name := client.SplitKey(ch.Key)
	for _, o := range v.a.cache.vms.List() {
		vm := o.(*api.VirtualMachine)
		if vm.Metadata.Tenant == tenant && slices.ContainsFunc(vm.Spec.Disks, func(d api.VMDisk) bool { return d.Volume == name }) {
			v.ctl.EnqueueNow(client.Key(vm))
		}
	}
}

// imageChanged tries the VMs that name an image again when what it
// offers changed: a missing image created, an upload arrived.
func (v *vmController) imageChanged(ch client.Change) {
	if !imageOffers(ch) {
		return
	}
	for _, o := range v.a.cache.vms.List() {
		vm := o.(*api.VirtualMachine)
		for _, r := range vm.Spec.References() {
			if r.Kind == "Image" && imageNamedBy(ch.Key, vm.Metadata.Tenant, r.Name) {
				v.ctl.EnqueueNow(client.Key(vm))
				break
			}
		}
	}
}

func (v *vmController) run(ctx context.Context) error {
	if err := v.a.cache.waitSynced(ctx); err != nil {
		close(v.a.adopted)
		return nil
	}
	v.adoptLeaving(ctx) // before orphans are collected and networks applied
	go every(ctx, v.a.cfg.Resync, v.collectOrphans)
	go every(ctx, consoleLogCheck, v.capConsoleLogs)
	return v.ctl.Run(ctx)
}

func (v *vmController) dir(uid string) string { return v.a.vmPath(uid) }

// vmPath is the directory of the VM with uid on this host.
func (a *Agent) vmPath(uid string) string { return filepath.Join(a.cfg.DataDir, "vms", uid) }

// Reconcile makes one VM's process match its object.
func (v *vmController) Reconcile(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := v.a.cache.vms.Get(key)
	if !ok || obj.GetMetadata().DeletionTimestamp != nil || obj.(*api.VirtualMachine).Spec.Host != v.a.cfg.Name {
		v.mu.Lock()
		uid := v.uids[key]
		v.mu.Unlock()
		if uid != "" && (!ok || obj.GetMetadata().DeletionTimestamp == nil) {
			// Gone from here but not deleted: it may be moving away.
			if res, handled, err := v.migrateOut(ctx, key, uid); handled {
				return res, err
			}
		}
		v.mu.Lock()
		delete(v.uids, key)
		delete(v.crashes, uid)
		v.forgetFailedSends(uid)
		v.mu.Unlock()
		if uid != "" {
			if err := v.teardown(ctx, uid); err != nil {
				return reconcile.Result{}, err
			}
		}
		v.a.netReleased(key, uid) // a VM that moved away: its ports here go
		return reconcile.Result{}, nil
	}
	// A copy of the cache's object, which is shared and never changed:
	// a shallow one while only looked at and reported (report replaces
	// the whole of it), a deep one (acting) before anything that acts on
	// the VM, which passes its parts around.
	cp := *obj.(*api.VirtualMachine)
	vm := &cp
	acting := func() { vm = api.DeepCopy(obj).(*api.VirtualMachine) }
	dir := v.dir(vm.Metadata.UID)
	v.mu.Lock()
	v.forgetFailedSends(vm.Metadata.UID) // placed here: no move from here is under way
	v.mu.Unlock()
	if api.MigrationFailed(vm) {
		// Its move here failed (migrate.go): a QEMU started here to
		// receive it never gets it, even one that does not answer.
		return reconcile.Result{}, v.a.cfg.Driver.Kill(ctx, vm.Metadata.UID, dir)
	}
	f, err := v.observe(ctx, vm, dir)
	if err != nil {
		if v.incoming(vm) && incomingOverdue(vm.Status.Migration, time.Now()) {
			acting()
			return v.giveUpUnreadable(ctx, vm, dir, err)
		}
		return reconcile.Result{}, err
	}
	if v.incoming(vm) {
		acting()
		return v.migrateIn(ctx, vm, dir, f)
	}
	plan := decide(vm, f)
	if plan.Action != keep || plan.End || plan.Crashed {
		acting()
	}
	return v.carryOut(ctx, vm, dir, f, plan)
}

// observe finds what runs for the VM and what the agent recorded of it.
func (v *vmController) observe(ctx context.Context, vm *api.VirtualMachine, dir string) (vmFacts, error) {
	uid := vm.Metadata.UID
	info, running, err := v.a.cfg.Driver.Lookup(ctx, uid, dir)
	if err != nil {
		return vmFacts{}, err
	}
	f := vmFacts{Running: running, Info: info, Now: time.Now()}
	if _, err := os.Stat(filepath.Join(dir, startedMarker)); err == nil {
		f.Marker = true
	}
	if s, ok := v.a.specs.read(dir); ok {
		f.Started = &s
	}
	v.mu.Lock()
	c := v.crashes[uid]
	v.mu.Unlock()
	f.Crashes, f.NotBefore = c.n, c.notBefore
	return f, nil
}

// carryOut acts on a plan and reports the VM's status.
func (v *vmController) carryOut(ctx context.Context, vm *api.VirtualMachine, dir string, f vmFacts, plan vmPlan) (reconcile.Result, error) {
	uid, drv := vm.Metadata.UID, v.a.cfg.Driver
	s := vmState{Running: f.Running, Info: f.Info, RestartCount: vm.Status.RestartCount}
	marker := filepath.Join(dir, startedMarker)
	if plan.End {
		// QEMU keeps the process of a guest that powered off or
		// panicked: end it (at once: Shutdown tells it to quit) before
		// the policy's word.
		os.Remove(marker)
		if err := drv.Shutdown(ctx, uid, dir, v.a.cfg.ShutdownTimeout); err != nil {
			return reconcile.Result{}, err
		}
		s.Running = false
	}
	if plan.Crashed {
		v.mu.Lock()
		v.crashes[uid] = crashLoop{n: plan.Crashes, notBefore: f.Now.Add(plan.RestartIn)}
		v.mu.Unlock()
		// Told once, whatever comes of it: the marker goes, so the next
		// look finds no crash but a VM to start.
		os.Remove(marker)
		if plan.Count {
			s.RestartCount++
		}
		kind, reason := api.EventWarning, "Restarted"
		switch {
		case plan.GuestOff:
			kind = api.EventNormal // the guest's own doing, not a failure
			if plan.Action != start {
				reason = api.ReasonGuestShutdown
			}
		case plan.Action != start:
			reason = "Crashed"
		}
		v.a.rec.Eventf(ctx, vm, kind, reason, "%s", plan.Why)
	}

	switch plan.Action {
	case keep:
		switch {
		case vm.Spec.PowerState == api.PowerStopped:
			os.Remove(marker) // a stopped VM that crashed did not crash
		case !s.Running && givenUp(vm):
			c := vm.Status.Condition(api.ConditionReady)
			s.Failure = &vmFailure{Reason: c.Reason, Message: c.Message}
		}
	case giveUp, wait:
		switch {
		case plan.GuestOff:
			s.Failure = &vmFailure{Reason: api.ReasonGuestShutdown, Message: plan.Why, Wait: plan.Action == wait}
		case plan.Crashed:
			s.Failure = &vmFailure{Reason: api.ReasonCrashed, Message: plan.Why}
		default:
			// Waiting out a crash loop: nothing to report again.
			return reconcile.Result{RequeueAfter: plan.RestartIn}, nil
		}
	case stop:
		os.Remove(marker)
		v.announceShutdown(ctx, vm, dir, s)
		if err := drv.Shutdown(ctx, uid, dir, v.a.cfg.ShutdownTimeout); err != nil {
			return reconcile.Result{}, err
		}
		v.a.rec.Eventf(ctx, vm, api.EventNormal, "Stopped", "the VM was shut down")
		s.Running = false
	case restart:
		v.a.rec.Eventf(ctx, vm, api.EventNormal, "Restarting", "%s", plan.Why)
		os.Remove(marker)
		v.announceShutdown(ctx, vm, dir, s)
		if err := drv.Shutdown(ctx, uid, dir, v.a.cfg.ShutdownTimeout); err != nil {
			return reconcile.Result{}, err
		}
		s.Running = false
		fallthrough
	case start:
		var err error
		if s, err = v.start(ctx, vm, dir, s); err != nil {
			return reconcile.Result{}, err
		}
		if vm.Spec.PowerState == api.PowerPaused {
			if err := drv.Pause(ctx, uid, dir); err != nil {
				return reconcile.Result{}, err
			}
			s.Info.State = compute.Paused
		}
	case pause:
		if err := drv.Pause(ctx, uid, dir); err != nil {
			return reconcile.Result{}, err
		}
		s.Info.State = compute.Paused
	case resume:
		if err := drv.Resume(ctx, uid, dir); err != nil {
			return reconcile.Result{}, err
		}
		s.Info.State = compute.Running
	}

	if s.Running {
		v.watch(client.Key(vm), uid, dir)
		s.FirstOutputAt = vm.Status.FirstOutputAt
		if s.StartedAt != nil {
			s.FirstOutputAt = nil // a new run
		}
		since := s.StartedAt
		if since == nil {
			since = vm.Status.StartedAt
		}
		if s.FirstOutputAt == nil {
			if t, ok := firstOutput(dir, since); ok {
				s.FirstOutputAt = &t
			}
		}
	}
	if err := v.report(ctx, vm, dir, s); err != nil {
		return reconcile.Result{}, err
	}
	switch {
	case plan.Action == wait:
		return reconcile.Result{RequeueAfter: plan.RestartIn}, nil
	case s.Running && s.FirstOutputAt == nil:
		// Look for the guest's first words soon; the console log is
		// written by QEMU, not by us, so there is no event to wait for.
		return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	return reconcile.Result{}, nil
}

// announceShutdown reports, before a stop or a restart presses the
// guest's power button, that the agent waits for it to power off and
// until when, so a guest that does not listen (one still booting) is not
// a silent wait of a whole --shutdown-timeout. Only a guest that is
// running (not paused: QEMU resumes it to press the button, and a paused
// VM's status says so already) is told of.
func (v *vmController) announceShutdown(ctx context.Context, vm *api.VirtualMachine, dir string, s vmState) {
	if !s.Running || s.Info.State != compute.Running {
		return
	}
	by := time.Now().Add(v.a.cfg.ShutdownTimeout)
	s.ShutdownBy = &by
	if err := v.report(ctx, vm, dir, s); err != nil {
		slog.Warn("writing VM status", "vm", client.Key(vm), "err", err)
	}
}

// start prepares the VM's files and starts it. A failure is reported in
// the VM's status (once: a retry that fails the same way writes nothing)
// and returned, so the VM backs off.
func (v *vmController) start(ctx context.Context, vm *api.VirtualMachine, dir string, s vmState) (vmState, error) {
	taken := time.Now().UTC()
	s.TakenAt = &taken
	// Whatever is reported next (here, or by the caller once this
	// returns) comes after Preparing, if that was: announced says it no
	// more, or waits for it.
	announced := func() {}
	if announcePreparing(vm.Status) {
		p := s
		p.Preparing = true
		announced = v.announceLater(ctx, vm, dir, p)
	}
	defer announced()
	spec, err := v.a.prepare(ctx, vm, dir)
	if err == nil {
		err = v.fenceDisks(ctx, vm)
	}
	if err != nil {
		f := classify(err)
		s.Failure = &f
		announced()
		if werr := v.report(ctx, vm, dir, s); werr != nil {
			slog.Warn("writing VM status", "vm", client.Key(vm), "err", werr)
		}
		return s, err
	}
	// The moment before the launch: a guest may write to its console
	// before Start returns (QEMU's control socket answers after the
	// guest has begun), and firstOutput counts output from here. This
	// agent's clock is also more precise than the process start time the
	// driver derives from /proc (whole-second boot time); adoption later
	// keeps what is recorded here.
	launched := time.Now().UTC()
	info, err := v.a.cfg.Driver.Start(ctx, spec)
	if err != nil {
		s.Failure = &vmFailure{Reason: api.ReasonStartFailed, Message: err.Error()}
		announced()
		if werr := v.report(ctx, vm, dir, s); werr != nil {
			slog.Warn("writing VM status", "vm", client.Key(vm), "err", werr)
		}
		return s, err
	}
	if err := writeJSONFile(filepath.Join(dir, specFile), startedSpec{Spec: spec, VMDisks: vm.Spec.Disks, RestartRequested: vm.Spec.RestartRequested}); err != nil {
		return s, err
	}
	if err := os.WriteFile(filepath.Join(dir, startedMarker), nil, 0o600); err != nil {
		return s, err
	}
	v.a.rec.Eventf(ctx, vm, api.EventNormal, "Started", "QEMU started (pid %d, %s)", info.PID, info.Accelerator)
	s.Running, s.Info, s.StartedAt, s.Failure = true, info, &launched, nil
	return s, nil
}

// preparingDelay is how long a start prepares (and launches) before its
// status says Preparing. Most starts take milliseconds (the images and
// volumes are there) and report Starting or Running just after, which
// would replace a Preparing written first before anyone read it: at a
// thousand starts a second that is a thousand status writes a second,
// a third of a start's, for nothing. A start that takes longer (an
// image downloading, a volume being made, a slow launch) still says so
// while it does.
const preparingDelay = time.Second

// announceLater reports the Preparing state s if the start is still
// under way after preparingDelay. The returned func, which the caller
// calls before any other report (and may call again: it acts once),
// says so no more, or waits for the report if it began and makes vm what
// was written, so the next report follows it. The report is written
// from a copy of vm: the start reads vm meanwhile.
func (v *vmController) announceLater(ctx context.Context, vm *api.VirtualMachine, dir string, s vmState) func() {
	cp := *vm
	var err error
	done := make(chan struct{})
	t := time.AfterFunc(preparingDelay, func() {
		defer close(done)
		err = v.report(ctx, &cp, dir, s)
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			if t.Stop() {
				return // never written: the next report says more
			}
			<-done
			*vm = cp
			if err != nil {
				slog.Warn("writing VM status", "vm", client.Key(vm), "err", err)
			}
		})
	}
}

// report writes the VM's status for state s, if that changes it, and
// tells a new failure in a Warning event. vm is updated to what was
// written, so a later report of the same reconcile starts from it.
func (v *vmController) report(ctx context.Context, vm *api.VirtualMachine, dir string, s vmState) error {
	now := time.Now()
	consoleLog := filepath.Join(dir, compute.ConsoleLog)
	before := vm.Status
	out, wrote, err := v.writeStatus(ctx, vm, vmStatus(vm, s, v.a.cfg.Name, consoleLog, now), func(cur *api.VirtualMachine) {
		cur.Status = vmStatus(cur, s, v.a.cfg.Name, consoleLog, now)
	})
	switch {
	case api.IsNotFound(err):
		return nil
	case err != nil:
		return err
	}
	*vm = *out
	if !wrote {
		return nil
	}
	if reason, msg, ok := failureEvent(before, out.Status); ok {
		v.a.rec.Eventf(ctx, vm, api.EventWarning, reason, "%s", msg)
	}
	return nil
}

// writeStatus writes st, what change makes of vm's status, as
// client.WriteStatus does: nothing when it would not change it, and on
// a conflict (vm is not the latest) change applied to the latest. But
// it says so, and makes its first try, without WriteStatus's deep copy
// of the whole VM: most looks at a VM (a resync, a change that needs
// nothing done) write nothing, and most writes (a start's) need no
// second try; the first sends a shallow copy of vm with st, which the
// write only reads.
func (v *vmController) writeStatus(ctx context.Context, vm *api.VirtualMachine, st api.VirtualMachineStatus, change func(*api.VirtualMachine)) (*api.VirtualMachine, bool, error) {
	if reflect.DeepEqual(st, vm.Status) || client.StatusEqual(st, vm.Status) {
		return vm, false, nil
	}
	next := *vm
	next.Status = st
	out, err := v.a.c.UpdateStatus(ctx, &next)
	if err == nil {
		v.a.cache.vms.Observe(out)
		return out.(*api.VirtualMachine), true, nil
	}
	if !api.IsConflict(err) {
		return vm, false, err
	}
	fresh, err := v.a.c.Get(ctx, "VirtualMachine", vm.Metadata.Tenant, vm.Metadata.Name)
	if err != nil {
		return vm, false, err
	}
	if fresh.GetMetadata().UID != vm.Metadata.UID {
		return vm, false, api.NewNotFound("VirtualMachine", vm.Metadata.Tenant, vm.Metadata.Name)
	}
	v.a.cache.vms.Observe(fresh)
	return client.WriteStatus(ctx, v.a.c, v.a.cache.vms, fresh.(*api.VirtualMachine), change)
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
		v.ctl.EnqueueNow(key) // news from the host: not held by a backoff
	}()
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
	defer v.a.specs.forget(dir)
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
	for _, o := range v.a.cache.vms.List() {
		if o.GetMetadata().DeletionTimestamp == nil {
			live[o.GetMetadata().UID] = true
		}
	}
	// A VM that left the cache but that Reconcile has not let go of yet
	// may be moving to another host (migrateOut): not an orphan.
	v.mu.Lock()
	for _, uid := range v.uids {
		live[uid] = true
	}
	v.mu.Unlock()
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
