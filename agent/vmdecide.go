package agent

import (
	"fmt"
	"slices"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/compute"
)

// The VM controller is split in two. What to do with a VM, and what its
// status says afterwards, are pure functions here: decide from the
// VirtualMachine and what the agent found on the host (vmFacts), and
// vmStatus from what came of acting (vmState). vms.go observes the host,
// carries the decision out (prepare, start, stop, pause) and writes the
// status and events. The table tests of this file need neither root nor
// a hypervisor.

// vmFacts is what the agent found of one VM on this host before acting.
type vmFacts struct {
	// Running is whether a process runs for the VM; Info is what the
	// driver says of it (its state, pid, accelerator).
	Running bool
	Info    compute.Info
	// Marker is whether the agent started the VM and has not stopped it
	// on purpose since (startedMarker): no process with the marker is a
	// crash.
	Marker bool
	// Started is what the VM was last started with (specFile); nil when
	// that is not known (never started here, or by an older agent).
	Started *startedSpec
	// Crashes counts the VM's quick crashes in a row before now (runs
	// shorter than stableRun), and NotBefore is when a VM that crashed
	// may start again: the crash-loop backoff, kept by the controller.
	Crashes   int
	NotBefore time.Time
	Now       time.Time
}

// vmAction is what the agent does to a VM's process.
type vmAction int

const (
	keep    vmAction = iota // leave the process as it is
	start                   // prepare the VM's files and start it
	stop                    // shut it down (ACPI, then kill) and leave it stopped
	restart                 // shut it down and start it again (a changed spec, or asked for)
	pause                   // freeze its CPUs
	resume                  // thaw them
	wait                    // crashed: start it again at facts.NotBefore
	giveUp                  // crashed or powered off, and its restart policy says to leave it
)

func (a vmAction) String() string {
	return [...]string{"keep", "start", "stop", "restart", "pause", "resume", "wait", "giveUp"}[a]
}

// vmPlan is what decide chose.
type vmPlan struct {
	Action vmAction
	// Crashed: the VM stopped without the agent stopping it, and its
	// restart policy applies: the process went away (a crash), or, with
	// GuestOff, its guest powered itself off. A restart by the policy
	// (Count) adds one to status.restartCount; a restart asked for or for
	// a changed spec does not.
	Crashed bool
	Count   bool
	// End: the guest stopped by itself but QEMU keeps its process
	// (compute.GuestStopped), so it is ended first, whatever comes next.
	// GuestOff: it powered itself off (compute.StatusShutdown), which
	// is not a crash; else it crashed.
	End, GuestOff bool
	// Crashes is the quick-crash count after this decision, and
	// RestartIn how long a crashed VM waits before it starts again (zero
	// for the first crash after a stable run: at once).
	Crashes   int
	RestartIn time.Duration
	// Why says why, for the event: the restart's reason, the crash.
	Why string
}

// stableRun is how long a VM must have run for its next crash to count
// as the first of a new series: a VM that crashes again sooner waits
// crashBackoff before its next start, growing with each quick crash.
const stableRun = 10 * time.Minute

// crashBackoff is how long a VM that crashed n times in a row quickly
// waits before it starts again: at once after the first, then 10s
// doubling to 5 minutes, as Kubernetes' CrashLoopBackOff does.
func crashBackoff(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	d := 10 * time.Second
	for range n - 2 {
		d *= 2
		if d >= 5*time.Minute {
			return 5 * time.Minute
		}
	}
	return d
}

// decide says what to do with a VM that is placed on this host (and not
// being deleted: that is teardown's).
func decide(vm *api.VirtualMachine, f vmFacts) vmPlan {
	if vm.Spec.PowerState == api.PowerStopped {
		if f.Running {
			return vmPlan{Action: stop}
		}
		return vmPlan{Action: keep}
	}
	if f.Running {
		if why := restartReason(vm, f.Started); why != "" {
			return vmPlan{Action: restart, Why: why}
		}
		if compute.GuestStopped(f.Info.Status) {
			// Whatever was asked (Running or Paused), the guest powered
			// off or panicked: QEMU cannot resume it, only end it.
			return stoppedByItself(vm, f, f.Info.Status)
		}
		switch {
		case vm.Spec.PowerState == api.PowerPaused && f.Info.State == compute.Running:
			return vmPlan{Action: pause}
		case vm.Spec.PowerState == api.PowerRunning && f.Info.State == compute.Paused:
			return vmPlan{Action: resume}
		}
		return vmPlan{Action: keep}
	}
	if !f.Marker {
		if givenUp(vm) && restartReason(vm, f.Started) == "" {
			// It crashed or powered off and its policy said to leave it:
			// it stays so until a person asks (hearth vm start or
			// restart, or a stop and a start, or a changed spec).
			return vmPlan{Action: keep}
		}
		if f.Now.Before(f.NotBefore) {
			return vmPlan{Action: wait, Crashes: f.Crashes, RestartIn: f.NotBefore.Sub(f.Now)}
		}
		return vmPlan{Action: start, Crashes: f.Crashes}
	}
	// The process went away without the agent stopping it.
	return stoppedByItself(vm, f, "")
}

// stoppedByItself is what the restart policy says of a VM that stopped
// without the agent stopping it, as status says: "" when its QEMU exited
// (a crash: it died or was killed), else the status QEMU keeps the
// process in (compute.GuestStopped): the guest powered itself off
// (compute.StatusShutdown) or its kernel panicked, a crash. Always
// starts it again; OnFailure only after a crash; Never not at all. A VM
// that keeps stopping soon after its start waits longer each time
// (crashBackoff), whichever way it stopped.
func stoppedByItself(vm *api.VirtualMachine, f vmFacts, status string) vmPlan {
	policy := vm.Spec.RestartPolicy
	guestOff := status == compute.StatusShutdown
	what := "QEMU exited unexpectedly"
	switch status {
	case compute.StatusShutdown:
		what = "the guest powered itself off"
	case compute.StatusGuestPanicked:
		what = "the guest's kernel panicked"
	case compute.StatusInternalError:
		what = "QEMU stopped the guest with an internal error (the hypervisor could not run it)"
	}
	end := status != ""
	if policy == api.RestartNever || (guestOff && policy == api.RestartOnFailure) {
		return vmPlan{Action: giveUp, Crashed: true, End: end, GuestOff: guestOff,
			Why: fmt.Sprintf("%s; not restarting it (restart policy %s)", what, policy)}
	}
	crashes := 1
	if s := vm.Status.StartedAt; s != nil && f.Now.Sub(*s) < stableRun {
		crashes = f.Crashes + 1
	}
	in := crashBackoff(crashes)
	plan := vmPlan{Action: start, Crashed: true, Count: true, End: end, GuestOff: guestOff, Crashes: crashes, RestartIn: in}
	n := vm.Status.RestartCount + 1
	if in > 0 {
		plan.Action = wait
		plan.Why = fmt.Sprintf("%s, %d times in a row within %s of starting; starting it again in %s (restart policy %s, restart %d)",
			what, crashes, stableRun, in, policy, n)
	} else {
		plan.Why = fmt.Sprintf("%s; restarting it (restart policy %s, restart %d)", what, policy, n)
	}
	return plan
}

// givenUp reports whether the VM's status says it stopped by itself and
// its restart policy left it so: crashed under Never (phase Failed,
// reason Crashed), or powered off under OnFailure or Never (phase
// Stopped, reason GuestShutdown). A policy changed since to one that
// starts it again lets it start.
func givenUp(vm *api.VirtualMachine) bool {
	c := vm.Status.Condition(api.ConditionReady)
	if c == nil {
		return false
	}
	switch policy := vm.Spec.RestartPolicy; {
	case c.Reason == api.ReasonCrashed:
		return policy == api.RestartNever && vm.Status.Phase == api.VMFailed
	case c.Reason == api.ReasonGuestShutdown:
		return policy != api.RestartAlways && vm.Status.Phase == api.VMStopped
	}
	return false
}

// restartReason says why the running VM must be restarted (a restart was
// asked for, or its hardware changed since it started with old), or ""
// when it need not be.
func restartReason(vm *api.VirtualMachine, old *startedSpec) string {
	if old == nil {
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

// vmFailure is why a VM is not as its spec asks: a reason of the
// api.Reason* VM set and a message a person can act on. A wait is not a
// failure of the VM (a volume still being made, an upload still to
// come): the VM stays Starting while it waits.
type vmFailure struct {
	Reason, Message string
	Wait            bool
}

// vmState is what a VM came to once the agent acted: the input of its
// status.
type vmState struct {
	// Running is whether a process runs; Info what the driver says of it.
	Running bool
	Info    compute.Info
	// StartedAt is when this agent started the process (nil: keep the
	// time recorded in the status, else the driver's); FirstOutputAt when
	// the guest was first seen writing since.
	StartedAt, FirstOutputAt *time.Time
	// Preparing: the agent is about to prepare and start the VM.
	Preparing bool
	// TakenAt, if set, is when this start began preparing the VM: the
	// Running condition has been False since, whether or not Preparing
	// was written (a quick start does not write it, preparingDelay).
	TakenAt *time.Time
	// ShutdownBy, if set, is when the agent kills a guest it asked to
	// power off (a stop or a restart) that has not done so yet.
	ShutdownBy *time.Time
	// Failure, if set, is why it does not run as asked.
	Failure *vmFailure
	// RestartCount is status.restartCount to report.
	RestartCount int
	// MigratedFrom, if set, is the host the VM just moved live from
	// (migrate.go): its Migrated condition turns True in the same write
	// that makes this host its own.
	MigratedFrom string
}

// vmStatus is the status the agent reports for vm in state s: the
// fields and conditions it owns set from s, so that phase, conditions
// and fields agree (checkVMStatus says how); other writers' conditions
// (Scheduled, ResolvedRefs) are kept as they are.
func vmStatus(vm *api.VirtualMachine, s vmState, host, consoleLog string, now time.Time) api.VirtualMachineStatus {
	st := vm.Status
	st.Conditions = slices.Clone(vm.Status.Conditions)
	st.Host, st.ObservedGeneration, st.RestartCount = host, vm.Metadata.Generation, s.RestartCount
	st.Migration = nil // a VM this host reports is not moving here any more
	asked := vm.Spec.PowerState
	var phase string
	var running, ready api.Condition
	set := func(c *api.Condition, ok bool, reason, msg string) {
		*c = api.Condition{Status: api.ConditionFalse, Reason: reason, Message: msg}
		if ok {
			c.Status = api.ConditionTrue
		}
	}
	if s.Running {
		st.PID, st.Accelerator, st.ConsoleLog = s.Info.PID, s.Info.Accelerator, consoleLog
		switch {
		case s.StartedAt != nil:
			st.StartedAt = s.StartedAt
		case st.StartedAt == nil && !s.Info.StartedAt.IsZero():
			t := s.Info.StartedAt
			st.StartedAt = &t
		}
		st.FirstOutputAt = s.FirstOutputAt
		switch {
		case s.Info.State == compute.Paused:
			phase = api.VMPaused
			set(&running, false, api.ReasonVMPaused, "QEMU runs with the guest's CPUs paused")
			if asked == api.PowerPaused {
				set(&ready, true, api.ReasonVMPaused, "paused as asked (spec.powerState Paused)")
			} else {
				set(&ready, false, api.ReasonVMPaused, "paused; resuming it (spec.powerState "+asked+")")
			}
		case s.ShutdownBy != nil:
			// The phase stays what it was (the guest runs until it is
			// gone); Ready says what the agent waits for, and until when.
			phase = api.VMStarting
			if st.FirstOutputAt != nil {
				phase = api.VMRunning
			}
			set(&running, st.FirstOutputAt != nil, api.ReasonGuestOutput, "QEMU runs and the guest writes to its console")
			if st.FirstOutputAt == nil {
				set(&running, false, api.ReasonBooting, "QEMU runs; waiting for the guest's first console output")
			}
			set(&ready, false, api.ReasonShuttingDown, fmt.Sprintf(
				"asked the guest to power off (ACPI power button); QEMU is killed at %s if it has not (a guest still booting may not listen yet)",
				s.ShutdownBy.UTC().Format(time.RFC3339)))
		case st.FirstOutputAt != nil:
			phase = api.VMRunning
			set(&running, true, api.ReasonGuestOutput, "QEMU runs and the guest writes to its console")
			set(&ready, asked == api.PowerRunning, api.ReasonVMRunning, "running as asked")
			if asked != api.PowerRunning {
				ready.Message = "running; spec.powerState is " + asked
			}
		default:
			phase = api.VMStarting
			set(&running, false, api.ReasonBooting, "QEMU runs; waiting for the guest's first console output")
			set(&ready, false, api.ReasonBooting, "booting: waiting for the guest's first console output")
		}
	} else {
		st.PID, st.Accelerator, st.StartedAt, st.FirstOutputAt = 0, "", nil, nil
		switch {
		case s.Failure != nil:
			phase = api.VMFailed
			switch {
			case s.Failure.Wait:
				phase = api.VMStarting
			case s.Failure.Reason == api.ReasonGuestShutdown:
				// Not a failure: the guest powered itself off, and its
				// restart policy leaves it so.
				phase = api.VMStopped
			}
			set(&running, false, s.Failure.Reason, s.Failure.Message)
			set(&ready, false, s.Failure.Reason, s.Failure.Message)
		case asked == api.PowerStopped:
			phase = api.VMStopped
			set(&running, false, api.ReasonVMStopped, "stopped as asked (spec.powerState Stopped)")
			set(&ready, true, api.ReasonVMStopped, "stopped as asked (spec.powerState Stopped)")
		default:
			// About to start, or between a shutdown and the start.
			phase = api.VMStarting
			set(&running, false, api.ReasonPreparing, "preparing disks, boot files and the cloud-init seed")
			set(&ready, false, api.ReasonPreparing, "preparing disks, boot files and the cloud-init seed")
		}
	}
	st.Phase = phase
	running.Type, ready.Type = api.ConditionRunning, api.ConditionReady
	runningAt := now
	if s.TakenAt != nil && running.Status == api.ConditionFalse {
		runningAt = *s.TakenAt
	}
	st.SetCondition(running, runningAt)
	st.SetCondition(ready, now)
	if s.MigratedFrom != "" {
		st.SetCondition(api.Condition{Type: api.ConditionMigrated, Status: api.ConditionTrue, Reason: api.ReasonMigrated,
			Message: "moved live from " + s.MigratedFrom, ObservedGeneration: vm.Metadata.Generation}, now)
	}
	return st
}

// checkVMStatus says how a VM status breaks the rule that its phase,
// conditions and fields agree, or "" when they do: Running is True
// exactly in phase Running; Ready is True exactly when the phase is what
// spec.powerState asks; a VM with a process (Starting while booting,
// Running, Paused) has a pid and a start time, one without (Stopped,
// Failed, Starting while preparing) has neither, nor a first output; a
// Running VM has written to its console; a Failed one says why in both
// conditions.
func checkVMStatus(powerState string, st api.VirtualMachineStatus) string {
	running, ready := st.Condition(api.ConditionRunning), st.Condition(api.ConditionReady)
	if running == nil || ready == nil {
		return "the Running or Ready condition is missing"
	}
	if (running.Status == api.ConditionTrue) != (st.Phase == api.VMRunning) {
		return fmt.Sprintf("phase %s with Running %s", st.Phase, running.Status)
	}
	asExpected := map[string]string{api.PowerRunning: api.VMRunning, api.PowerPaused: api.VMPaused, api.PowerStopped: api.VMStopped}[powerState] == st.Phase
	if (ready.Status == api.ConditionTrue) != asExpected {
		return fmt.Sprintf("phase %s with spec.powerState %s, but Ready %s", st.Phase, powerState, ready.Status)
	}
	hasProcess := st.Phase == api.VMRunning || st.Phase == api.VMPaused || (st.Phase == api.VMStarting && running.Reason == api.ReasonBooting)
	switch {
	case hasProcess && (st.PID == 0 || st.StartedAt == nil):
		return fmt.Sprintf("phase %s (%s) without a pid or start time", st.Phase, running.Reason)
	case !hasProcess && (st.PID != 0 || st.StartedAt != nil || st.FirstOutputAt != nil):
		return fmt.Sprintf("phase %s (%s) with pid %d, startedAt %v, firstOutputAt %v", st.Phase, running.Reason, st.PID, st.StartedAt, st.FirstOutputAt)
	case st.Phase == api.VMRunning && st.FirstOutputAt == nil:
		return "phase Running without a first output"
	case st.Phase == api.VMFailed && (ready.Reason != running.Reason || ready.Message == ""):
		return fmt.Sprintf("phase Failed with Ready %s/%q and Running %s", ready.Reason, ready.Message, running.Reason)
	}
	return ""
}

// announcePreparing says whether a start should first report that the
// agent prepares the VM (its downloads and clones may take a while, and
// the moment is the end of the control plane's share of create→Running):
// not when it says so already, nor when an earlier try failed or waits,
// so that retries write nothing until something changes.
func announcePreparing(st api.VirtualMachineStatus) bool {
	if st.Phase == api.VMFailed {
		return false
	}
	c := st.Condition(api.ConditionRunning)
	if c == nil || st.Phase != api.VMStarting {
		return true
	}
	return c.Reason == api.ReasonBooting
}

// failureEvent says whether a status change is a failure worth a Warning
// event: the Ready condition turned False with a failure (not the steps
// of a start, a pause or a stop) whose reason or message differs from
// what it said before, so each distinct failure is told once, not at
// every retry.
func failureEvent(old, cur api.VirtualMachineStatus) (reason, msg string, ok bool) {
	c := cur.Condition(api.ConditionReady)
	if c == nil || c.Status != api.ConditionFalse {
		return "", "", false
	}
	switch c.Reason {
	case api.ReasonPreparing, api.ReasonBooting, api.ReasonVMPaused, api.ReasonVMStopped, api.ReasonCrashed, api.ReasonGuestShutdown, api.ReasonShuttingDown:
		return "", "", false // steps, and crashes and power-offs, whose events carryOut says
	}
	if o := old.Condition(api.ConditionReady); o != nil && o.Status == c.Status && o.Reason == c.Reason && o.Message == c.Message {
		return "", "", false
	}
	return c.Reason, c.Message, true
}
