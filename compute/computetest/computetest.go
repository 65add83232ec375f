// Package computetest is a compute.Driver that runs no hypervisor: for
// tests of the agent that need no root or QEMU, and for the simulated
// hosts of `hearth bench scale`.
//
// A VM is a record in memory, found again by its directory as the QEMU
// driver finds a pid file, so an agent restarted on the same Driver adopts
// what the last one started. Its "guest" appends a line to the VM's
// console log, which is how the agent learns a guest is alive, at once or
// after a delay. Each VM can be made to fail to start, crash later, power
// itself off later, ignore the ACPI power button or hang in shutdown
// (Behavior; Crash, PowerOff and Panic do it at once), and every call is
// recorded (Calls) with its time, so a test can say what the agent asked
// for and in which order.
package computetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"hearth.dev/hearth/compute"
)

// Behavior is how one VM behaves, chosen at its Start.
type Behavior struct {
	// StartErr makes Start fail with this error; nothing is left running.
	StartErr error
	// BootDelay is how long after Start the guest writes its first
	// console output. Zero writes it before Start returns (a guest that
	// is up at once); a negative delay never writes (a guest that hangs
	// in its firmware).
	BootDelay time.Duration
	// CrashAfter makes the process exit by itself this long after it
	// started, as a QEMU that crashed or was killed; zero never.
	CrashAfter time.Duration
	// PowerOffAfter makes the guest power itself off this long after it
	// started; zero never. As with the QEMU driver, the process stays,
	// paused in compute.StatusShutdown, until Shutdown or Kill ends it
	// (at once), and Wait returns.
	PowerOffAfter time.Duration
	// IgnoreACPI makes the guest ignore the power button: Shutdown waits
	// its whole timeout, then kills the process, as the QEMU driver does.
	IgnoreACPI bool
	// HangShutdown makes Shutdown and Kill block until their context
	// ends, leaving the process running: a QEMU stuck in the kernel.
	HangShutdown bool
}

// Op names a Driver method in a Call.
type Op string

// The operations Calls records.
const (
	OpStart    Op = "Start"
	OpLookup   Op = "Lookup"
	OpShutdown Op = "Shutdown"
	OpKill     Op = "Kill"
	OpPause    Op = "Pause"
	OpResume   Op = "Resume"
	OpWait     Op = "Wait"
)

// Call is one call of a Driver method, recorded when it was made (Err is
// what it returned, or nil for Wait, which is recorded as it begins).
type Call struct {
	Op  Op
	ID  string
	Dir string
	At  time.Time
	// Spec is what Start was given (zero for other calls).
	Spec compute.Spec
	Err  error
}

// ConsoleLine is what a simulated guest writes to its console log.
const ConsoleLine = "computetest: guest booted\n"

// Driver is the fake compute.Driver. The zero value is ready: every VM
// starts, boots at once and runs until stopped. Set the fields before
// the first call.
type Driver struct {
	// Behave chooses how the VM being started behaves; nil gives every VM
	// the zero Behavior.
	Behave func(compute.Spec) Behavior
	// OnCall, if set, is called with every call as it is recorded
	// (without the driver's lock held), for benchmarks that want the
	// moment an agent first looked at a VM without keeping every call.
	OnCall func(Call)
	// NoHistory keeps Calls empty (OnCall still sees every call): a
	// simulated host that runs for long makes millions of lookups.
	NoHistory bool

	mu      sync.Mutex
	vms     map[string]*vm // by directory
	calls   []Call
	nextPID int
}

type vm struct {
	spec    compute.Spec
	behave  Behavior
	info    compute.Info
	exited  chan struct{}
	off     chan struct{} // closed when the guest stops by itself (compute.GuestStopped)
	timers  []*time.Timer
	stopped bool // exited (by shutdown, kill or crash)
}

var _ compute.Driver = (*Driver)(nil)

// DetectKVM answers the agent's question for a simulated host: there is
// no hypervisor, so no KVM.
func (d *Driver) DetectKVM(context.Context) (bool, string) {
	return false, "simulated host (computetest): no hypervisor"
}

func (d *Driver) record(c Call) {
	c.At = time.Now()
	d.mu.Lock()
	if !d.NoHistory {
		d.calls = append(d.calls, c)
	}
	d.mu.Unlock()
	if d.OnCall != nil {
		d.OnCall(c)
	}
}

// Calls returns every call so far, oldest first.
func (d *Driver) Calls() []Call {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Call(nil), d.calls...)
}

// CallsTo returns the calls of one operation on one VM (id "" for every
// VM), oldest first.
func (d *Driver) CallsTo(op Op, id string) []Call {
	var out []Call
	for _, c := range d.Calls() {
		if c.Op == op && (id == "" || c.ID == id) {
			out = append(out, c)
		}
	}
	return out
}

// Running returns the ids of the VMs whose process runs (paused ones
// included).
func (d *Driver) Running() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ids []string
	for _, v := range d.vms {
		ids = append(ids, v.spec.ID)
	}
	return ids
}

// Crash makes the running VM id exit as if QEMU had crashed; it reports
// whether there was one.
func (d *Driver) Crash(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, v := range d.vms {
		if v.spec.ID == id {
			d.exitLocked(v)
			return true
		}
	}
	return false
}

// PowerOff makes the guest of the running VM id power itself off, as a
// guest that ran poweroff: the process stays, in compute.StatusShutdown.
// It reports whether there was one.
func (d *Driver) PowerOff(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, v := range d.vms {
		if v.spec.ID == id {
			v.guestStoppedLocked(compute.StatusShutdown)
			return true
		}
	}
	return false
}

// Panic makes the guest kernel of the running VM id panic, as the QEMU
// driver's guests tell it through pvpanic: the process stays, in
// compute.StatusGuestPanicked. It reports whether there was one.
func (d *Driver) Panic(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, v := range d.vms {
		if v.spec.ID == id {
			v.guestStoppedLocked(compute.StatusGuestPanicked)
			return true
		}
	}
	return false
}

// guestStoppedLocked leaves the VM's process paused in status (one of
// compute.GuestStopped's). Callers hold the driver's mu.
func (v *vm) guestStoppedLocked(status string) {
	if v.stopped || compute.GuestStopped(v.info.Status) {
		return
	}
	v.info.State, v.info.Status = compute.Paused, status
	close(v.off)
}

// find returns the running VM in dir with id. Callers hold mu.
func (d *Driver) findLocked(id, dir string) (*vm, bool) {
	v, ok := d.vms[filepath.Clean(dir)]
	if !ok || v.spec.ID != id {
		return nil, false
	}
	return v, true
}

// exitLocked ends a VM's process. Callers hold mu.
func (d *Driver) exitLocked(v *vm) {
	if v.stopped {
		return
	}
	v.stopped = true
	for _, t := range v.timers {
		t.Stop()
	}
	close(v.exited)
	delete(d.vms, filepath.Clean(v.spec.Dir))
}

// Start records the VM as running and sets its guest's behaviour going.
func (d *Driver) Start(ctx context.Context, spec compute.Spec) (compute.Info, error) {
	info, err := d.start(spec)
	d.record(Call{Op: OpStart, ID: spec.ID, Dir: spec.Dir, Spec: spec, Err: err})
	return info, err
}

func (d *Driver) start(spec compute.Spec) (compute.Info, error) {
	var b Behavior
	if d.Behave != nil {
		b = d.Behave(spec)
	}
	if spec.ID == "" || spec.Dir == "" {
		return compute.Info{}, fmt.Errorf("start vm %q: the spec has no ID or Dir", spec.Name)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.vms == nil {
		d.vms = map[string]*vm{}
	}
	key := filepath.Clean(spec.Dir)
	if v, ok := d.vms[key]; ok {
		return compute.Info{}, fmt.Errorf("start vm %s: already running as pid %d", spec.ID, v.info.PID)
	}
	if b.StartErr != nil {
		return compute.Info{}, fmt.Errorf("start vm %s: %w", spec.ID, b.StartErr)
	}
	d.nextPID++
	accel := "tcg"
	if spec.KVM {
		accel = "kvm"
	}
	v := &vm{spec: spec, behave: b, exited: make(chan struct{}), off: make(chan struct{}),
		info: compute.Info{PID: 100000 + d.nextPID, State: compute.Running, StartedAt: time.Now(), Accelerator: accel, Status: "running"}}
	d.vms[key] = v
	switch {
	case b.BootDelay == 0:
		writeConsole(spec.Dir)
	case b.BootDelay > 0:
		v.timers = append(v.timers, time.AfterFunc(b.BootDelay, func() {
			d.mu.Lock()
			alive := !v.stopped
			d.mu.Unlock()
			if alive {
				writeConsole(spec.Dir)
			}
		}))
	}
	if b.PowerOffAfter > 0 {
		v.timers = append(v.timers, time.AfterFunc(b.PowerOffAfter, func() {
			d.mu.Lock()
			v.guestStoppedLocked(compute.StatusShutdown)
			d.mu.Unlock()
		}))
	}
	if b.CrashAfter > 0 {
		v.timers = append(v.timers, time.AfterFunc(b.CrashAfter, func() {
			d.mu.Lock()
			d.exitLocked(v)
			d.mu.Unlock()
		}))
	}
	return v.info, nil
}

// writeConsole appends the guest's line to its console log, as QEMU
// appends what the guest writes to its serial port.
func writeConsole(dir string) {
	f, err := os.OpenFile(filepath.Join(dir, compute.ConsoleLog), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	_, _ = f.WriteString(ConsoleLine)
	_ = f.Close()
	// The kernel stamps files with a coarse clock, up to a tick behind
	// time.Now: a write just after the agent noted the launch could look
	// older than the launch. A real guest writes for longer than a tick.
	now := time.Now()
	_ = os.Chtimes(filepath.Join(dir, compute.ConsoleLog), now, now)
}

// Lookup finds the VM running in dir, if it is the VM with id.
func (d *Driver) Lookup(ctx context.Context, id, dir string) (compute.Info, bool, error) {
	d.mu.Lock()
	v, ok := d.findLocked(id, dir)
	var info compute.Info
	if ok {
		info = v.info
	}
	d.mu.Unlock()
	d.record(Call{Op: OpLookup, ID: id, Dir: dir})
	return info, ok, nil
}

// Shutdown presses the power button: the VM exits at once unless its
// guest ignores ACPI (then it is killed after timeout) or its shutdown
// hangs (then Shutdown returns ctx's error when ctx ends). A guest that
// powered itself off has no button to ignore: it exits at once.
func (d *Driver) Shutdown(ctx context.Context, id, dir string, timeout time.Duration) error {
	err := d.stop(ctx, id, dir, timeout, false)
	d.record(Call{Op: OpShutdown, ID: id, Dir: dir, Err: err})
	return err
}

// Kill ends the VM's process at once (unless it hangs).
func (d *Driver) Kill(ctx context.Context, id, dir string) error {
	err := d.stop(ctx, id, dir, 0, true)
	d.record(Call{Op: OpKill, ID: id, Dir: dir, Err: err})
	return err
}

func (d *Driver) stop(ctx context.Context, id, dir string, timeout time.Duration, kill bool) error {
	d.mu.Lock()
	v, ok := d.findLocked(id, dir)
	d.mu.Unlock()
	if !ok {
		return nil
	}
	verb := "shut down"
	if kill {
		verb = "kill"
	}
	if v.behave.HangShutdown {
		select {
		case <-v.exited: // crashed meanwhile
			return nil
		case <-ctx.Done():
			return fmt.Errorf("%s vm %s: %w", verb, id, ctx.Err())
		}
	}
	d.mu.Lock()
	off := compute.GuestStopped(v.info.Status)
	d.mu.Unlock()
	if !kill && v.behave.IgnoreACPI && !off {
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-v.exited:
			return nil
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("%s vm %s: %w", verb, id, ctx.Err())
		}
	}
	d.mu.Lock()
	d.exitLocked(v)
	d.mu.Unlock()
	return nil
}

// Pause freezes the VM's CPUs.
func (d *Driver) Pause(ctx context.Context, id, dir string) error {
	err := d.setState(id, dir, "pause", compute.Paused)
	d.record(Call{Op: OpPause, ID: id, Dir: dir, Err: err})
	return err
}

// Resume thaws them.
func (d *Driver) Resume(ctx context.Context, id, dir string) error {
	err := d.setState(id, dir, "resume", compute.Running)
	d.record(Call{Op: OpResume, ID: id, Dir: dir, Err: err})
	return err
}

func (d *Driver) setState(id, dir, verb string, st compute.State) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.findLocked(id, dir)
	if !ok {
		return fmt.Errorf("%s vm %s: %w", verb, id, compute.ErrNotRunning)
	}
	if compute.GuestStopped(v.info.Status) {
		// As QEMU answers cont after a power-off or a panic.
		return fmt.Errorf("%s vm %s: the guest has stopped (%s)", verb, id, v.info.Status)
	}
	v.info.State, v.info.Status = st, map[compute.State]string{compute.Paused: "paused", compute.Running: "running"}[st]
	return nil
}

// Wait returns when the VM's process exits or its guest stops by itself
// (powers off or panics), or ctx ends; at once when it is not running.
func (d *Driver) Wait(ctx context.Context, id, dir string) error {
	d.record(Call{Op: OpWait, ID: id, Dir: dir})
	d.mu.Lock()
	v, ok := d.findLocked(id, dir)
	d.mu.Unlock()
	if !ok {
		return nil
	}
	select {
	case <-v.exited:
		return nil
	case <-v.off:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for vm %s: %w", id, ctx.Err())
	}
}

// ErrInjected is a ready-made error for Behavior.StartErr.
var ErrInjected = errors.New("computetest: injected failure")
