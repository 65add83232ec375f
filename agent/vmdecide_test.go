package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/compute"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(d time.Duration) *time.Time { t := t0.Add(d); return &t }

// testVM is a VM as the API defaults it, placed on h1.
func testVM(change ...func(*api.VirtualMachine)) *api.VirtualMachine {
	vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
		Metadata: api.ObjectMeta{Name: "web", Tenant: "demo", UID: "u1", Generation: 3},
		Spec: api.VirtualMachineSpec{Host: "h1", CPUs: 2, Memory: 512 << 20,
			Disks: []api.VMDisk{{Image: "debian", Size: 1 << 30}}}}
	vm.Spec.Default()
	for _, c := range change {
		c(vm)
	}
	return vm
}

// started is what a VM like testVM was started with.
func started(vm *api.VirtualMachine) *startedSpec {
	return &startedSpec{Spec: compute.Spec{CPUs: vm.Spec.CPUs, MemoryMiB: int64(vm.Spec.Memory >> 20), Firmware: vm.Spec.Firmware,
		Boot: compute.Boot{From: bootFrom(vm), Cmdline: vm.Spec.Boot.Cmdline}, Disks: make([]compute.Disk, len(vm.Spec.Disks))},
		VMDisks: vm.Spec.Disks, RestartRequested: vm.Spec.RestartRequested}
}

func runningInfo() compute.Info {
	return compute.Info{PID: 4242, State: compute.Running, StartedAt: t0, Accelerator: "tcg"}
}

// TestDecide: what the agent does with a VM, from its spec, what it
// recorded at the start, and what runs.
func TestDecide(t *testing.T) {
	now := t0.Add(time.Hour)
	vm := testVM()
	ran := func(d time.Duration) func(*api.VirtualMachine) {
		return func(vm *api.VirtualMachine) { vm.Status.StartedAt = at(time.Hour - d) }
	}
	policy := func(p string) func(*api.VirtualMachine) {
		return func(vm *api.VirtualMachine) { vm.Spec.RestartPolicy = p }
	}
	power := func(p string) func(*api.VirtualMachine) {
		return func(vm *api.VirtualMachine) { vm.Spec.PowerState = p }
	}
	givenUp := func(vm *api.VirtualMachine) {
		vm.Status.Phase = api.VMFailed
		vm.Status.SetCondition(api.Condition{Type: api.ConditionReady, Status: api.ConditionFalse, Reason: api.ReasonCrashed, Message: "QEMU exited"}, t0)
	}
	asked := func(d time.Duration) func(*api.VirtualMachine) {
		return func(vm *api.VirtualMachine) { vm.Spec.RestartRequested = at(d) }
	}
	paused := runningInfo()
	paused.State = compute.Paused
	off := runningInfo() // QEMU keeps a guest that powered off, paused
	off.State, off.Status = compute.Paused, compute.StatusShutdown
	offRunning := vmFacts{Running: true, Info: off, Marker: true, Started: started(vm)}
	panicked := off // QEMU keeps a guest whose kernel panicked too
	panicked.Status = compute.StatusGuestPanicked
	panickedRunning := vmFacts{Running: true, Info: panicked, Marker: true, Started: started(vm)}
	// The status a power-off left a VM in under OnFailure or Never.
	leftOff := func(vm *api.VirtualMachine) {
		vm.Status.Phase = api.VMStopped
		vm.Status.SetCondition(api.Condition{Type: api.ConditionReady, Status: api.ConditionFalse, Reason: api.ReasonGuestShutdown, Message: "the guest powered itself off"}, t0)
	}

	for _, tc := range []struct {
		name string
		vm   *api.VirtualMachine
		f    vmFacts
		want vmPlan
	}{
		{"a new VM starts", vm, vmFacts{}, vmPlan{Action: start}},
		{"adopt what runs after an agent restart", vm,
			vmFacts{Running: true, Info: runningInfo(), Marker: true, Started: started(vm)}, vmPlan{Action: keep}},
		{"adopt a VM an older agent started (nothing recorded)", vm,
			vmFacts{Running: true, Info: runningInfo()}, vmPlan{Action: keep}},

		{"crash, policy Always: restart at once, counted", testVM(ran(time.Hour)),
			vmFacts{Marker: true, Started: started(vm)},
			vmPlan{Action: start, Crashed: true, Count: true, Crashes: 1}},
		{"crash, policy OnFailure: restart, counted (a crash is a failure)", testVM(policy(api.RestartOnFailure), ran(time.Hour)),
			vmFacts{Marker: true}, vmPlan{Action: start, Crashed: true, Count: true, Crashes: 1}},
		{"crash, policy Never: leave it Failed", testVM(policy(api.RestartNever)),
			vmFacts{Marker: true}, vmPlan{Action: giveUp, Crashed: true}},
		{"given up (policy Never): stays so", testVM(policy(api.RestartNever), givenUp),
			vmFacts{Started: started(vm)}, vmPlan{Action: keep}},
		{"given up, then a restart asked for: starts, not counted", testVM(policy(api.RestartNever), givenUp, asked(0)),
			vmFacts{Started: started(vm)}, vmPlan{Action: start}},
		{"crash while stopped on purpose is no crash", testVM(power(api.PowerStopped)),
			vmFacts{Marker: true}, vmPlan{Action: keep}},

		{"second quick crash: wait 10s", testVM(ran(time.Minute)),
			vmFacts{Marker: true, Crashes: 1}, vmPlan{Action: wait, Crashed: true, Count: true, Crashes: 2, RestartIn: 10 * time.Second}},
		{"fourth quick crash: wait 40s", testVM(ran(time.Minute)),
			vmFacts{Marker: true, Crashes: 3}, vmPlan{Action: wait, Crashed: true, Count: true, Crashes: 4, RestartIn: 40 * time.Second}},
		{"many quick crashes: capped at 5m", testVM(ran(time.Second)),
			vmFacts{Marker: true, Crashes: 30}, vmPlan{Action: wait, Crashed: true, Count: true, Crashes: 31, RestartIn: 5 * time.Minute}},
		{"a crash after a stable run starts a new series", testVM(ran(stableRun)),
			vmFacts{Marker: true, Crashes: 7}, vmPlan{Action: start, Crashed: true, Count: true, Crashes: 1}},
		{"waiting out a crash loop", vm,
			vmFacts{Crashes: 2, NotBefore: now.Add(7 * time.Second)}, vmPlan{Action: wait, Crashes: 2, RestartIn: 7 * time.Second}},
		{"a crash loop's wait is over: start, not counted again", vm,
			vmFacts{Crashes: 2, NotBefore: now.Add(-time.Second)}, vmPlan{Action: start, Crashes: 2}},

		{"guest powered off, policy Always: a fresh QEMU at once, counted", testVM(ran(time.Hour)),
			offRunning, vmPlan{Action: start, Crashed: true, Count: true, End: true, GuestOff: true, Crashes: 1}},
		{"guest powered off, policy OnFailure: ended and left stopped, not counted", testVM(policy(api.RestartOnFailure), ran(time.Hour)),
			offRunning, vmPlan{Action: giveUp, Crashed: true, End: true, GuestOff: true}},
		{"guest powered off, policy Never: ended and left stopped", testVM(policy(api.RestartNever), ran(time.Hour)),
			offRunning, vmPlan{Action: giveUp, Crashed: true, End: true, GuestOff: true}},
		{"guest powered off in a VM an older agent started (adopted, nothing recorded)", testVM(policy(api.RestartOnFailure)),
			vmFacts{Running: true, Info: off}, vmPlan{Action: giveUp, Crashed: true, End: true, GuestOff: true}},
		{"guest powered off while paused is asked: still off", testVM(policy(api.RestartOnFailure), power(api.PowerPaused)),
			offRunning, vmPlan{Action: giveUp, Crashed: true, End: true, GuestOff: true}},
		{"guest powers off soon after each start, policy Always: backs off as a crash loop", testVM(ran(time.Minute)),
			vmFacts{Running: true, Info: off, Marker: true, Started: started(vm), Crashes: 2},
			vmPlan{Action: wait, Crashed: true, Count: true, End: true, GuestOff: true, Crashes: 3, RestartIn: 20 * time.Second}},
		{"guest powered off, asked to stop: a stop", testVM(power(api.PowerStopped), policy(api.RestartOnFailure)),
			offRunning, vmPlan{Action: stop}},
		{"guest powered off as a restart is asked for: the restart, not counted", testVM(asked(0), policy(api.RestartNever)),
			offRunning, vmPlan{Action: restart, Why: "restarting as asked (spec.restartRequested 2026-01-02T03:04:05Z)"}},
		{"guest kernel panicked, policy OnFailure: a crash, restarted, counted", testVM(policy(api.RestartOnFailure), ran(time.Hour)),
			panickedRunning, vmPlan{Action: start, Crashed: true, Count: true, End: true, Crashes: 1}},
		{"guest kernel panicked, policy Never: ended and left Failed", testVM(policy(api.RestartNever), ran(time.Hour)),
			panickedRunning, vmPlan{Action: giveUp, Crashed: true, End: true}},
		{"guest kernel panicked in a VM adopted from an older agent: a crash", testVM(policy(api.RestartOnFailure), ran(time.Hour)),
			vmFacts{Running: true, Info: panicked}, vmPlan{Action: start, Crashed: true, Count: true, End: true, Crashes: 1}},
		{"left off (policy OnFailure): stays so at every resync", testVM(policy(api.RestartOnFailure), leftOff),
			vmFacts{Started: started(vm)}, vmPlan{Action: keep}},
		{"left off (policy Never): stays so", testVM(policy(api.RestartNever), leftOff),
			vmFacts{Started: started(vm)}, vmPlan{Action: keep}},
		{"left off, then a restart asked for: starts, not counted", testVM(policy(api.RestartOnFailure), leftOff, asked(0)),
			vmFacts{Started: started(vm)}, vmPlan{Action: start}},
		{"left off, then the policy changed to Always: starts", testVM(leftOff),
			vmFacts{Started: started(vm)}, vmPlan{Action: start}},
		{"left off, then a changed spec: starts", testVM(policy(api.RestartOnFailure), leftOff, func(vm *api.VirtualMachine) { vm.Spec.CPUs = 4 }),
			vmFacts{Started: started(vm)}, vmPlan{Action: start}},
		{"a crash under OnFailure is not held by an old power-off", testVM(policy(api.RestartOnFailure), ran(time.Hour), leftOff),
			vmFacts{Marker: true, Started: started(vm)}, vmPlan{Action: start, Crashed: true, Count: true, Crashes: 1}},

		{"restart asked for (spec.restartRequested): not counted", testVM(asked(0)),
			vmFacts{Running: true, Info: runningInfo(), Marker: true, Started: started(vm)},
			vmPlan{Action: restart, Why: "restarting as asked (spec.restartRequested 2026-01-02T03:04:05Z)"}},
		{"the same restart request is served once", testVM(asked(0)),
			vmFacts{Running: true, Info: runningInfo(), Marker: true, Started: started(testVM(asked(0)))}, vmPlan{Action: keep}},
		{"more CPUs: restart", testVM(func(vm *api.VirtualMachine) { vm.Spec.CPUs = 4 }),
			vmFacts{Running: true, Info: runningInfo(), Marker: true, Started: started(vm)},
			vmPlan{Action: restart, Why: "restarting to apply a changed spec (generation 3)"}},
		{"a volume attached: restart", testVM(func(vm *api.VirtualMachine) {
			vm.Spec.Disks = append(vm.Spec.Disks, api.VMDisk{Volume: "data"})
			vm.Spec.Default()
		}),
			vmFacts{Running: true, Info: runningInfo(), Marker: true, Started: started(vm)},
			vmPlan{Action: restart, Why: "restarting to apply a changed spec (generation 3)"}},
		{"a label or a NIC is not hardware the process must restart for", testVM(func(vm *api.VirtualMachine) {
			vm.Metadata.Labels = map[string]string{"a": "b"}
		}), vmFacts{Running: true, Info: runningInfo(), Marker: true, Started: started(vm)}, vmPlan{Action: keep}},

		{"stop a running VM", testVM(power(api.PowerStopped)),
			vmFacts{Running: true, Info: runningInfo(), Marker: true}, vmPlan{Action: stop}},
		{"a stopped VM stays stopped", testVM(power(api.PowerStopped)), vmFacts{}, vmPlan{Action: keep}},
		{"pause", testVM(power(api.PowerPaused)),
			vmFacts{Running: true, Info: runningInfo(), Marker: true, Started: started(vm)}, vmPlan{Action: pause}},
		{"paused as asked", testVM(power(api.PowerPaused)),
			vmFacts{Running: true, Info: paused, Marker: true, Started: started(vm)}, vmPlan{Action: keep}},
		{"resume", vm, vmFacts{Running: true, Info: paused, Marker: true, Started: started(vm)}, vmPlan{Action: resume}},
		{"a paused VM asked to start is started (then paused)", testVM(power(api.PowerPaused)), vmFacts{}, vmPlan{Action: start}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f
			f.Now = now
			got := decide(tc.vm, f)
			want := tc.want
			if want.Why == "" {
				got.Why = "" // the crash messages are checked below
			}
			if got != want {
				t.Errorf("decide = %+v\nwant      %+v", got, want)
			}
		})
	}
}

// TestCrashMessages: a crash says what happens next, with the policy and
// the count.
func TestCrashMessages(t *testing.T) {
	vm := testVM(func(vm *api.VirtualMachine) { vm.Status.RestartCount = 2; vm.Status.StartedAt = at(0) })
	for _, tc := range []struct {
		f    vmFacts
		want string
	}{
		{vmFacts{Marker: true, Now: t0.Add(time.Hour)}, "QEMU exited unexpectedly; restarting it (restart policy Always, restart 3)"},
		{vmFacts{Marker: true, Now: t0.Add(time.Minute), Crashes: 1}, "QEMU exited unexpectedly, 2 times in a row within 10m0s of starting; starting it again in 10s (restart policy Always, restart 3)"},
	} {
		if got := decide(vm, tc.f).Why; got != tc.want {
			t.Errorf("Why = %q\nwant  %q", got, tc.want)
		}
	}
	never := testVM(func(vm *api.VirtualMachine) { vm.Spec.RestartPolicy = api.RestartNever })
	if got := decide(never, vmFacts{Marker: true}).Why; !strings.Contains(got, "restart policy Never") {
		t.Errorf("Why = %q, want the policy named", got)
	}

	// A power-off says so, not that QEMU crashed.
	off := runningInfo()
	off.State, off.Status = compute.Paused, compute.StatusShutdown
	for _, tc := range []struct {
		policy string
		f      vmFacts
		want   string
	}{
		{api.RestartAlways, vmFacts{Running: true, Info: off, Marker: true, Now: t0.Add(time.Hour)},
			"the guest powered itself off; restarting it (restart policy Always, restart 3)"},
		{api.RestartAlways, vmFacts{Running: true, Info: off, Marker: true, Now: t0.Add(time.Minute), Crashes: 1},
			"the guest powered itself off, 2 times in a row within 10m0s of starting; starting it again in 10s (restart policy Always, restart 3)"},
		{api.RestartOnFailure, vmFacts{Running: true, Info: off, Marker: true, Now: t0.Add(time.Hour)},
			"the guest powered itself off; not restarting it (restart policy OnFailure)"},
		{api.RestartOnFailure, vmFacts{Running: true, Info: compute.Info{State: compute.Paused, Status: compute.StatusGuestPanicked}, Marker: true, Now: t0.Add(time.Hour)},
			"the guest's kernel panicked; restarting it (restart policy OnFailure, restart 3)"},
		// Not shown as Paused and resumed for ever: "cont" cannot run such
		// a guest again.
		{api.RestartOnFailure, vmFacts{Running: true, Info: compute.Info{State: compute.Paused, Status: compute.StatusInternalError}, Marker: true, Now: t0.Add(time.Hour)},
			"QEMU stopped the guest with an internal error (the hypervisor could not run it); restarting it (restart policy OnFailure, restart 3)"},
	} {
		vm := testVM(func(vm *api.VirtualMachine) {
			vm.Status.RestartCount, vm.Status.StartedAt, vm.Spec.RestartPolicy = 2, at(0), tc.policy
		})
		if got := decide(vm, tc.f).Why; got != tc.want {
			t.Errorf("Why = %q\nwant  %q", got, tc.want)
		}
	}
}

// TestCrashBackoff: exponential from 10s, capped at 5 minutes.
func TestCrashBackoff(t *testing.T) {
	for n, want := range []time.Duration{0, 0, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second,
		160 * time.Second, 5 * time.Minute, 5 * time.Minute} {
		if got := crashBackoff(n); got != want {
			t.Errorf("crashBackoff(%d) = %v, want %v", n, got, want)
		}
	}
	if got := crashBackoff(1000); got != 5*time.Minute {
		t.Errorf("crashBackoff(1000) = %v, want the cap", got)
	}
}

// statusCase is one state a VM's status is computed for.
type statusCase struct {
	name  string
	power string
	s     vmState
	// want: phase, Running's status and reason, Ready's status and
	// reason, and whether a pid is reported.
	phase, running, ready string
	pid                   bool
}

func statusCases() []statusCase {
	info := runningInfo()
	paused := info
	paused.State = compute.Paused
	notFound := &vmFailure{Reason: api.ReasonImageNotFound, Message: `spec.disks[0].image: image "x" does not exist in tenant demo or among the shared images`}
	return []statusCase{
		{"preparing", api.PowerRunning, vmState{Preparing: true}, api.VMStarting, "False/Preparing", "False/Preparing", false},
		{"booting", api.PowerRunning, vmState{Running: true, Info: info, StartedAt: at(0)}, api.VMStarting, "False/Booting", "False/Booting", true},
		{"running", api.PowerRunning, vmState{Running: true, Info: info, StartedAt: at(0), FirstOutputAt: at(time.Second)}, api.VMRunning, "True/GuestOutput", "True/Running", true},
		{"adopted (start time from the driver)", api.PowerRunning, vmState{Running: true, Info: info, FirstOutputAt: at(time.Second)}, api.VMRunning, "True/GuestOutput", "True/Running", true},
		{"paused as asked", api.PowerPaused, vmState{Running: true, Info: paused, StartedAt: at(0), FirstOutputAt: at(time.Second)}, api.VMPaused, "False/Paused", "True/Paused", true},
		{"paused, not asked", api.PowerRunning, vmState{Running: true, Info: paused, StartedAt: at(0)}, api.VMPaused, "False/Paused", "False/Paused", true},
		{"running, asked to pause (before the pause)", api.PowerPaused, vmState{Running: true, Info: info, StartedAt: at(0), FirstOutputAt: at(time.Second)}, api.VMRunning, "True/GuestOutput", "False/Running", true},
		{"asked to power off (a stop)", api.PowerStopped, vmState{Running: true, Info: info, StartedAt: at(0), FirstOutputAt: at(time.Second), ShutdownBy: at(time.Minute)},
			api.VMRunning, "True/GuestOutput", "False/ShuttingDown", true},
		{"asked to power off while booting (a restart)", api.PowerRunning, vmState{Running: true, Info: info, StartedAt: at(0), ShutdownBy: at(time.Minute)},
			api.VMStarting, "False/Booting", "False/ShuttingDown", true},
		{"stopped", api.PowerStopped, vmState{}, api.VMStopped, "False/Stopped", "True/Stopped", false},
		{"image not found", api.PowerRunning, vmState{Failure: notFound}, api.VMFailed, "False/ImageNotFound", "False/ImageNotFound", false},
		{"waiting for a volume", api.PowerRunning, vmState{Failure: &vmFailure{Reason: api.ReasonVolumeNotReady, Message: "spec.disks[1].volume: volume data is not made on this host yet", Wait: true}},
			api.VMStarting, "False/VolumeNotReady", "False/VolumeNotReady", false},
		{"start failed", api.PowerRunning, vmState{Failure: &vmFailure{Reason: api.ReasonStartFailed, Message: "qemu exited during start"}}, api.VMFailed, "False/StartFailed", "False/StartFailed", false},
		{"crashed (policy Never)", api.PowerRunning, vmState{Failure: &vmFailure{Reason: api.ReasonCrashed, Message: "QEMU exited unexpectedly"}, RestartCount: 1}, api.VMFailed, "False/Crashed", "False/Crashed", false},
		{"between a shutdown and the start", api.PowerRunning, vmState{}, api.VMStarting, "False/Preparing", "False/Preparing", false},
		{"powered itself off (policy OnFailure or Never)", api.PowerRunning, vmState{Failure: &vmFailure{Reason: api.ReasonGuestShutdown, Message: "the guest powered itself off; not restarting it (restart policy OnFailure)"}},
			api.VMStopped, "False/GuestShutdown", "False/GuestShutdown", false},
		{"powered itself off again soon (policy Always, waiting)", api.PowerRunning, vmState{Failure: &vmFailure{Reason: api.ReasonGuestShutdown, Message: "the guest powered itself off, 2 times in a row", Wait: true}, RestartCount: 2},
			api.VMStarting, "False/GuestShutdown", "False/GuestShutdown", false},
	}
}

func condString(st api.VirtualMachineStatus, typ string) string {
	c := st.Condition(typ)
	if c == nil {
		return "none"
	}
	return string(c.Status) + "/" + c.Reason
}

// TestVMStatus: the status reported for each state, which keeps other
// writers' conditions and agrees with itself (checkVMStatus).
func TestVMStatus(t *testing.T) {
	for _, tc := range statusCases() {
		t.Run(tc.name, func(t *testing.T) {
			vm := testVM(func(vm *api.VirtualMachine) {
				vm.Spec.PowerState = tc.power
				vm.Status.SetScheduled("h1", 1, t0)
				vm.Status.SetCondition(api.ResolvedCondition(nil), t0)
			})
			st := vmStatus(vm, tc.s, "h1", "/var/lib/hearth-agent/vms/u1/console.log", t0.Add(time.Minute))
			got := fmt.Sprintf("%s %s %s pid=%v", st.Phase, condString(st, api.ConditionRunning), condString(st, api.ConditionReady), st.PID != 0)
			want := fmt.Sprintf("%s %s %s pid=%v", tc.phase, tc.running, tc.ready, tc.pid)
			if got != want {
				t.Errorf("status %s\nwant   %s", got, want)
			}
			if why := checkVMStatus(tc.power, st); why != "" {
				t.Errorf("the status disagrees with itself: %s\n%+v", why, st)
			}
			if st.Condition(api.ConditionScheduled) == nil || st.Condition(api.ConditionResolvedRefs) == nil {
				t.Errorf("other writers' conditions lost: %+v", st.Conditions)
			}
			if st.Host != "h1" || st.ObservedGeneration != 3 || st.RestartCount != tc.s.RestartCount {
				t.Errorf("host %q, observedGeneration %d, restartCount %d", st.Host, st.ObservedGeneration, st.RestartCount)
			}
			if tc.s.Failure != nil {
				if c := st.Condition(api.ConditionReady); c.Message != tc.s.Failure.Message {
					t.Errorf("Ready says %q, want %q", c.Message, tc.s.Failure.Message)
				}
			}
		})
	}
}

// TestVMStatusAfterEveryTransition: going from every state to every
// other, the status agrees with itself: no pid or Running=True left from
// the state before (a stopped VM that still looked alive), no condition
// of the step before kept.
func TestVMStatusAfterEveryTransition(t *testing.T) {
	cases := statusCases()
	for _, from := range cases {
		for _, to := range cases {
			vm := testVM(func(vm *api.VirtualMachine) { vm.Spec.PowerState = from.power })
			vm.Status = vmStatus(vm, from.s, "h1", "console.log", t0)
			vm.Spec.PowerState = to.power
			st := vmStatus(vm, to.s, "h1", "console.log", t0.Add(time.Minute))
			if why := checkVMStatus(to.power, st); why != "" {
				t.Errorf("%s → %s: %s", from.name, to.name, why)
			}
			if st.Phase != to.phase {
				t.Errorf("%s → %s: phase %s, want %s", from.name, to.name, st.Phase, to.phase)
			}
			if n := len(st.Conditions); n != 2 {
				t.Errorf("%s → %s: %d conditions, want Running and Ready once each: %+v", from.name, to.name, n, st.Conditions)
			}
		}
	}
}

// TestCheckVMStatus: the rule catches what issue 9 found (a stopped VM
// with Running True and its pid set) and its kin.
func TestCheckVMStatus(t *testing.T) {
	cond := func(typ, status, reason string) api.Condition {
		return api.Condition{Type: typ, Status: api.ConditionStatus(status), Reason: reason, Message: "m"}
	}
	for _, tc := range []struct {
		name  string
		power string
		st    api.VirtualMachineStatus
	}{
		{"stopped, Running still True, pid set", api.PowerStopped, api.VirtualMachineStatus{CommonStatus: api.CommonStatus{Phase: api.VMStopped,
			Conditions: []api.Condition{cond(api.ConditionRunning, "True", api.ReasonGuestOutput), cond(api.ConditionReady, "True", api.ReasonVMStopped)}}, PID: 42}},
		{"stopped with a pid", api.PowerStopped, api.VirtualMachineStatus{CommonStatus: api.CommonStatus{Phase: api.VMStopped,
			Conditions: []api.Condition{cond(api.ConditionRunning, "False", api.ReasonVMStopped), cond(api.ConditionReady, "True", api.ReasonVMStopped)}}, PID: 42}},
		{"running without a pid", api.PowerRunning, api.VirtualMachineStatus{CommonStatus: api.CommonStatus{Phase: api.VMRunning,
			Conditions: []api.Condition{cond(api.ConditionRunning, "True", api.ReasonGuestOutput), cond(api.ConditionReady, "True", api.ReasonVMRunning)}}, FirstOutputAt: at(0)}},
		{"failed but Ready", api.PowerRunning, api.VirtualMachineStatus{CommonStatus: api.CommonStatus{Phase: api.VMFailed,
			Conditions: []api.Condition{cond(api.ConditionRunning, "False", api.ReasonStartFailed), cond(api.ConditionReady, "True", api.ReasonStartFailed)}}}},
		{"no conditions", api.PowerRunning, api.VirtualMachineStatus{CommonStatus: api.CommonStatus{Phase: api.VMStarting}}},
	} {
		if why := checkVMStatus(tc.power, tc.st); why == "" {
			t.Errorf("%s: checkVMStatus found nothing wrong", tc.name)
		}
	}
}

// TestFailureEvents: a Warning event for each distinct failure, none for
// a retry that fails the same way, nor for the steps of a start.
func TestFailureEvents(t *testing.T) {
	vm := testVM()
	missing := vmState{Failure: &vmFailure{Reason: api.ReasonImageNotFound, Message: `image "x" does not exist`}}
	steps := []struct {
		s    vmState
		want string
	}{
		{vmState{Preparing: true}, ""},
		{missing, "ImageNotFound"},
		{missing, ""}, // a retry
		{vmState{Failure: &vmFailure{Reason: api.ReasonImageNotFound, Message: `image "y" does not exist`}}, "ImageNotFound"},
		{vmState{Failure: &vmFailure{Reason: api.ReasonStartFailed, Message: "qemu said no"}}, "StartFailed"},
		{vmState{Preparing: true}, ""},
		{vmState{Running: true, Info: runningInfo(), StartedAt: at(0)}, ""},
		{missing, "ImageNotFound"}, // failing again after a success is news
		// A power-off is not a failure: carryOut says it in a Normal event.
		{vmState{Failure: &vmFailure{Reason: api.ReasonGuestShutdown, Message: "the guest powered itself off"}}, ""},
	}
	for i, step := range steps {
		st := vmStatus(vm, step.s, "h1", "console.log", t0.Add(time.Duration(i)*time.Second))
		reason, _, ok := failureEvent(vm.Status, st)
		if !ok {
			reason = ""
		}
		if reason != step.want {
			t.Errorf("step %d: event %q, want %q", i, reason, step.want)
		}
		vm.Status = st
	}
}

// TestAnnouncePreparing: a start says Preparing first, unless the status
// says so already or an earlier try failed or waits (a retry writes
// nothing new).
func TestAnnouncePreparing(t *testing.T) {
	vm := testVM()
	for _, tc := range []struct {
		from vmState
		want bool
	}{
		{vmState{Running: true, Info: runningInfo(), StartedAt: at(0), FirstOutputAt: at(0)}, true},
		{vmState{Running: true, Info: runningInfo(), StartedAt: at(0)}, true},
		{vmState{Preparing: true}, false},
		{vmState{Failure: &vmFailure{Reason: api.ReasonImageNotFound, Message: "m"}}, false},
		{vmState{Failure: &vmFailure{Reason: api.ReasonVolumeNotReady, Message: "m", Wait: true}}, false},
	} {
		st := vmStatus(vm, tc.from, "h1", "console.log", t0)
		if got := announcePreparing(st); got != tc.want {
			t.Errorf("from %s/%s: announcePreparing = %v, want %v", st.Phase, condString(st, api.ConditionReady), got, tc.want)
		}
	}
	if !announcePreparing(api.VirtualMachineStatus{}) {
		t.Errorf("a new VM does not announce Preparing")
	}
}

// TestVMStatusMigrated: the write that makes a VM moved live this host's
// ends its migration and turns Migrated True, naming the host it came
// from, at its generation; a later report keeps the condition as it is.
func TestVMStatusMigrated(t *testing.T) {
	vm := testVM(func(vm *api.VirtualMachine) {
		vm.Status.Host, vm.Status.Phase = "h0", api.VMMigrating
		vm.Status.Migration = &api.VMMigration{From: "h0", Incoming: "tcp:10.0.0.1:4444"}
		vm.Status.SetCondition(api.Condition{Type: api.ConditionMigrated, Status: api.ConditionFalse, Reason: api.ReasonMigrationFailed,
			Message: "an earlier move failed", ObservedGeneration: 2}, t0)
	})
	started := t0
	s := vmState{Running: true, Info: compute.Info{State: compute.Running, PID: 42}, StartedAt: &started, FirstOutputAt: &started, MigratedFrom: "h0"}
	st := vmStatus(vm, s, "h1", "/c", t0.Add(time.Minute))
	c := st.Condition(api.ConditionMigrated)
	if st.Host != "h1" || st.Migration != nil || c == nil || c.Status != api.ConditionTrue || c.Reason != api.ReasonMigrated ||
		c.Message != "moved live from h0" || c.ObservedGeneration != vm.Metadata.Generation {
		t.Fatalf("host %q, migration %+v, Migrated %+v; want h1, none, True/Migrated from h0 at generation %d", st.Host, st.Migration, c, vm.Metadata.Generation)
	}
	vm.Status = st
	s.MigratedFrom = ""
	later := vmStatus(vm, s, "h1", "/c", t0.Add(2*time.Minute))
	if again := later.Condition(api.ConditionMigrated); again == nil || *again != *c {
		t.Errorf("a later report changed Migrated to %+v; want %+v", again, c)
	}
}

// TestTakenAt: a start's first status, written without Preparing before
// it (a quick start), says the VM stopped being Running when the agent
// took it up, not when the status was written: `hearth bench vms` times
// the agent's part from that moment.
func TestTakenAt(t *testing.T) {
	vm := testVM()
	for _, tc := range []struct {
		name string
		s    vmState
		want *time.Time
	}{
		{"booting", vmState{Running: true, Info: runningInfo(), StartedAt: at(2 * time.Second), TakenAt: at(time.Second)}, at(time.Second)},
		{"failed to prepare", vmState{Failure: &vmFailure{Reason: api.ReasonImageNotFound, Message: "m"}, TakenAt: at(time.Second)}, at(time.Second)},
		{"first output at once: Running since now", vmState{Running: true, Info: runningInfo(), StartedAt: at(2 * time.Second), FirstOutputAt: at(2 * time.Second), TakenAt: at(time.Second)}, at(3 * time.Second)},
		{"no start", vmState{Running: true, Info: runningInfo(), StartedAt: at(2 * time.Second)}, at(3 * time.Second)},
	} {
		st := vmStatus(vm, tc.s, "h1", "console.log", *at(3 * time.Second))
		c := st.Condition(api.ConditionRunning)
		if c == nil || c.LastTransitionTime == nil || !c.LastTransitionTime.Equal(*tc.want) {
			t.Errorf("%s: Running condition %+v, want it to have turned at %s", tc.name, c, tc.want)
		}
	}
}
