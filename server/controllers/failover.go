package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/power"
	"hearth.dev/hearth/reconcile"
)

// Failover restarts highly available VMs (spec.highAvailability) on
// another host when theirs is lost, and never while their old QEMU may
// still write to their disks. For each such VM whose host's lease ran
// out (the host-liveness controller made it NotReady with reason
// LeaseExpired, and it holds no lease), it goes through these steps,
// each a reason of the VM's HighAvailability condition, written to
// status.failover and told as an event:
//
//  1. HostLost: the host's lease ran out.
//  2. Fencing: the Machine backing the host (api.FenceMachine: the Host's
//     spec.machine, else the Machine of the host's name) is powered off
//     through its power driver, and its state read back until it is Off.
//     A driver that cannot read the state (a smart plug without a status
//     URL) is trusted once its off call succeeded.
//  3. Fenced: status.failover.fencedAt is set. From here on the old host
//     cannot run the VM: it is off.
//  4. Restarting: the VM's status is reset (no host, no process) and it
//     is unbound from the lost host (spec.host emptied, conditional on the
//     version the fence was decided on: admission lets only this
//     controller do that, and only after a fence), so the scheduler places
//     it on a Ready host, whose agent starts it afresh from its shared
//     disks.
//  5. Restarted: it runs on its new host; status.failover goes.
//
// A lost host that no Machine with a power driver backs (none, or
// Wake-on-LAN, which cannot switch a machine off) cannot be fenced: the
// VM is not restarted, its condition says NotFenced and why, once, with
// one event, and it stays on its host until the host comes back or a
// person decides (fences it by hand and deletes the Host, or stops the
// VM). A host that comes back before it is fenced keeps its VMs. While a
// host is well, the condition says ahead whether a failover could fence
// it (Protected) or not (Unprotected).
type Failover struct {
	Client   *client.Client
	Recorder *client.Recorder
	// Informers, when set, are shared with the term's other controllers.
	Informers *Informers
	// Leases are the hosts' leases; nil trusts the Host's phase alone.
	Leases HostLeases
	// Power returns the power driver of a Machine, its Secrets read
	// (power.ResolveSecrets, then power.For).
	Power func(ctx context.Context, m *api.Machine) (power.Driver, error)
	// FenceTimeout bounds one attempt to power a host off and see it off
	// (default 2 minutes).
	FenceTimeout time.Duration
	Now          func() time.Time

	hosts, vms, machines, volumes *client.Informer
	ctl                           *reconcile.Controller

	mu sync.Mutex
	// byHost holds the keys of the highly available VMs placed on each
	// host, and ha every such VM's host, so a host's or machine's change
	// reaches only the VMs it concerns.
	byHost map[string]map[string]bool
	ha     map[string]string
	// told is the last NotFenced or FenceFailed message evented per VM,
	// so a VM that keeps failing says why once.
	told map[string]string
}

// fenceOffPoll is how often a fence reads the machine's power state back
// while it waits for Off.
const fenceOffPoll = 500 * time.Millisecond

// Run runs the controller until ctx ends.
func (f *Failover) Run(ctx context.Context) error {
	if f.Now == nil {
		f.Now = time.Now
	}
	if f.FenceTimeout == 0 {
		f.FenceTimeout = 2 * time.Minute
	}
	f.byHost, f.ha, f.told = map[string]map[string]bool{}, map[string]string{}, map[string]string{}
	f.hosts = f.Informers.informer(ctx, f.Client, "Host")
	f.vms = f.Informers.informer(ctx, f.Client, "VirtualMachine")
	f.machines = f.Informers.informer(ctx, f.Client, "Machine")
	f.volumes = f.Informers.informer(ctx, f.Client, "Volume")
	f.ctl = &reconcile.Controller{Name: "failover", Reconciler: f, Workers: 4, Resync: time.Minute, SpreadResync: true,
		List: func(context.Context) ([]string, error) { return f.haKeys(""), nil }}
	own := enqueueOwn(f.ctl, "")
	f.vms.OnUpdateUntil(ctx, func(ch client.Change) {
		f.track(ch.Key, ch.New)
		if f.tracked(ch.Key) || ch.New == nil {
			own(ch)
		}
	})
	f.hosts.OnChangeUntil(ctx, func(key string, _ api.Object) {
		for _, k := range f.haKeys(key) {
			f.ctl.Enqueue(k)
		}
	})
	f.machines.OnChangeUntil(ctx, func(string, api.Object) {
		for _, k := range f.haKeys("") {
			f.ctl.Enqueue(k)
		}
	})
	if f.Leases != nil {
		stop := f.Leases.OnChange(func(host string) {
			for _, k := range f.haKeys(host) {
				f.ctl.Enqueue(k)
			}
		})
		defer stop()
		if err := f.Leases.WaitSynced(ctx); err != nil {
			return nil
		}
	}
	if f.hosts.WaitSynced(ctx) != nil || f.vms.WaitSynced(ctx) != nil || f.machines.WaitSynced(ctx) != nil || f.volumes.WaitSynced(ctx) != nil {
		return nil
	}
	return f.ctl.Run(ctx)
}

// track keeps byHost and ha current for one VM.
func (f *Failover) track(key string, obj api.Object) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if old, ok := f.ha[key]; ok {
		delete(f.byHost[old], key)
		if len(f.byHost[old]) == 0 {
			delete(f.byHost, old)
		}
		delete(f.ha, key)
	}
	vm, _ := obj.(*api.VirtualMachine)
	if vm == nil {
		delete(f.told, key)
		return
	}
	// A VM failing over stays tracked until its failover record goes,
	// even if spec.highAvailability was switched off meanwhile.
	if !vm.Spec.HighAvailability && vm.Status.Failover == nil {
		delete(f.told, key)
		return
	}
	host := vm.Spec.Host
	f.ha[key] = host
	if f.byHost[host] == nil {
		f.byHost[host] = map[string]bool{}
	}
	f.byHost[host][key] = true
}

func (f *Failover) tracked(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.ha[key]
	return ok
}

// haKeys lists the tracked VMs on host, or all of them for "".
func (f *Failover) haKeys(host string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	if host == "" {
		for k := range f.ha {
			out = append(out, k)
		}
	} else {
		for k := range f.byHost[host] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// Reconcile takes one VM one step.
func (f *Failover) Reconcile(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := f.vms.Get(key)
	if !ok {
		return reconcile.Result{}, nil
	}
	vm := obj.(*api.VirtualMachine)
	if vm.Metadata.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	fo := vm.Status.Failover
	switch {
	case fo != nil && vm.Spec.Host != fo.From:
		return f.finish(ctx, vm)
	case !vm.Spec.HighAvailability:
		if fo != nil {
			// Switched off mid-way, before the VM was unbound: it stays.
			_, _, err := client.WriteStatus(ctx, f.Client, f.vms, vm, func(vm *api.VirtualMachine) {
				if vm.Spec.Host == vm.Status.Failover.From {
					vm.Status.Failover = nil
					vm.Status.Conditions = slices.DeleteFunc(vm.Status.Conditions, func(c api.Condition) bool { return c.Type == api.ConditionHighAvailability })
				}
			})
			if api.IsNotFound(err) {
				err = nil
			}
			return reconcile.Result{}, err
		}
		return reconcile.Result{}, nil
	case vm.Spec.Host == "":
		return reconcile.Result{}, nil
	}
	host, lost, why := f.hostLost(vm.Spec.Host)
	if !lost {
		return f.protect(ctx, vm, host, fo)
	}
	if vm.Spec.PowerState != "" && vm.Spec.PowerState != api.PowerRunning && fo == nil {
		// Not asked to run: nothing to restart, and nothing is written.
		return reconcile.Result{}, nil
	}
	if fo == nil {
		now := f.Now().UTC().Truncate(time.Second)
		msg := fmt.Sprintf("host %s is lost (%s); fencing it before the VM restarts elsewhere", vm.Spec.Host, why)
		if err := f.write(ctx, vm, api.ReasonHostLost, msg, func(vm *api.VirtualMachine) bool {
			if vm.Status.Failover != nil {
				return false
			}
			vm.Status.Failover = &api.VMFailover{From: vm.Spec.Host, LostAt: &now}
			return true
		}); err != nil {
			return reconcile.Result{}, err
		}
		f.Recorder.Eventf(ctx, vm, api.EventWarning, api.ReasonHostLost, "%s", msg)
		return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	if fo.FencedAt == nil && !fo.Storage {
		return f.fence(ctx, vm, host)
	}
	return f.restart(ctx, vm)
}

// hostLost reports whether the VM's host is lost: NotReady because its
// lease ran out, and holding none now. A host NotReady for another reason
// (its checks failed) has a live agent, which still runs its VMs.
func (f *Failover) hostLost(name string) (*api.Host, bool, string) {
	obj, ok := f.hosts.Get(name)
	if !ok {
		return nil, false, ""
	}
	h := obj.(*api.Host)
	c := h.Status.Condition(api.ConditionReady)
	if h.Status.Phase != api.HostNotReady || c == nil || c.Reason != api.ReasonLeaseExpired {
		return h, false, ""
	}
	if f.Leases != nil && f.Leases.Alive(h.Metadata.Name, h.Metadata.UID) {
		return h, false, ""
	}
	return h, true, c.Message
}

// fencer finds the power driver that can switch host's Machine off, or
// says why there is none.
func (f *Failover) fencer(ctx context.Context, host *api.Host) (*api.Machine, power.Driver, string) {
	name := api.FenceMachine(host)
	obj, ok := f.machines.Get(name)
	if !ok {
		if host.Spec.Machine != "" {
			return nil, nil, fmt.Sprintf("host %s names machine %s in spec.machine, which does not exist", host.Metadata.Name, name)
		}
		return nil, nil, fmt.Sprintf("no Machine backs host %s (set the Host's spec.machine, or name its Machine %s) to power it off", host.Metadata.Name, name)
	}
	m := obj.(*api.Machine)
	switch m.Spec.Power.Driver {
	case "", api.PowerDriverNone:
		return m, nil, fmt.Sprintf("machine %s has no power driver (spec.power.driver is none)", name)
	case api.PowerDriverWOL:
		return m, nil, fmt.Sprintf("machine %s is powered by Wake-on-LAN, which cannot switch it off", name)
	}
	if f.Power == nil {
		return m, nil, "this server cannot drive power"
	}
	d, err := f.Power(ctx, m)
	if err != nil {
		return m, nil, fmt.Sprintf("machine %s's power driver: %v", name, err)
	}
	return m, d, ""
}

// protect is the step for a VM whose host is well: a failover under way
// is called off (the host came back before it was fenced), and the
// condition says ahead whether the host could be fenced.
func (f *Failover) protect(ctx context.Context, vm *api.VirtualMachine, host *api.Host, fo *api.VMFailover) (reconcile.Result, error) {
	if fo != nil && fo.FencedAt == nil {
		// Not fenced yet (a fence at the storage happens only once the
		// VM has left the host): the host keeps its VM.
		msg := fmt.Sprintf("host %s renewed its lease before it was fenced: the VM stays there", fo.From)
		if err := f.write(ctx, vm, api.ReasonHAProtected, msg, endFailover); err != nil {
			return reconcile.Result{}, err
		}
		f.Recorder.Eventf(ctx, vm, api.EventNormal, "HostBack", "%s", msg)
		return reconcile.Result{}, nil
	}
	if fo != nil {
		// Fenced, and now back: it was powered off, so its agent starts
		// the VM afresh, as after any crash. The failover is over.
		msg := fmt.Sprintf("host %s came back after it was fenced: the VM starts there again", fo.From)
		return reconcile.Result{}, f.write(ctx, vm, api.ReasonHAProtected, msg, endFailover)
	}
	if host == nil {
		return reconcile.Result{}, nil
	}
	m, d, why := f.fencer(ctx, host)
	reason, status, msg := api.ReasonHAProtected, api.ConditionTrue, ""
	switch rbdWhy := f.rbdOnly(vm); {
	case d != nil:
		msg = fmt.Sprintf("restarted elsewhere if host %s is lost, after machine %s is powered off (%v)", host.Metadata.Name, m.Metadata.Name, d)
	case rbdWhy == "":
		msg = fmt.Sprintf("restarted elsewhere if host %s is lost, after Ceph cuts its clients off the VM's RBD disks (%s)", host.Metadata.Name, why)
	default:
		reason, status = api.ReasonHAUnprotected, api.ConditionFalse
		msg = fmt.Sprintf("would not be restarted elsewhere if host %s were lost: %s, and %s", host.Metadata.Name, why, rbdWhy)
	}
	_, _, err := client.WriteStatus(ctx, f.Client, f.vms, vm, func(vm *api.VirtualMachine) {
		if vm.Status.Failover != nil {
			return
		}
		vm.Status.SetCondition(api.Condition{Type: api.ConditionHighAvailability, Status: status, Reason: reason, Message: msg,
			ObservedGeneration: vm.Metadata.Generation}, f.Now().UTC())
	})
	if api.IsNotFound(err) {
		err = nil
	}
	return reconcile.Result{}, err
}

// fence powers the lost host's Machine off and waits to see it off.
func (f *Failover) fence(ctx context.Context, vm *api.VirtualMachine, host *api.Host) (reconcile.Result, error) {
	key := client.Key(vm)
	m, d, why := f.fencer(ctx, host)
	rbdWhy := f.rbdOnly(vm)
	if d == nil && rbdWhy == "" {
		return f.fenceAtStorage(ctx, vm, host, why)
	}
	if d == nil {
		msg := fmt.Sprintf("host %s is lost but cannot be fenced, so the VM is NOT restarted elsewhere (its old QEMU may still write to its disks): %s, and %s", host.Metadata.Name, why, rbdWhy)
		if err := f.write(ctx, vm, api.ReasonNotFenced, msg, failingOver(nil)); err != nil {
			return reconcile.Result{}, err
		}
		f.tell(ctx, key, vm, api.ReasonNotFenced, msg)
		// A Machine or power driver may be added: the machine informer
		// brings the change; look again now and then all the same.
		return reconcile.Result{RequeueAfter: time.Minute}, nil
	}
	msg := fmt.Sprintf("powering off machine %s (%v) to fence host %s", m.Metadata.Name, d, host.Metadata.Name)
	if c := vm.Status.Condition(api.ConditionHighAvailability); c == nil || c.Reason != api.ReasonFencing {
		if err := f.write(ctx, vm, api.ReasonFencing, msg, failingOver(func(fo *api.VMFailover) { fo.Machine = m.Metadata.Name })); err != nil {
			return reconcile.Result{}, err
		}
		f.Recorder.Eventf(ctx, vm, api.EventNormal, api.ReasonFencing, "%s", msg)
	}
	fctx, cancel := context.WithTimeout(ctx, f.FenceTimeout)
	defer cancel()
	how, err := powerOff(fctx, d)
	if err != nil {
		msg := fmt.Sprintf("fencing host %s failed, so the VM is not restarted yet (trying again): powering off machine %s: %v", host.Metadata.Name, m.Metadata.Name, err)
		if werr := f.write(ctx, vm, api.ReasonFenceFailed, msg, failingOver(nil)); werr != nil {
			return reconcile.Result{}, werr
		}
		f.tell(ctx, key, vm, api.ReasonFenceFailed, msg)
		return reconcile.Result{}, err
	}
	now := f.Now().UTC()
	// The fence is recorded even if the host came back meanwhile: it was
	// switched off all the same, and protect sees it back.
	msg = fmt.Sprintf("host %s is fenced: machine %s is off (%s)", host.Metadata.Name, m.Metadata.Name, how)
	if err := f.write(ctx, vm, api.ReasonFenced, msg, failingOver(func(fo *api.VMFailover) {
		fo.Machine, fo.FencedAt = m.Metadata.Name, &now
	})); err != nil {
		return reconcile.Result{}, err
	}
	f.Recorder.Eventf(ctx, vm, api.EventNormal, api.ReasonFenced, "%s", msg)
	return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
}

// fenceAtStorage hands the fence to the host the VM restarts on: the
// VM's disks are all RBD volumes, and that host's agent has Ceph
// blocklist every client that has one open before it starts the VM
// (agent fenceDisks), so the lost host's QEMU, alive or not, can never
// write to them again.
func (f *Failover) fenceAtStorage(ctx context.Context, vm *api.VirtualMachine, host *api.Host, noPower string) (reconcile.Result, error) {
	msg := fmt.Sprintf("fencing host %s at the storage (%s): the host the VM restarts on has Ceph cut every client off its RBD disks before it starts it", host.Metadata.Name, noPower)
	if err := f.write(ctx, vm, api.ReasonFencing, msg, failingOver(func(fo *api.VMFailover) { fo.Storage = true })); err != nil {
		return reconcile.Result{}, err
	}
	f.Recorder.Eventf(ctx, vm, api.EventNormal, api.ReasonFencing, "%s", msg)
	return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
}

// rbdOnly says why the VM's disks cannot be fenced at the storage, or ""
// if they can: every disk but cdroms is an RBD volume.
func (f *Failover) rbdOnly(vm *api.VirtualMachine) string {
	for i, d := range vm.Spec.Disks {
		if d.Device == api.DeviceCDROM {
			continue
		}
		if d.Volume == "" {
			return fmt.Sprintf("disks[%d] is not a volume", i)
		}
		o, ok := f.volumes.Get(vm.Metadata.Tenant + "/" + d.Volume)
		if !ok {
			return fmt.Sprintf("volume %s is not known", d.Volume)
		}
		if b := o.(*api.Volume).Spec.Backend; b != api.BackendRBD {
			return fmt.Sprintf("volume %s is on %s, which Hearth cannot fence (only RBD volumes can be)", d.Volume, b)
		}
	}
	return ""
}

// powerOff switches the machine off and reads its state back until it
// is Off; a driver that cannot read it is trusted once Off succeeded. It
// says how it knows.
func powerOff(ctx context.Context, d power.Driver) (string, error) {
	if err := d.Off(ctx); err != nil {
		return "", err
	}
	for {
		st, err := d.Status(ctx)
		switch {
		case errors.Is(err, power.ErrUnsupported):
			return "its power driver switched it off and cannot read the state back", nil
		case err == nil && st == power.Off:
			return "its power driver reads it off", nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return "", fmt.Errorf("switched off, but its state cannot be read: %w", err)
			}
			return "", fmt.Errorf("switched off, but it still reads %s", st)
		case <-time.After(fenceOffPoll):
		}
	}
}

// restart unbinds the fenced VM from its lost host, for the scheduler to
// place it again.
func (f *Failover) restart(ctx context.Context, vm *api.VirtualMachine) (reconcile.Result, error) {
	from := vm.Status.Failover.From
	msg := fmt.Sprintf("restarting on another host: %s is fenced", from)
	if vm.Status.Failover.FencedAt == nil {
		msg = fmt.Sprintf("restarting on another host, which fences %s at the storage before it starts the VM", from)
	}
	out, _, err := client.WriteStatus(ctx, f.Client, f.vms, vm, func(vm *api.VirtualMachine) {
		fo := vm.Status.Failover
		if fo == nil || (fo.FencedAt == nil && !fo.Storage) || vm.Spec.Host != fo.From {
			return
		}
		st := &vm.Status
		// Nothing of the old host's process is the VM's any more.
		st.Phase, st.Host, st.PID, st.QMPSocket, st.Migration = api.VMPending, "", 0, "", nil
		st.StartedAt, st.FirstOutputAt = nil, nil
		st.Conditions = slices.DeleteFunc(st.Conditions, func(c api.Condition) bool { return c.Type == ConditionScheduled })
		st.SetCondition(api.Condition{Type: api.ConditionHighAvailability, Status: api.ConditionFalse, Reason: api.ReasonRestarting,
			Message: msg, ObservedGeneration: vm.Metadata.Generation}, f.Now().UTC())
	})
	switch {
	case api.IsNotFound(err):
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, err
	}
	if out.Status.Failover == nil || out.Spec.Host != out.Status.Failover.From {
		return reconcile.Result{}, nil
	}
	// Unbound only at the version just written: the admission check
	// (admission.FailoverUnbind) wants the fence recorded on it.
	_, err = f.Client.Patch(ctx, "VirtualMachine", out.Metadata.Tenant, out.Metadata.Name, api.BindTo(out.Metadata.ResourceVersion, ""), false)
	switch {
	case api.IsConflict(err):
		return reconcile.Result{RequeueAfter: 200 * time.Millisecond}, nil
	case api.IsNotFound(err):
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("unbinding VirtualMachine %s from lost host %s: %w", client.Key(vm), from, err)
	}
	f.Recorder.Eventf(ctx, out, api.EventNormal, api.ReasonRestarting, "%s", msg)
	return reconcile.Result{}, nil
}

// finish waits for the VM to run on its new host, then closes the
// failover.
func (f *Failover) finish(ctx context.Context, vm *api.VirtualMachine) (reconcile.Result, error) {
	fo := vm.Status.Failover
	stopped := vm.Spec.PowerState != "" && vm.Spec.PowerState != api.PowerRunning
	if vm.Spec.Host == "" || (!stopped && (vm.Status.Host != vm.Spec.Host || vm.Status.Phase != api.VMRunning)) {
		return reconcile.Result{}, nil // its changes bring it back
	}
	took := ""
	if fo.LostAt != nil {
		took = fmt.Sprintf(", %s after %s was found lost", f.Now().Sub(*fo.LostAt).Round(time.Second), fo.From)
	}
	how := fmt.Sprintf("machine %s powered off", fo.Machine)
	if fo.FencedAt == nil {
		how = "its Ceph clients cut off the VM's disks"
	}
	msg := fmt.Sprintf("restarted on %s after %s was fenced (%s)%s", vm.Spec.Host, fo.From, how, took)
	if stopped {
		// Asked to stop meanwhile: placed, and kept as asked.
		msg = fmt.Sprintf("placed on %s after %s was fenced (%s), and %s there as asked", vm.Spec.Host, fo.From, how, strings.ToLower(vm.Spec.PowerState))
	}
	_, wrote, err := client.WriteStatus(ctx, f.Client, f.vms, vm, func(vm *api.VirtualMachine) {
		if vm.Status.Failover == nil {
			return
		}
		vm.Status.Failover = nil
		vm.Status.SetCondition(api.Condition{Type: api.ConditionHighAvailability, Status: api.ConditionTrue, Reason: api.ReasonRestarted,
			Message: msg, ObservedGeneration: vm.Metadata.Generation}, f.Now().UTC())
	})
	if api.IsNotFound(err) {
		return reconcile.Result{}, nil
	}
	if err == nil && wrote {
		f.Recorder.Eventf(ctx, vm, api.EventNormal, api.ReasonRestarted, "%s", msg)
	}
	return reconcile.Result{}, err
}

// write sets the HighAvailability condition (reason and msg; True for
// Protected, else False) and applies change, on the VM as it is when
// written, as long as it is still on the host the step was decided for
// and change (if any) agrees: it returns false to write nothing.
func (f *Failover) write(ctx context.Context, vm *api.VirtualMachine, reason, msg string, change func(*api.VirtualMachine) bool) error {
	host := vm.Spec.Host
	_, _, err := client.WriteStatus(ctx, f.Client, f.vms, vm, func(vm *api.VirtualMachine) {
		if vm.Spec.Host != host || (change != nil && !change(vm)) {
			return
		}
		status := api.ConditionFalse
		if reason == api.ReasonHAProtected {
			status = api.ConditionTrue
		}
		vm.Status.SetCondition(api.Condition{Type: api.ConditionHighAvailability, Status: status, Reason: reason, Message: msg,
			ObservedGeneration: vm.Metadata.Generation}, f.Now().UTC())
	})
	if api.IsNotFound(err) {
		return nil
	}
	return err
}

// endFailover is a write's change that ends a recorded failover.
func endFailover(vm *api.VirtualMachine) bool {
	if vm.Status.Failover == nil {
		return false
	}
	vm.Status.Failover = nil
	return true
}

// failingOver is a write's change that goes on only while a failover is
// recorded.
func failingOver(then func(*api.VMFailover)) func(*api.VirtualMachine) bool {
	return func(vm *api.VirtualMachine) bool {
		if vm.Status.Failover == nil {
			return false
		}
		if then != nil {
			then(vm.Status.Failover)
		}
		return true
	}
}

// tell records a Warning event for a failover that cannot go on, once
// per message.
func (f *Failover) tell(ctx context.Context, key string, vm *api.VirtualMachine, reason, msg string) {
	f.mu.Lock()
	same := f.told[key] == msg
	f.told[key] = msg
	f.mu.Unlock()
	if !same {
		f.Recorder.Eventf(ctx, vm, api.EventWarning, reason, "%s", msg)
	}
}
