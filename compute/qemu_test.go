package compute

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"hearth.dev/hearth/storage/cephtest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"hearth.dev/hearth/process"
)

// helperEnv makes the test binary a short-lived process that starts a VM
// and exits, to show the VM outlives whoever started it.
const helperEnv = "HEARTH_COMPUTE_START_HELPER"

func TestMain(m *testing.M) {
	if s := os.Getenv(helperEnv); s != "" {
		os.Exit(startHelper(s))
	}
	code := m.Run()
	// The migration tests share one Ceph (storage/cephtest).
	if err := cephtest.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the test Ceph:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func startHelper(specJSON string) int {
	var spec Spec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	info, err := NewQEMU(QEMUOptions{}).Start(context.Background(), spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Print the PID and linger, until the test kills this process.
	fmt.Println(info.PID)
	time.Sleep(time.Minute)
	return 0
}

func requireQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86): skipping tests that run VMs")
	}
}

func newUUID(t *testing.T) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// testSpec is a small TCG VM booting the test guest from its kernel, with
// an unplugged NIC, a scratch disk and a seed image, as the agent would
// make it. Cleanup kills whatever runs for it.
func testSpec(t *testing.T) Spec {
	t.Helper()
	requireQEMU(t)
	g := buildGuest(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.raw")
	seed := filepath.Join(dir, "seed.img")
	for _, f := range []string{disk, seed} {
		if err := os.WriteFile(f, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	spec := Spec{
		ID:        newUUID(t),
		Name:      "test/" + strings.ToLower(t.Name()),
		Dir:       dir,
		CPUs:      1,
		MemoryMiB: 256,
		Firmware:  "bios",
		Boot:      Boot{From: "kernel", Kernel: g.Kernel, Initrd: g.Initrd, Cmdline: "console=ttyS0 panic=-1"},
		Disks:     []Disk{{Path: disk, Format: "raw"}},
		NICs:      []NIC{{MAC: "52:54:00:12:34:01"}},
		Seed:      seed,
	}
	t.Cleanup(func() { killForCleanup(t, spec) })
	return spec
}

// killForCleanup leaves no QEMU behind, even when the driver is broken.
func killForCleanup(t *testing.T, spec Spec) {
	if p, ok, _ := findProcess(spec.ID, spec.Dir); ok {
		syscall.Kill(p.PID, syscall.SIGKILL)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if process.WaitGone(ctx, p) != nil {
			t.Errorf("cleanup: pid %d still alive", p.PID)
		}
	}
}

func start(t *testing.T, d *QEMU, spec Spec) Info {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	info, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return info
}

// waitConsole waits for marker to appear in the VM's console log.
func waitConsole(t *testing.T, dir, marker string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var b []byte
	for time.Now().Before(deadline) {
		b, _ = os.ReadFile(filepath.Join(dir, ConsoleLog))
		if strings.Contains(string(b), marker) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("console.log has no %q after %v; it ends with:\n%s\nqemu.stderr:\n%s",
		marker, timeout, tail(b, 2000), readFile(filepath.Join(dir, StderrFile)))
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func lookup(t *testing.T, d *QEMU, spec Spec) (Info, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, ok, err := d.Lookup(ctx, spec.ID, spec.Dir)
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	return info, ok
}

func pidAlive(pid int) bool {
	_, ok := process.Of(pid)
	return ok
}

// assertStopped checks the process is gone and the driver tidied up after
// it, keeping the console log.
func assertStopped(t *testing.T, d *QEMU, spec Spec, pid int) {
	t.Helper()
	if pidAlive(pid) {
		t.Errorf("pid %d still alive", pid)
	}
	if _, ok := lookup(t, d, spec); ok {
		t.Errorf("Lookup found the VM after it stopped")
	}
	for _, f := range []string{PIDFile, QMPSocket, ConsoleSocket} {
		if _, err := os.Stat(filepath.Join(spec.Dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (stat: %v)", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(spec.Dir, ConsoleLog)); err != nil {
		t.Errorf("console log removed: %v", err)
	}
}

func TestDetectKVM(t *testing.T) {
	requireQEMU(t)
	start := time.Now()
	ok, reason := DetectKVM(context.Background())
	t.Logf("DetectKVM = %v, %q (%v)", ok, reason, time.Since(start).Round(time.Millisecond))
	if reason == "" {
		t.Errorf("DetectKVM gave no reason")
	}
	if ok {
		return
	}
	if !strings.Contains(reason, "kvm") {
		t.Errorf("reason %q does not say what failed", reason)
	}
	// Where /dev/kvm cannot be used at all, a VM asked to use it must
	// fail to start and say why in QEMU's own words, leaving nothing
	// running. (Where the device opens but a vCPU hangs at the switch to
	// protected mode, as on some nested hosts, QEMU starts and the guest
	// never runs: only the probe can tell, which is why it exists.)
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		t.Logf("/dev/kvm opens but the probe guest did not run: not starting a VM with KVM")
		return
	}
	spec := testSpec(t)
	spec.KVM = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := NewQEMU(QEMUOptions{}).Start(ctx, spec)
	if err == nil {
		t.Fatalf("Start with KVM on a host without working KVM succeeded: %+v", info)
	}
	t.Logf("Start with KVM: %v", err)
	if !strings.Contains(err.Error(), "qemu said:") {
		t.Errorf("error %q lacks the tail of qemu.stderr", err)
	}
	if _, err := os.Stat(filepath.Join(spec.Dir, PIDFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file left after a failed start")
	}
}

func TestLifecycle(t *testing.T) {
	spec := testSpec(t)
	d := NewQEMU(QEMUOptions{})
	info := start(t, d, spec)
	if info.PID <= 0 || info.State != Running || info.Accelerator != "tcg" {
		t.Fatalf("Start = %+v, want a running tcg VM", info)
	}
	if since := time.Since(info.StartedAt); since < -2*time.Second || since > time.Minute {
		t.Errorf("StartedAt %v is %v ago", info.StartedAt, since)
	}
	waitConsole(t, spec.Dir, guestSeed, 90*time.Second)

	got, ok := lookup(t, d, spec)
	if !ok || got.PID != info.PID || got.State != Running || got.Accelerator != "tcg" {
		t.Errorf("Lookup = %+v, %v; want pid %d running tcg", got, ok, info.PID)
	}
	if !got.StartedAt.Equal(info.StartedAt) {
		t.Errorf("Lookup StartedAt = %v, Start said %v", got.StartedAt, info.StartedAt)
	}

	// A new driver, as in a restarted agent, finds the same process.
	d2 := NewQEMU(QEMUOptions{})
	if got, ok := lookup(t, d2, spec); !ok || got.PID != info.PID {
		t.Errorf("new driver Lookup = %+v, %v; want pid %d", got, ok, info.PID)
	}
	// Another VM's ID does not match this process.
	if _, ok := lookup(t, d2, Spec{ID: newUUID(t), Dir: spec.Dir}); ok {
		t.Errorf("Lookup with another VM's id found this VM")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := d2.Start(ctx, spec); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Start = %v, want already running", err)
	}

	if err := d2.Pause(ctx, spec.ID, spec.Dir); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if got, _ := lookup(t, d, spec); got.State != Paused || got.Status != "paused" {
		t.Errorf("after Pause: %+v, want paused", got)
	}
	if err := d2.Resume(ctx, spec.ID, spec.Dir); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if got, _ := lookup(t, d, spec); got.State != Running {
		t.Errorf("after Resume: %+v, want running", got)
	}

	waited := make(chan error, 1)
	go func() { waited <- d2.Wait(ctx, spec.ID, spec.Dir) }()

	// The guest powers off on the ACPI power button, well before the
	// timeout.
	const timeout = 30 * time.Second
	begin := time.Now()
	if err := d2.Shutdown(ctx, spec.ID, spec.Dir, timeout); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	took := time.Since(begin)
	t.Logf("Shutdown took %v", took.Round(time.Millisecond))
	if took >= timeout {
		t.Errorf("Shutdown took %v: the guest did not power off, it was killed", took)
	}
	if log := readFile(filepath.Join(spec.Dir, ConsoleLog)); !strings.Contains(log, guestPowerOff) {
		t.Errorf("console log has no %q:\n%s", guestPowerOff, tail([]byte(log), 2000))
	}
	assertStopped(t, d, spec, info.PID)
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Wait did not return after the process ended")
	}

	// Once stopped: Shutdown and Kill are no-ops, Pause says so, and the
	// VM starts again in the same directory.
	if err := d.Shutdown(ctx, spec.ID, spec.Dir, time.Second); err != nil {
		t.Errorf("Shutdown of a stopped VM: %v", err)
	}
	if err := d.Kill(ctx, spec.ID, spec.Dir); err != nil {
		t.Errorf("Kill of a stopped VM: %v", err)
	}
	if err := d.Pause(ctx, spec.ID, spec.Dir); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Pause of a stopped VM = %v, want ErrNotRunning", err)
	}
	again := start(t, d, spec)
	if again.PID == info.PID {
		t.Errorf("restart has the old pid %d", info.PID)
	}
	if err := d.Kill(ctx, spec.ID, spec.Dir); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	assertStopped(t, d, spec, again.PID)
}

// TestGuestPowersOff: a guest that powers itself off (here on the power
// button pressed over QMP, without Shutdown: the guest's acpid runs
// poweroff) leaves its QEMU alive in StatusShutdown, for this driver and
// a new one (an agent restarted since), and Wait returns; Shutdown then
// ends the process at once (QMP quit), not after its timeout.
func TestGuestPowersOff(t *testing.T) {
	spec := testSpec(t)
	d := NewQEMU(QEMUOptions{})
	info := start(t, d, spec)
	waitConsole(t, spec.Dir, guestSeed, 90*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	waited := make(chan error, 1)
	go func() { waited <- d.Wait(ctx, spec.ID, spec.Dir) }()

	c, err := DialQMP(ctx, filepath.Join(spec.Dir, QMPSocket))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Execute(ctx, "system_powerdown", nil, nil)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	waitConsole(t, spec.Dir, guestPowerOff, 30*time.Second)
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return when the guest powered off")
	}
	for _, drv := range []*QEMU{d, NewQEMU(QEMUOptions{})} {
		got, ok := lookup(t, drv, spec)
		if !ok || got.PID != info.PID || got.Status != StatusShutdown || got.State != Paused {
			t.Fatalf("Lookup after the guest powered off = %+v, %v; want pid %d alive in status %q", got, ok, info.PID, StatusShutdown)
		}
	}
	if err := d.Wait(ctx, spec.ID, spec.Dir); err != nil {
		t.Errorf("Wait on a powered-off guest: %v", err)
	}
	if err := d.Resume(ctx, spec.ID, spec.Dir); err == nil {
		t.Errorf("Resume of a powered-off guest succeeded")
	}

	const timeout = time.Minute
	begin := time.Now()
	if err := d.Shutdown(ctx, spec.ID, spec.Dir, timeout); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if took := time.Since(begin); took > 15*time.Second {
		t.Errorf("Shutdown of a powered-off guest took %v: it was not told to quit", took)
	}
	assertStopped(t, d, spec, info.PID)
	if log := readFile(filepath.Join(spec.Dir, StderrFile)); strings.Contains(log, "terminating on signal 9") {
		t.Errorf("QEMU was killed, not told to quit:\n%s", log)
	}
}

// TestGuestPanics: a guest kernel that panics (told by pvpanic) leaves
// its QEMU in StatusGuestPanicked: not a reboot inside the process (the
// guest runs with panic=-1), nor a power-off; Wait returns and Shutdown
// ends it at once. The panic is an NMI the guest is told to panic on, as
// `virsh inject-nmi` crashes a hung guest.
func TestGuestPanics(t *testing.T) {
	spec := testSpec(t)
	spec.Boot.Cmdline += " unknown_nmi_panic=1"
	d := NewQEMU(QEMUOptions{})
	info := start(t, d, spec)
	// The drivers, pvpanic's among them, are loaded before the seed.
	waitConsole(t, spec.Dir, guestSeed, 90*time.Second)
	if log := readFile(filepath.Join(spec.Dir, ConsoleLog)); strings.Contains(log, "module-failed=pvpanic") {
		t.Fatalf("the test guest could not load its pvpanic driver:\n%s", tail([]byte(log), 2000))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := DialQMP(ctx, filepath.Join(spec.Dir, QMPSocket))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Execute(ctx, "inject-nmi", nil, nil)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	defer wcancel()
	if err := d.Wait(wctx, spec.ID, spec.Dir); err != nil {
		t.Fatalf("Wait: %v; console:\n%s", err, tail([]byte(readFile(filepath.Join(spec.Dir, ConsoleLog))), 2000))
	}
	if got, ok := lookup(t, NewQEMU(QEMUOptions{}), spec); !ok || got.PID != info.PID || got.Status != StatusGuestPanicked {
		t.Fatalf("Lookup after the panic = %+v, %v; want pid %d in status %q", got, ok, info.PID, StatusGuestPanicked)
	}
	// (The console shows no "Kernel panic": pvpanic's notifier runs, and
	// QEMU pauses the guest, before the kernel flushes its console.)
	begin := time.Now()
	if err := d.Shutdown(ctx, spec.ID, spec.Dir, time.Minute); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if took := time.Since(begin); took > 15*time.Second {
		t.Errorf("Shutdown of a panicked guest took %v", took)
	}
	assertStopped(t, d, spec, info.PID)
}

func TestKill(t *testing.T) {
	spec := testSpec(t)
	d := NewQEMU(QEMUOptions{})
	info := start(t, d, spec)
	waitConsole(t, spec.Dir, guestBooted, 90*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Kill(ctx, spec.ID, spec.Dir); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	assertStopped(t, d, spec, info.PID)
	if !strings.Contains(readFile(filepath.Join(spec.Dir, ConsoleLog)), guestBooted) {
		t.Errorf("console log lost its contents")
	}
}

// TestNice starts a VM at a niceness and finds every thread of its
// process, and its session's autogroup where the kernel has them, at it.
func TestNice(t *testing.T) {
	spec := testSpec(t)
	d := NewQEMU(QEMUOptions{Nice: 7})
	info := start(t, d, spec)
	defer d.Kill(context.Background(), spec.ID, spec.Dir)
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", info.PID))
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) < 2 {
		t.Fatalf("QEMU has %d threads, want its vCPU thread beside the main one", len(tasks))
	}
	for _, task := range tasks {
		stat := readFile(fmt.Sprintf("/proc/%d/task/%s/stat", info.PID, task.Name()))
		// Fields after the parenthesised command: state is 3rd, nice 19th.
		f := strings.Fields(stat[strings.LastIndexByte(stat, ')')+2:])
		if len(f) < 17 {
			t.Fatalf("thread %s of QEMU: short stat %q", task.Name(), stat)
		}
		if f[16] != "7" {
			t.Errorf("thread %s of QEMU: nice %s, want 7", task.Name(), f[16])
		}
	}
	if ag, err := os.ReadFile(fmt.Sprintf("/proc/%d/autogroup", info.PID)); err == nil {
		if !strings.HasSuffix(strings.TrimSpace(string(ag)), "nice 7") {
			t.Errorf("autogroup of QEMU: %q, want nice 7", ag)
		}
	} else {
		t.Logf("no autogroup here: %v", err)
	}
}

// TestOutlivesStarter starts the VM from another process, kills that
// process with SIGKILL as an agent might be, and finds the VM still
// running, adopted by a new driver.
func TestOutlivesStarter(t *testing.T) {
	spec := testSpec(t)
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+string(b))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cmd.Wait()
		t.Fatalf("helper: %v: %s", err, stderr.String())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("helper printed %q", line)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	waitConsole(t, spec.Dir, guestBooted, 90*time.Second)
	d := NewQEMU(QEMUOptions{})
	info, ok := lookup(t, d, spec)
	if !ok || info.PID != pid || info.State != Running {
		t.Fatalf("Lookup = %+v, %v; want pid %d running", info, ok, pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Kill(ctx, spec.ID, spec.Dir); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	assertStopped(t, d, spec, pid)
}

// TestNetworkBoot boots from the NIC with QEMU's iPXE ROM. The NIC has no
// tap, so iPXE gets no DHCP answer; and with no OS to hear the power
// button, Shutdown must kill the VM when its timeout ends.
func TestNetworkBoot(t *testing.T) {
	spec := testSpec(t)
	spec.Boot = Boot{From: "network"}
	spec.NICs[0].BootIndex = 1
	d := NewQEMU(QEMUOptions{})
	info := start(t, d, spec)
	waitConsole(t, spec.Dir, "iPXE initialising devices", 60*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const timeout = 2 * time.Second
	begin := time.Now()
	if err := d.Shutdown(ctx, spec.ID, spec.Dir, timeout); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	took := time.Since(begin)
	t.Logf("Shutdown took %v", took.Round(time.Millisecond))
	if took < timeout || took > timeout+5*time.Second {
		t.Errorf("Shutdown took %v with a %v timeout for a guest that ignores ACPI", took, timeout)
	}
	assertStopped(t, d, spec, info.PID)
}

func TestUEFI(t *testing.T) {
	spec := testSpec(t)
	spec.Firmware = "uefi"
	d := NewQEMU(QEMUOptions{})
	info := start(t, d, spec)
	waitConsole(t, spec.Dir, guestBooted, 90*time.Second)
	vars, err := os.Stat(filepath.Join(spec.Dir, UEFIVarsFile))
	if err != nil {
		t.Fatalf("no UEFI variable store: %v", err)
	}
	tmpl, err := os.Stat("/usr/share/OVMF/OVMF_VARS_4M.fd")
	if err == nil && vars.Size() != tmpl.Size() {
		t.Errorf("variable store is %d bytes, template %d", vars.Size(), tmpl.Size())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Kill(ctx, spec.ID, spec.Dir); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	assertStopped(t, d, spec, info.PID)
	if _, err := os.Stat(filepath.Join(spec.Dir, UEFIVarsFile)); err != nil {
		t.Errorf("Kill removed the UEFI variable store: %v", err)
	}
}

// TestTap attaches a NIC to a tap device. The tap stays down and has no
// address, so nothing the guest sends goes anywhere.
func TestTap(t *testing.T) {
	spec := testSpec(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) not installed")
	}
	tap := "hqt" + newUUID(t)[:8]
	if out, err := exec.Command("ip", "tuntap", "add", "dev", tap, "mode", "tap").CombinedOutput(); err != nil {
		t.Skipf("cannot create a tap device: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", tap).Run() })
	spec.NICs = append(spec.NICs, NIC{Tap: tap, MAC: "52:54:00:12:34:02"})
	d := NewQEMU(QEMUOptions{})
	info := start(t, d, spec)

	// QEMU holds the tap open: one of its descriptors is /dev/net/tun
	// bound to the interface.
	fdinfo, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fdinfo/*", info.PID))
	attached := false
	for _, f := range fdinfo {
		if strings.Contains(readFile(f), "iff:\t"+tap+"\n") {
			attached = true
		}
	}
	if !attached {
		t.Errorf("qemu (pid %d) has no descriptor attached to tap %s", info.PID, tap)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Kill(ctx, spec.ID, spec.Dir); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	assertStopped(t, d, spec, info.PID)
}

// TestLookupStale: a pid file naming a live process that is not the VM
// (here: the test itself, as after PID reuse) finds nothing, and Start
// replaces it.
func TestLookupStale(t *testing.T) {
	dir := t.TempDir()
	id := newUUID(t)
	if err := os.WriteFile(filepath.Join(dir, PIDFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := NewQEMU(QEMUOptions{})
	ctx := context.Background()
	if _, ok, err := d.Lookup(ctx, id, dir); ok || err != nil {
		t.Errorf("Lookup with a stale pid file = %v, %v; want not found", ok, err)
	}
	if err := d.Wait(ctx, id, dir); err != nil {
		t.Errorf("Wait with a stale pid file: %v", err)
	}
	if err := d.Resume(ctx, id, dir); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Resume with a stale pid file = %v, want ErrNotRunning", err)
	}
	if err := d.Kill(ctx, id, dir); err != nil {
		t.Errorf("Kill with a stale pid file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, PIDFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Kill left the stale pid file")
	}
}

// TestConsoleLogAppends: QEMU writes the console log with O_APPEND
// (logappend=on), so the agent may cap a running VM's log by copying it
// aside and truncating it in place (agent/console.RotateLog): what the
// guest prints next starts the file again, with no hole of NULs where
// the old output was.
func TestConsoleLogAppends(t *testing.T) {
	spec := testSpec(t)
	d := NewQEMU(QEMUOptions{})
	info := start(t, d, spec)
	waitConsole(t, spec.Dir, guestSeed, 90*time.Second)

	logPath := filepath.Join(spec.Dir, ConsoleLog)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", info.PID))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, fd := range fds {
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", info.PID, fd.Name())); target != logPath {
			continue
		}
		found = true
		fdinfo := readFile(fmt.Sprintf("/proc/%d/fdinfo/%s", info.PID, fd.Name()))
		var flags int64
		for _, l := range strings.Split(fdinfo, "\n") {
			if v, ok := strings.CutPrefix(l, "flags:"); ok {
				flags, err = strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				if err != nil {
					t.Fatalf("fdinfo flags %q: %v", v, err)
				}
			}
		}
		if flags&syscall.O_APPEND == 0 {
			t.Errorf("QEMU holds %s without O_APPEND (flags %#o)", logPath, flags)
		}
	}
	if !found {
		t.Fatalf("QEMU (pid %d) does not hold %s open", info.PID, logPath)
	}

	before, err := os.Stat(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(logPath, 0); err != nil {
		t.Fatal(err)
	}
	// The guest prints on the power button.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Shutdown(ctx, spec.ID, spec.Dir, 30*time.Second); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	log := readFile(logPath)
	if !strings.Contains(log, guestPowerOff) {
		t.Fatalf("console log after the truncation has no %q: %q", guestPowerOff, tail([]byte(log), 2000))
	}
	if strings.ContainsRune(log, 0) || int64(len(log)) >= before.Size() {
		t.Errorf("QEMU wrote past the end of the truncated log: %d bytes (%d before), starting %q",
			len(log), before.Size(), log[:min(len(log), 40)])
	}
}
