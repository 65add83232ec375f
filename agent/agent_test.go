package agent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/serving"
	"hearth.dev/hearth/testguest"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIcCK0mzKXM8xFOUST82s2fipGzyqvJ2kSYsHaThbzek tester@hearth"

// lab is a server, one agent and the test guest.
type lab struct {
	env     *servertest.Env
	guest   testguest.Guest
	dataDir string
	join    string
	stop    context.CancelFunc
	done    chan error
	// opts change the agent's configuration.
	opts []func(*agent.Config)
}

func needQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86); .ci/run installs it")
	}
	if os.Geteuid() != 0 {
		t.Skip("the agent tests run VMs and need root; CI runs them as root")
	}
}

func newLab(t *testing.T, opts ...func(*agent.Config)) *lab {
	needQEMU(t)
	ctx := servertest.Ctx(t)
	guest, err := testguest.Build(ctx, "")
	if err != nil {
		t.Fatalf("building the test guest: %v", err)
	}
	env := servertest.Start(t)
	env.Tenant("lab")
	var jt api.TokenResponse
	if err := env.Admin.Do(ctx, http.MethodPost, api.PathPrefix+"/jointokens", map[string]string{"ttl": "1h"}, &jt); err != nil {
		t.Fatal(err)
	}
	key := &api.SSHKey{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "SSHKey"},
		Metadata: api.ObjectMeta{Name: "tester", Tenant: "lab"}, Spec: api.SSHKeySpec{PublicKey: testKey}}
	if _, err := env.Admin.Create(ctx, key); err != nil {
		t.Fatal(err)
	}
	// The test guest is an administrator's files: shared Images with
	// file:// URLs, under a directory the agent allows, that VMs boot by
	// name.
	for name, path := range map[string]string{testguestKernel: guest.Kernel, testguestInitrd: guest.Initrd} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		img := &api.Image{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Image"}, Metadata: api.ObjectMeta{Name: name},
			Spec: api.ImageSpec{Format: api.FormatRaw, Source: api.ImageSource{URL: "file://" + path, Checksum: checksumOf(data)}}}
		if _, err := env.Admin.Create(ctx, img); err != nil {
			t.Fatal(err)
		}
	}
	opts = append([]func(*agent.Config){func(c *agent.Config) {
		c.AllowFileDirs = []string{filepath.Dir(guest.Kernel), filepath.Dir(guest.Initrd)}
	}}, opts...)
	l := &lab{env: env, guest: guest, dataDir: t.TempDir(), join: jt.Token, opts: opts}
	l.startAgent(t)
	t.Cleanup(func() {
		l.stopAgent()
		killVMs(l.dataDir)
	})
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

func (l *lab) startAgent(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	l.stop, l.done = cancel, make(chan error, 1)
	cfg := agent.Config{Server: l.env.Server.URL(), JoinToken: l.join, CAFile: filepath.Join(l.env.DataDir, "ca.crt"),
		Name: "h1", DataDir: l.dataDir, Address: "127.0.0.1", Listen: fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t)),
		ShutdownTimeout: 5 * time.Second, Resync: 2 * time.Second}
	for _, o := range l.opts {
		o(&cfg)
	}
	go func() { l.done <- agent.Run(ctx, cfg) }()
}

func (l *lab) stopAgent() {
	if l.stop != nil {
		l.stop()
		<-l.done
		l.stop = nil
	}
}

// killVMs kills any QEMU left under dir, so a failed test leaves nothing.
func killVMs(dir string) {
	pids, _ := filepath.Glob(filepath.Join(dir, "vms", "*", compute.PIDFile))
	for _, p := range pids {
		data, _ := os.ReadFile(p)
		var pid int
		fmt.Sscan(string(data), &pid)
		if pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func (l *lab) vm(name string) *api.VirtualMachine {
	vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
		Metadata: api.ObjectMeta{Name: name, Tenant: "lab"},
		Spec: api.VirtualMachineSpec{Host: "h1", CPUs: 1, Memory: 256 << 20,
			Boot: api.VMBoot{From: api.BootFromKernel, Kernel: &api.BootFile{Image: testguestKernel},
				Initrd: &api.BootFile{Image: testguestInitrd}, Cmdline: "console=ttyS0 panic=-1"}}}
	return vm
}

// The shared Images of the test guest's kernel and initrd.
const (
	testguestKernel = "testguest-kernel"
	testguestInitrd = "testguest-initrd"
)

func checksumOf(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

func (l *lab) patchSpec(t *testing.T, name string, spec map[string]any) {
	t.Helper()
	if _, err := l.env.Admin.Patch(servertest.Ctx(t), "VirtualMachine", "lab", name, map[string]any{"spec": spec}, false); err != nil {
		t.Fatal(err)
	}
}

func (l *lab) get(t *testing.T, name string) *api.VirtualMachine {
	t.Helper()
	o, err := l.env.Admin.Get(servertest.Ctx(t), "VirtualMachine", "lab", name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*api.VirtualMachine)
}

// waitConsole waits until the VM's console log contains every want.
func (l *lab) waitConsole(t *testing.T, name string, want ...string) string {
	t.Helper()
	var log string
	servertest.Eventually(t, 120*time.Second, func() error {
		vm := l.get(t, name)
		if vm.Status.ConsoleLog == "" {
			return fmt.Errorf("no console log yet (phase %q, conditions %+v)", vm.Status.Phase, vm.Status.Conditions)
		}
		data, _ := os.ReadFile(vm.Status.ConsoleLog)
		log = string(data)
		for _, w := range want {
			if !strings.Contains(log, w) {
				return fmt.Errorf("console lacks %q so far:\n%s", w, tail(log))
			}
		}
		return nil
	})
	return log
}

func tail(s string) string {
	if len(s) > 1500 {
		return s[len(s)-1500:]
	}
	return s
}

func (l *lab) waitPhase(t *testing.T, name, phase string) *api.VirtualMachine {
	t.Helper()
	var vm *api.VirtualMachine
	servertest.Eventually(t, 120*time.Second, func() error {
		vm = l.get(t, name)
		if vm.Status.Phase != phase {
			return fmt.Errorf("phase %q, want %q (conditions %+v)", vm.Status.Phase, phase, vm.Status.Conditions)
		}
		return nil
	})
	return vm
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// TestVMLifecycle: a VM boots with its seed (hostname, SSH key on the
// console), stops, starts, restarts when asked, and on deletion leaves no
// process or file.
func TestVMLifecycle(t *testing.T) {
	l := newLab(t)
	ctx := servertest.Ctx(t)
	vm1 := l.vm("vm1")
	// A NIC with the API's defaults (model virtio), which QEMU once
	// refused as a device name.
	vm1.Spec.NICs = []api.VMNIC{{Network: "lan"}}
	// Its address comes from the network's subnet, which must exist.
	for _, o := range []api.Object{
		&api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"}, Metadata: api.ObjectMeta{Name: "lan", Tenant: "lab"}},
		&api.Subnet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Subnet"}, Metadata: api.ObjectMeta{Name: "lan-a", Tenant: "lab"},
			Spec: api.SubnetSpec{Network: "lan", CIDR: "10.0.0.0/24"}},
	} {
		if _, err := l.env.Admin.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.env.Admin.Create(ctx, vm1); err != nil {
		t.Fatal(err)
	}
	// The guest prints the key without its comment.
	keyOnly := strings.Join(strings.Fields(testKey)[:2], " ")
	l.waitConsole(t, "vm1", testguest.Marker+" hostname=vm1", testguest.Marker+" ssh-key="+keyOnly)
	vm := l.waitPhase(t, "vm1", api.VMRunning)
	if vm.Status.FirstOutputAt == nil || vm.Status.StartedAt == nil || !alive(vm.Status.PID) {
		t.Fatalf("running VM status incomplete: %+v", vm.Status)
	}
	firstPID, dir := vm.Status.PID, filepath.Dir(vm.Status.ConsoleLog)

	if _, err := l.env.Admin.Patch(ctx, "VirtualMachine", "lab", "vm1", map[string]any{"spec": map[string]any{"powerState": "Stopped"}}, false); err != nil {
		t.Fatal(err)
	}
	l.waitPhase(t, "vm1", api.VMStopped)
	if alive(firstPID) {
		t.Fatalf("QEMU %d still runs after Stopped", firstPID)
	}
	if _, err := l.env.Admin.Patch(ctx, "VirtualMachine", "lab", "vm1", map[string]any{"spec": map[string]any{"powerState": "Running"}}, false); err != nil {
		t.Fatal(err)
	}
	vm = l.waitPhase(t, "vm1", api.VMRunning)
	if vm.Status.PID == firstPID || !alive(vm.Status.PID) {
		t.Fatalf("after start: pid %d (was %d)", vm.Status.PID, firstPID)
	}

	// A restart asked for (`hearth vm restart`) happens once: a new
	// process, the guest up again, and no crash counted.
	startedPID := vm.Status.PID
	if _, err := l.env.Admin.Patch(ctx, "VirtualMachine", "lab", "vm1", map[string]any{"spec": map[string]any{"restartRequested": time.Now().UTC()}}, false); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 120*time.Second, func() error {
		vm = l.get(t, "vm1")
		if vm.Status.PID == startedPID || !alive(vm.Status.PID) || vm.Status.Phase != api.VMRunning || alive(startedPID) {
			return fmt.Errorf("pid %d (was %d, alive %v), phase %s", vm.Status.PID, startedPID, alive(startedPID), vm.Status.Phase)
		}
		return nil
	})
	if vm.Status.RestartCount != 0 {
		t.Fatalf("a requested restart was counted as a crash: restartCount %d", vm.Status.RestartCount)
	}
	pid := vm.Status.PID
	time.Sleep(2 * time.Second)
	if vm = l.get(t, "vm1"); vm.Status.PID != pid {
		t.Fatalf("one restart asked for, but the VM restarted again: pid %d, then %d", pid, vm.Status.PID)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		evs, _, err := l.env.Admin.List(servertest.Ctx(t), "Event", "lab", client.ListOptions{FieldSelector: "involvedObject.name=vm1"})
		if err != nil {
			return err
		}
		for _, e := range evs {
			if ev := e.(*api.Event).Spec; ev.Reason == "Restarting" && strings.Contains(ev.Message, "as asked") {
				return nil
			}
		}
		return fmt.Errorf("no Restarting event saying it was asked for, among %d", len(evs))
	})
	if _, err := l.env.Admin.Delete(servertest.Ctx(t), "VirtualMachine", "lab", "vm1"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 30*time.Second, func() error {
		if alive(pid) {
			return fmt.Errorf("QEMU %d still runs after delete", pid)
		}
		if _, err := os.Stat(dir); err == nil {
			return fmt.Errorf("VM directory %s still there", dir)
		}
		return nil
	})
}

// TestAgentRestartAdopts: killing the agent leaves the VM running; the new
// agent adopts the same process without restarting it.
func TestAgentRestartAdopts(t *testing.T) {
	l := newLab(t)
	ctx := servertest.Ctx(t)
	if _, err := l.env.Admin.Create(ctx, l.vm("vm2")); err != nil {
		t.Fatal(err)
	}
	vm := l.waitPhase(t, "vm2", api.VMRunning)
	pid := vm.Status.PID
	l.stopAgent()
	time.Sleep(time.Second)
	if !alive(pid) {
		t.Fatalf("the VM died with its agent")
	}
	l.startAgent(t)
	// Give the new agent a few reconciles, then check nothing restarted.
	time.Sleep(5 * time.Second)
	vm = l.waitPhase(t, "vm2", api.VMRunning)
	if vm.Status.PID != pid || vm.Status.RestartCount != 0 {
		t.Fatalf("after the agent restart: pid %d (was %d), restarts %d", vm.Status.PID, pid, vm.Status.RestartCount)
	}
	evs, _, _ := l.env.Admin.List(ctx, "Event", "lab", client.ListOptions{FieldSelector: "involvedObject.name=vm2"})
	started := 0
	for _, e := range evs {
		if e.(*api.Event).Spec.Reason == "Started" {
			started += e.(*api.Event).Spec.Count
		}
	}
	if started != 1 {
		t.Fatalf("VM started %d times, want once", started)
	}
}

// TestQEMUKilledIsRestarted: a VM whose QEMU dies is restarted per its
// restart policy, and an event says so.
func TestQEMUKilledIsRestarted(t *testing.T) {
	l := newLab(t)
	ctx := servertest.Ctx(t)
	if _, err := l.env.Admin.Create(ctx, l.vm("vm3")); err != nil {
		t.Fatal(err)
	}
	vm := l.waitPhase(t, "vm3", api.VMRunning)
	pid := vm.Status.PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 120*time.Second, func() error {
		vm = l.get(t, "vm3")
		if vm.Status.RestartCount != 1 || vm.Status.PID == pid || !alive(vm.Status.PID) || vm.Status.Phase != api.VMRunning {
			return fmt.Errorf("restarts %d, pid %d (killed %d), phase %s", vm.Status.RestartCount, vm.Status.PID, pid, vm.Status.Phase)
		}
		return nil
	})
	servertest.Eventually(t, 10*time.Second, func() error {
		evs, _, err := l.env.Admin.List(ctx, "Event", "lab", client.ListOptions{FieldSelector: "involvedObject.name=vm3"})
		if err != nil {
			return err
		}
		for _, e := range evs {
			if e.(*api.Event).Spec.Reason == "Restarted" {
				return nil
			}
		}
		return fmt.Errorf("no Restarted event among %d", len(evs))
	})
}

// TestGuestPowerOffAndPanic runs the restart policies on real guests
// whose user-data script powers them off, or panics their kernel. A
// power-off under Always comes back, counted; under OnFailure the VM's
// QEMU is ended and the VM stays Stopped (GuestShutdown), also across
// resyncs. A kernel panic (pvpanic) under OnFailure is a crash:
// restarted, counted.
func TestGuestPowerOffAndPanic(t *testing.T) {
	l := newLab(t)
	ctx := servertest.Ctx(t)
	off := l.vm("off")
	off.Spec.CloudInit.UserData = "#!/bin/sh\necho powering-off\npoweroff -f\n"
	panics := l.vm("panics")
	panics.Spec.RestartPolicy = api.RestartOnFailure
	panics.Spec.CloudInit.UserData = "#!/bin/sh\necho panicking\necho c >/proc/sysrq-trigger\n"
	for _, vm := range []*api.VirtualMachine{off, panics} {
		if _, err := l.env.Admin.Create(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	restarted := func(name, why string) {
		t.Helper()
		servertest.Eventually(t, 240*time.Second, func() error {
			vm := l.get(t, name)
			if vm.Status.RestartCount < 1 {
				return fmt.Errorf("%s: restarts %d, phase %s, conditions %+v", name, vm.Status.RestartCount, vm.Status.Phase, vm.Status.Conditions)
			}
			evs, _, err := l.env.Admin.List(servertest.Ctx(t), "Event", "lab", client.ListOptions{FieldSelector: "involvedObject.name=" + name})
			if err != nil {
				return err
			}
			for _, o := range evs {
				if e := o.(*api.Event); e.Spec.Reason == "Restarted" && strings.Contains(e.Spec.Message, why) {
					return nil
				}
			}
			return fmt.Errorf("%s: no Restarted event saying %q among %d", name, why, len(evs))
		})
	}

	// Always: the guest powered off, and a fresh QEMU runs it again.
	restarted("off", "powered itself off")
	// OnFailure: the next power-off (the script runs at every boot)
	// leaves it Stopped.
	l.patchSpec(t, "off", map[string]any{"restartPolicy": api.RestartOnFailure})
	var vm *api.VirtualMachine
	servertest.Eventually(t, 240*time.Second, func() error {
		vm = l.get(t, "off")
		c := vm.Status.Condition(api.ConditionReady)
		if vm.Status.Phase != api.VMStopped || c == nil || c.Reason != api.ReasonGuestShutdown || vm.Status.ObservedGeneration != vm.Metadata.Generation {
			return fmt.Errorf("phase %s, conditions %+v; want Stopped, GuestShutdown", vm.Status.Phase, vm.Status.Conditions)
		}
		return nil
	})
	restarts := vm.Status.RestartCount
	pidFile := filepath.Join(l.dataDir, "vms", vm.Metadata.UID, compute.PIDFile)
	time.Sleep(5 * time.Second) // two resyncs
	vm = l.get(t, "off")
	if c := vm.Status.Condition(api.ConditionReady); vm.Status.Phase != api.VMStopped || c.Reason != api.ReasonGuestShutdown || vm.Status.RestartCount != restarts {
		t.Errorf("after two resyncs: phase %s, Ready %+v, restarts %d (were %d); want it left Stopped", vm.Status.Phase, c, vm.Status.RestartCount, restarts)
	}
	if _, err := os.Stat(pidFile); err == nil {
		t.Errorf("a QEMU still runs for the powered-off VM (%s is there)", pidFile)
	}

	// OnFailure: a kernel panic is a crash, and restarted.
	restarted("panics", "kernel panicked")
	if vm := l.get(t, "panics"); vm.Status.Phase == api.VMStopped {
		t.Errorf("the panicking VM is Stopped: %+v", vm.Status.Conditions)
	}
}

// TestConsoleLogCapped: with a small cap, the agent rotates a booting
// VM's console log; QEMU keeps writing at the start of the emptied log;
// the VM still goes Running; `hearth logs` serves console.log.1 followed
// by console.log, whole, by tail and followed; deleting the VM leaves
// neither file.
func TestConsoleLogCapped(t *testing.T) {
	const max = 4 << 10
	l := newLab(t, func(c *agent.Config) { c.ConsoleLogMax = max })
	ctx := servertest.Ctx(t)
	if _, err := l.env.Admin.Create(ctx, l.vm("vm4")); err != nil {
		t.Fatal(err)
	}
	vm := l.waitPhase(t, "vm4", api.VMRunning)
	dir := filepath.Dir(vm.Status.ConsoleLog)
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return string(b)
	}
	logs := func(follow bool, tail int64) io.ReadCloser {
		t.Helper()
		o := api.LogOptions{Follow: follow}
		if tail >= 0 {
			o.TailBytes = &tail
		}
		rc, err := l.env.Admin.Logs(ctx, "lab", "vm4", o)
		if err != nil {
			t.Fatal(err)
		}
		return rc
	}
	// The guest prints tens of KiB while it boots, then goes quiet once
	// ready, and the agent looks every two seconds: the log ends up capped.
	servertest.Eventually(t, 120*time.Second, func() error {
		cur, prev := read(compute.ConsoleLog), read(compute.ConsoleLogPrevious)
		if prev == "" {
			return fmt.Errorf("no %s yet (%s holds %d bytes)", compute.ConsoleLogPrevious, compute.ConsoleLog, len(cur))
		}
		if len(cur) > max {
			return fmt.Errorf("%s holds %d bytes, over the cap", compute.ConsoleLog, len(cur))
		}
		if !strings.Contains(prev+cur, testguest.Marker+" ready") {
			return fmt.Errorf("the guest is not ready yet")
		}
		return nil
	})
	cur, prev := read(compute.ConsoleLog), read(compute.ConsoleLogPrevious)
	t.Logf("capped: %s %d bytes, %s %d bytes", compute.ConsoleLogPrevious, len(prev), compute.ConsoleLog, len(cur))
	if len(prev) > 2*max {
		t.Errorf("%s holds %d bytes, more than twice the cap", compute.ConsoleLogPrevious, len(prev))
	}
	for name, s := range map[string]string{compute.ConsoleLog: cur, compute.ConsoleLogPrevious: prev} {
		if strings.ContainsRune(s, 0) {
			t.Errorf("%s has NUL bytes: QEMU wrote past the end of the emptied log", name)
		}
	}
	body := func(rc io.ReadCloser) string {
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := body(logs(false, -1)); got != prev+cur {
		t.Errorf("hearth logs served %d bytes, want %s then %s (%d bytes):\n%s", len(got), compute.ConsoleLogPrevious, compute.ConsoleLog, len(prev+cur), tail(got))
	}
	n := int64(len(cur)) + 100
	if got := body(logs(false, n)); got != (prev + cur)[int64(len(prev+cur))-n:] {
		t.Errorf("hearth logs --tail %d = %q, want the last %d bytes of both files", n, got, n)
	}

	// Followed: the power button's marker, written after the rotations,
	// arrives.
	rc := logs(true, 0)
	defer rc.Close()
	if _, err := l.env.Admin.Patch(ctx, "VirtualMachine", "lab", "vm4", map[string]any{"spec": map[string]any{"powerState": "Stopped"}}, false); err != nil {
		t.Fatal(err)
	}
	followed := make(chan string, 1)
	go func() {
		var got strings.Builder
		buf := make([]byte, 4096)
		for !strings.Contains(got.String(), testguest.Marker+" poweroff") {
			n, err := rc.Read(buf)
			got.Write(buf[:n])
			if err != nil {
				break
			}
		}
		followed <- got.String()
	}()
	select {
	case got := <-followed:
		if !strings.Contains(got, testguest.Marker+" poweroff") || strings.ContainsRune(got, 0) {
			t.Errorf("followed log: %q, want the power-off marker", got)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the followed log never showed the power-off marker")
	}
	l.waitPhase(t, "vm4", api.VMStopped)

	if _, err := l.env.Admin.Delete(ctx, "VirtualMachine", "lab", "vm4"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 30*time.Second, func() error {
		if _, err := os.Stat(dir); err == nil {
			return fmt.Errorf("VM directory %s still there: %v", dir, ls(dir))
		}
		return nil
	})
}

func ls(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestConsoleEndpointLimits: the agent's console endpoint cuts off a
// client that stalls its TLS handshake after the read timeout, while a
// followed console log (through the API server) lives on past every
// timeout and keeps bringing output.
func TestConsoleEndpointLimits(t *testing.T) {
	var listen string
	l := newLab(t, func(c *agent.Config) {
		c.ConsoleLimits = serving.Limits{ReadHeaderTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, IdleTimeout: time.Second}
		listen = c.Listen
	})
	ctx := servertest.Ctx(t)

	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0x16, 0x03, 0x01}) // the start of a TLS record, then nothing
	start := time.Now()
	c.SetReadDeadline(start.Add(15 * time.Second))
	if _, err := io.ReadAll(c); err != nil || time.Since(start) > 4*time.Second {
		t.Fatalf("a stalled handshake: closed after %s (%v), want within 4s", time.Since(start).Round(time.Millisecond), err)
	}

	vm := l.vm("ticker")
	vm.Spec.CloudInit.UserData = "#!/bin/sh\nwhile true; do echo tick-$(cat /proc/uptime); sleep 0.5; done\n"
	if _, err := l.env.Admin.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	l.waitConsole(t, "ticker", "tick-")
	logs, err := l.env.Admin.Logs(ctx, "lab", "ticker", api.LogOptions{Follow: true, TailBytes: new(int64)})
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	lines := make(chan time.Time, 1024)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := logs.Read(buf)
			if n > 0 && strings.Contains(string(buf[:n]), "tick-") {
				lines <- time.Now()
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	followed := time.Now()
	for {
		select {
		case at, ok := <-lines:
			if !ok {
				t.Fatalf("the followed log ended after %s", time.Since(followed).Round(time.Millisecond))
			}
			if at.Sub(followed) > 4*time.Second {
				return // output still arrives past four times every timeout
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the followed log brought nothing for 20s")
		}
	}
}
