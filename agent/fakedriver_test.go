package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/compute/computetest"
	"hearth.dev/hearth/server/servertest"
)

// These tests run the agent for real against a real server, with VMs on
// compute/computetest's fake driver: the VM controller end to end, without
// root or QEMU. agent_test.go runs the same paths on real QEMU guests.

// fakeLab is a server (with its controllers) and one agent, h1, whose VMs
// are computetest's.
type fakeLab struct {
	env     *servertest.Env
	drv     *computetest.Driver
	dataDir string
	join    string
	cfg     func(*Config)
	// network is the name of the lab's Network.
	network string

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan error
}

func newFakeLab(t testing.TB, cfg func(*Config)) *fakeLab {
	t.Helper()
	env := servertest.Start(t)
	env.Tenant("lab")
	l := &fakeLab{env: env, drv: &computetest.Driver{}, dataDir: t.TempDir(), cfg: cfg,
		join: env.JoinToken(api.TokenRequest{TTL: "1h"}).Token}
	ctx := servertest.Ctx(t)
	env.Needs("VirtualMachine", "lab")
	l.network = servertest.Example("Network", "lab").GetMetadata().Name
	l.startAgent(t)
	t.Cleanup(l.stopAgent)
	servertest.Eventually(t, 30*time.Second, func() error {
		h, err := env.Admin.Get(ctx, "Host", "", "h1")
		if err != nil {
			return err
		}
		if h.CommonStatus().Phase != api.HostReady {
			return fmt.Errorf("host is %q", h.CommonStatus().Phase)
		}
		return nil
	})
	return l
}

func (l *fakeLab) startAgent(t testing.TB) {
	cfg := Config{Server: l.env.Server.URL(), JoinToken: l.join, CAFile: filepath.Join(l.env.DataDir, "ca.crt"),
		Name: "h1", DataDir: l.dataDir, Address: "127.0.0.1", Listen: fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t)),
		Driver: l.drv, ShutdownTimeout: 2 * time.Second, Resync: 2 * time.Second}
	if l.cfg != nil {
		l.cfg(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	l.mu.Lock()
	l.cancel, l.done = cancel, done
	l.mu.Unlock()
}

func (l *fakeLab) stopAgent() {
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.cancel = nil
	l.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// vm is a VM on h1 with disks, or without any: then it boots from the
// network, on a NIC of the lab's network.
func (l *fakeLab) vm(name string, disks ...api.VMDisk) *api.VirtualMachine {
	vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
		Metadata: api.ObjectMeta{Name: name, Tenant: "lab"},
		Spec:     api.VirtualMachineSpec{Host: "h1", CPUs: 1, Memory: 256 << 20, Disks: disks}}
	if len(disks) == 0 {
		vm.Spec.Boot.From = api.BootFromNetwork
		vm.Spec.NICs = []api.VMNIC{{Network: l.network}}
	}
	return vm
}

func (l *fakeLab) get(t testing.TB, name string) *api.VirtualMachine {
	t.Helper()
	o, err := l.env.Admin.Get(servertest.Ctx(t), "VirtualMachine", "lab", name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*api.VirtualMachine)
}

func (l *fakeLab) patchSpec(t *testing.T, name string, spec map[string]any) {
	t.Helper()
	if _, err := l.env.Admin.Patch(servertest.Ctx(t), "VirtualMachine", "lab", name, map[string]any{"spec": spec}, false); err != nil {
		t.Fatal(err)
	}
}

// wait waits until the VM's status satisfies ok, which says what is
// missing.
func (l *fakeLab) wait(t testing.TB, name string, ok func(*api.VirtualMachine) error) *api.VirtualMachine {
	t.Helper()
	var vm *api.VirtualMachine
	servertest.Eventually(t, 30*time.Second, func() error {
		vm = l.get(t, name)
		if err := ok(vm); err != nil {
			return fmt.Errorf("%v (phase %s, pid %d, conditions %+v)", err, vm.Status.Phase, vm.Status.PID, vm.Status.Conditions)
		}
		return nil
	})
	return vm
}

func phase(p string) func(*api.VirtualMachine) error {
	return func(vm *api.VirtualMachine) error {
		if vm.Status.Phase != p || vm.Status.ObservedGeneration != vm.Metadata.Generation {
			return fmt.Errorf("want phase %s for generation %d", p, vm.Metadata.Generation)
		}
		return nil
	}
}

// events returns the events about a VM, by reason.
func (l *fakeLab) events(t *testing.T, name string) map[string][]*api.Event {
	t.Helper()
	evs, _, err := l.env.Admin.List(servertest.Ctx(t), "Event", "lab", client.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*api.Event{}
	for _, o := range evs {
		e := o.(*api.Event)
		out[e.Spec.Reason] = append(out[e.Spec.Reason], e)
	}
	return out
}

// recordVersions watches a VM and keeps every version the server sends:
// each is one write of it.
type versions struct {
	mu   sync.Mutex
	seen []*api.VirtualMachine
}

func (l *fakeLab) recordVersions(t *testing.T, name string) *versions {
	v := &versions{}
	inf := client.NewInformer(l.env.Admin, "VirtualMachine", "lab", client.ListOptions{FieldSelector: "metadata.name=" + name})
	inf.OnChange(func(_ string, obj api.Object) {
		if obj != nil {
			v.mu.Lock()
			v.seen = append(v.seen, obj.(*api.VirtualMachine))
			v.mu.Unlock()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go inf.Run(ctx)
	if err := inf.WaitSynced(servertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v *versions) all() []*api.VirtualMachine {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.seen)
}

// checkAll checks every version the agent wrote for the spec it had:
// phase, conditions and fields agree after every transition.
func (v *versions) checkAll(t *testing.T) {
	t.Helper()
	checked := 0
	for _, vm := range v.all() {
		st := vm.Status
		if st.Condition(api.ConditionReady) == nil || st.ObservedGeneration != vm.Metadata.Generation {
			continue // the scheduler's, or before the agent saw this spec
		}
		checked++
		if why := checkVMStatus(vm.Spec.PowerState, st); why != "" {
			t.Errorf("version %s (generation %d, powerState %s): %s\n%s", vm.Metadata.ResourceVersion, vm.Metadata.Generation,
				vm.Spec.PowerState, why, servertest.JSON(st))
		}
	}
	if checked == 0 {
		t.Errorf("no version of the VM was written by the agent")
	}
}

// TestVMControllerLifecycle runs a VM through its life on the fake
// driver: start, stop (no pid nor Running=True left behind), start,
// pause, resume, a crash (restarted, counted), a restart asked for (not
// counted), an agent restart (adopted, not started again), deletion.
// Every status the agent wrote on the way agrees with itself.
func TestVMControllerLifecycle(t *testing.T) {
	l := newFakeLab(t, nil)
	ctx := servertest.Ctx(t)
	seen := l.recordVersions(t, "web")
	if _, err := l.env.Admin.Create(ctx, l.vm("web")); err != nil {
		t.Fatal(err)
	}
	vm := l.wait(t, "web", phase(api.VMRunning))
	uid, firstPID := vm.Metadata.UID, vm.Status.PID
	if c := vm.Status.Condition(api.ConditionReady); c == nil || c.Status != api.ConditionTrue {
		t.Errorf("running VM: Ready %+v, want True", c)
	}
	if !slices.Contains(l.drv.Running(), uid) {
		t.Fatalf("the driver runs %v, not the VM %s", l.drv.Running(), uid)
	}

	l.patchSpec(t, "web", map[string]any{"powerState": api.PowerStopped})
	vm = l.wait(t, "web", phase(api.VMStopped))
	if c := vm.Status.Condition(api.ConditionRunning); vm.Status.PID != 0 || vm.Status.StartedAt != nil || c.Status != api.ConditionFalse {
		t.Errorf("stopped VM looks alive: pid %d, startedAt %v, Running %+v", vm.Status.PID, vm.Status.StartedAt, c)
	}
	if slices.Contains(l.drv.Running(), uid) || len(l.drv.CallsTo(computetest.OpShutdown, uid)) != 1 {
		t.Errorf("after a stop: running %v, %d shutdowns", l.drv.Running(), len(l.drv.CallsTo(computetest.OpShutdown, uid)))
	}

	l.patchSpec(t, "web", map[string]any{"powerState": api.PowerRunning})
	vm = l.wait(t, "web", phase(api.VMRunning))
	if vm.Status.PID == firstPID || vm.Status.PID == 0 {
		t.Errorf("started again with pid %d (was %d)", vm.Status.PID, firstPID)
	}
	l.patchSpec(t, "web", map[string]any{"powerState": api.PowerPaused})
	l.wait(t, "web", phase(api.VMPaused))
	l.patchSpec(t, "web", map[string]any{"powerState": api.PowerRunning})
	vm = l.wait(t, "web", phase(api.VMRunning))
	if n := len(l.drv.CallsTo(computetest.OpPause, uid)) + len(l.drv.CallsTo(computetest.OpResume, uid)); n != 2 {
		t.Errorf("%d pauses and resumes, want one of each", n)
	}

	// A crash: restarted at once (the first after a run), counted.
	pid := vm.Status.PID
	starts := len(l.drv.CallsTo(computetest.OpStart, uid))
	if !l.drv.Crash(uid) {
		t.Fatal("nothing to crash")
	}
	vm = l.wait(t, "web", func(vm *api.VirtualMachine) error {
		if vm.Status.RestartCount != 1 || vm.Status.PID == pid || vm.Status.Phase != api.VMRunning {
			return fmt.Errorf("restarts %d, pid %d (crashed %d)", vm.Status.RestartCount, vm.Status.PID, pid)
		}
		return nil
	})
	if got := len(l.drv.CallsTo(computetest.OpStart, uid)); got != starts+1 {
		t.Errorf("%d starts after the crash, want one more than %d", got, starts)
	}
	if len(l.events(t, "web")["Restarted"]) != 1 {
		t.Errorf("no Restarted event: %v", l.events(t, "web"))
	}

	// A restart asked for: a new process, not counted.
	pid = vm.Status.PID
	l.patchSpec(t, "web", map[string]any{"restartRequested": time.Now().UTC()})
	vm = l.wait(t, "web", func(vm *api.VirtualMachine) error {
		if vm.Status.PID == pid || vm.Status.Phase != api.VMRunning || vm.Status.ObservedGeneration != vm.Metadata.Generation {
			return fmt.Errorf("pid %d (was %d)", vm.Status.PID, pid)
		}
		return nil
	})
	if vm.Status.RestartCount != 1 {
		t.Errorf("a restart asked for was counted: restartCount %d", vm.Status.RestartCount)
	}

	// The agent restarts: the VM runs on, adopted, not started again.
	pid, starts = vm.Status.PID, len(l.drv.CallsTo(computetest.OpStart, uid))
	l.stopAgent()
	l.startAgent(t)
	servertest.Eventually(t, 30*time.Second, func() error {
		if n := len(l.drv.CallsTo(computetest.OpLookup, uid)); n == 0 {
			return fmt.Errorf("the new agent has not looked yet")
		}
		return nil
	})
	time.Sleep(3 * time.Second) // a resync or so
	if got := len(l.drv.CallsTo(computetest.OpStart, uid)); got != starts {
		t.Errorf("the restarted agent started the VM again (%d starts, was %d)", got, starts)
	}
	if vm = l.get(t, "web"); vm.Status.PID != pid || vm.Status.Phase != api.VMRunning {
		t.Errorf("after the agent restart: pid %d (was %d), phase %s", vm.Status.PID, pid, vm.Status.Phase)
	}

	if _, err := l.env.Admin.Delete(ctx, "VirtualMachine", "lab", "web"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 30*time.Second, func() error {
		if slices.Contains(l.drv.Running(), uid) {
			return fmt.Errorf("the VM still runs after its deletion")
		}
		if _, err := os.Stat(filepath.Join(l.dataDir, "vms", uid)); err == nil {
			return fmt.Errorf("its directory is still there")
		}
		return nil
	})
	seen.checkAll(t)
}

// TestRestartPolicyNever: a VM that crashes under policy Never stays
// Failed (it is not started again at the next resync) until a restart is
// asked for.
func TestRestartPolicyNever(t *testing.T) {
	l := newFakeLab(t, nil)
	ctx := servertest.Ctx(t)
	vm := l.vm("once")
	vm.Spec.RestartPolicy = api.RestartNever
	if _, err := l.env.Admin.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	uid := l.wait(t, "once", phase(api.VMRunning)).Metadata.UID
	l.drv.Crash(uid)
	vm = l.wait(t, "once", phase(api.VMFailed))
	if c := vm.Status.Condition(api.ConditionReady); c.Reason != api.ReasonCrashed || !strings.Contains(c.Message, "restart policy Never") {
		t.Errorf("Ready %+v, want Crashed naming the policy", c)
	}
	time.Sleep(5 * time.Second) // two resyncs
	if n := len(l.drv.CallsTo(computetest.OpStart, uid)); n != 1 {
		t.Fatalf("a crashed VM with policy Never was started %d times", n)
	}
	l.patchSpec(t, "once", map[string]any{"restartRequested": time.Now().UTC()})
	vm = l.wait(t, "once", phase(api.VMRunning))
	if vm.Status.RestartCount != 0 {
		t.Errorf("restartCount %d, want 0: neither the crash (not restarted) nor the restart asked for counts", vm.Status.RestartCount)
	}
}

// TestRestartPolicyGuestShutdown: a guest that powers itself off is not
// a crash. Under OnFailure its QEMU is ended and the VM stays Stopped
// (GuestShutdown), not counted and not started again at the next resync,
// also when the power-off happened while the agent was down (the process
// adopted, no exit status to go by), until a restart is asked for; a
// guest kernel panic is a crash, restarted. Under Always a power-off
// comes back, counted.
func TestRestartPolicyGuestShutdown(t *testing.T) {
	l := newFakeLab(t, nil)
	ctx := servertest.Ctx(t)
	seen := l.recordVersions(t, "once")
	vm := l.vm("once")
	vm.Spec.RestartPolicy = api.RestartOnFailure
	if _, err := l.env.Admin.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	uid := l.wait(t, "once", phase(api.VMRunning)).Metadata.UID
	leftOff := func(vm *api.VirtualMachine) error {
		c := vm.Status.Condition(api.ConditionReady)
		if vm.Status.Phase != api.VMStopped || c == nil || c.Reason != api.ReasonGuestShutdown {
			return fmt.Errorf("want phase Stopped, Ready GuestShutdown")
		}
		return nil
	}
	if !l.drv.PowerOff(uid) {
		t.Fatal("nothing to power off")
	}
	vm = l.wait(t, "once", leftOff)
	if c := vm.Status.Condition(api.ConditionReady); !strings.Contains(c.Message, "powered itself off") || !strings.Contains(c.Message, "restart policy OnFailure") {
		t.Errorf("Ready %+v, want the power-off and the policy named", c)
	}
	if vm.Status.RestartCount != 0 || vm.Status.PID != 0 {
		t.Errorf("restartCount %d, pid %d: want neither", vm.Status.RestartCount, vm.Status.PID)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		if slices.Contains(l.drv.Running(), uid) {
			return fmt.Errorf("the powered-off guest's process was not ended")
		}
		return nil
	})
	time.Sleep(5 * time.Second) // two resyncs
	if n := len(l.drv.CallsTo(computetest.OpStart, uid)); n != 1 {
		t.Fatalf("a powered-off VM with policy OnFailure was started %d times", n)
	}
	evs := l.events(t, "once")
	if e := evs[api.ReasonGuestShutdown]; len(e) != 1 || e[0].Spec.Type != api.EventNormal {
		t.Errorf("want one Normal GuestShutdown event, got %v", evs)
	}
	if len(evs["Crashed"]) != 0 || len(evs["Restarted"]) != 0 {
		t.Errorf("a power-off was told as a crash: %v", evs)
	}

	// Asked for, it starts again.
	l.patchSpec(t, "once", map[string]any{"restartRequested": time.Now().UTC()})
	vm = l.wait(t, "once", phase(api.VMRunning))

	// A guest kernel panic is a crash: OnFailure restarts it, counted.
	pid := vm.Status.PID
	l.drv.Panic(uid)
	l.wait(t, "once", func(vm *api.VirtualMachine) error {
		if vm.Status.RestartCount != 1 || vm.Status.PID == pid || vm.Status.Phase != api.VMRunning {
			return fmt.Errorf("restarts %d, pid %d (panicked %d)", vm.Status.RestartCount, vm.Status.PID, pid)
		}
		return nil
	})
	if e := l.events(t, "once")["Restarted"]; len(e) != 1 || e[0].Spec.Type != api.EventWarning || !strings.Contains(e[0].Spec.Message, "panicked") {
		t.Errorf("want one Warning Restarted event saying the kernel panicked, got %+v", e)
	}

	// The guest powers off while the agent is down: the new agent adopts
	// the process and finds the guest off from what QEMU says.
	l.stopAgent()
	l.drv.PowerOff(uid)
	l.startAgent(t)
	l.wait(t, "once", leftOff)
	time.Sleep(3 * time.Second) // a resync or so
	if n := len(l.drv.CallsTo(computetest.OpStart, uid)); n != 3 {
		t.Fatalf("%d starts, want 3 (the first, the one asked for, after the panic)", n)
	}

	// Under Always it comes back, counted.
	l.patchSpec(t, "once", map[string]any{"restartPolicy": api.RestartAlways})
	vm = l.wait(t, "once", phase(api.VMRunning))
	pid = vm.Status.PID
	l.drv.PowerOff(uid)
	l.wait(t, "once", func(vm *api.VirtualMachine) error {
		if vm.Status.RestartCount != 2 || vm.Status.PID == pid || vm.Status.Phase != api.VMRunning {
			return fmt.Errorf("restarts %d, pid %d (powered off %d)", vm.Status.RestartCount, vm.Status.PID, pid)
		}
		return nil
	})
	var normal []*api.Event
	for _, e := range l.events(t, "once")["Restarted"] {
		if e.Spec.Type == api.EventNormal && strings.Contains(e.Spec.Message, "powered itself off") {
			normal = append(normal, e)
		}
	}
	if len(normal) != 1 {
		t.Errorf("want one Normal Restarted event saying the guest powered off, got %+v", l.events(t, "once")["Restarted"])
	}
	seen.checkAll(t)
}

// TestFailingVMsDoNotSpin: a VM naming a missing Image, and one naming a
// missing Volume, each fail once: one Ready=False condition saying why,
// one Warning event, a few writes, and retries that back off (the
// driver's lookups count them) rather than spin on the echo of their own
// writes. Creating what they name starts them at once, backoff or not.
func TestFailingVMsDoNotSpin(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed (apt-get install qemu-utils): the VMs' disks are made with it")
	}
	l := newFakeLab(t, nil)
	ctx := servertest.Ctx(t)

	images, volumes := l.recordVersions(t, "img"), l.recordVersions(t, "vol")
	if _, err := l.env.Admin.Create(ctx, l.vm("img", api.VMDisk{Image: "x"})); err != nil {
		t.Fatal(err)
	}
	if _, err := l.env.Admin.Create(ctx, l.vm("vol", api.VMDisk{Volume: "nope"})); err != nil {
		t.Fatal(err)
	}
	failed := func(reason, msg string) func(*api.VirtualMachine) error {
		return func(vm *api.VirtualMachine) error {
			c := vm.Status.Condition(api.ConditionReady)
			if vm.Status.Phase != api.VMFailed || c == nil || c.Reason != reason || !strings.Contains(c.Message, msg) {
				return fmt.Errorf("want Failed, Ready=False %s: %s", reason, msg)
			}
			return nil
		}
	}
	for name, want := range map[string][2]string{
		"img": {api.ReasonImageNotFound, `spec.disks[0].image: image "x" does not exist in tenant lab`},
		"vol": {api.ReasonVolumeNotFound, `spec.disks[0].volume: volume "nope" does not exist in tenant lab`},
	} {
		vm := l.wait(t, name, failed(want[0], want[1]))
		n := 0
		for _, c := range vm.Status.Conditions {
			if c.Type == api.ConditionReady {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: %d Ready conditions", name, n)
		}
	}

	// Watch them fail for a while.
	const window = 20 * time.Second
	lookups := func(name string) int { return len(l.drv.CallsTo(computetest.OpLookup, l.get(t, name).Metadata.UID)) }
	before := map[string]int{"img": len(images.all()), "vol": len(volumes.all())}
	tries := map[string]int{"img": lookups("img"), "vol": lookups("vol")}
	time.Sleep(window)
	for name, seen := range map[string]*versions{"img": images, "vol": volumes} {
		all := seen.all()
		t.Logf("%s: %d writes in all (%d in the last %s): %v; %d tries in that time", name, len(all), len(all)-before[name], window, phases(all), lookups(name)-tries[name])
		if n := len(all) - before[name]; n > 1 {
			t.Errorf("%s: %d writes in %s while it kept failing the same way, want none (or one)", name, n, window)
		}
		if len(all) > 6 {
			t.Errorf("%s: %d writes in all, want a handful: %v", name, len(all), phases(all))
		}
		// Backoff from 50ms doubling: about 9 tries in the first 25s;
		// the resyncs every 2s do not cut it short.
		if n := lookups(name) - tries[name]; n < 1 || n > 10 {
			t.Errorf("%s: %d tries in %s, want a few (it retries, and backs off)", name, n, window)
		}
		evs := l.events(t, name)
		var warnings []string
		for reason, es := range evs {
			for _, e := range es {
				if e.Spec.Type == api.EventWarning {
					warnings = append(warnings, fmt.Sprintf("%s×%d: %s", reason, e.Spec.Count, e.Spec.Message))
				}
			}
		}
		if len(warnings) != 2 || !slices.ContainsFunc(warnings, func(w string) bool { return strings.HasPrefix(w, "MissingReferences×1") }) {
			// One from the agent, one from the references controller.
			t.Errorf("%s: Warning events %q, want one of the agent's and one MissingReferences, once each", name, warnings)
		}
	}

	// What they name appears (an image uploaded through the API, a
	// volume): they start without waiting out their backoff.
	img := make([]byte, 1<<20)
	copy(img, "hearth test image")
	sum := sha256.Sum256(img)
	if _, err := l.env.Admin.Create(ctx, &api.Image{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Image"},
		Metadata: api.ObjectMeta{Name: "x", Tenant: "lab"},
		Spec:     api.ImageSpec{Format: api.FormatRaw, Source: api.ImageSource{Upload: true, Checksum: "sha256:" + hex.EncodeToString(sum[:])}}}); err != nil {
		t.Fatal(err)
	}
	l.wait(t, "img", func(vm *api.VirtualMachine) error {
		if c := vm.Status.Condition(api.ConditionReady); vm.Status.Phase != api.VMStarting || c.Reason != api.ReasonWaitingForImage {
			return fmt.Errorf("want Starting, waiting for the upload")
		}
		return nil
	})
	if _, err := l.env.Admin.UploadImage(ctx, "lab", "x", bytes.NewReader(img)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.env.Admin.Create(ctx, &api.Volume{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Volume"},
		Metadata: api.ObjectMeta{Name: "nope", Tenant: "lab"}, Spec: api.VolumeSpec{Size: 64 << 20}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, name := range []string{"img", "vol"} {
		l.wait(t, name, phase(api.VMRunning))
	}
	t.Logf("both running %s after what they name was made", time.Since(start).Round(time.Millisecond))
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("the VMs took %s to start once what they name existed: they waited for their backoff", took.Round(time.Millisecond))
	}
	images.checkAll(t)
	volumes.checkAll(t)
}

func phases(vms []*api.VirtualMachine) []string {
	var out []string
	for _, vm := range vms {
		r := ""
		if c := vm.Status.Condition(api.ConditionReady); c != nil {
			r = "/" + c.Reason
		}
		out = append(out, vm.Status.Phase+r)
	}
	return out
}
