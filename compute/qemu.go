package compute

import (
	"cmp"
	"context"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"hearth.dev/hearth/atomicfile"
	"hearth.dev/hearth/flock"
	"hearth.dev/hearth/process"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// More runtime files in a VM's directory, next to the ones in driver.go.
const (
	// StderrFile collects QEMU's own messages (warnings, why it refused
	// to start, why it died) for the VM's whole life, across restarts.
	StderrFile = "qemu.stderr"
	// UEFIVarsFile is the VM's own copy of the UEFI variable store (boot
	// entries, Secure Boot keys). It is created from the template on the
	// first UEFI start and kept, like an NVRAM, until the directory goes.
	UEFIVarsFile = "OVMF_VARS.fd"
)

// ErrNotRunning is returned (wrapped) by Pause and Resume when no process
// runs for the VM.
var ErrNotRunning = errors.New("vm is not running")

// QEMUOptions configure the QEMU driver. The zero value works on Debian.
type QEMUOptions struct {
	// Binary is the emulator to run; "" means qemu-system-x86_64 from PATH.
	Binary string
	// OVMFCode and OVMFVars are the UEFI firmware and the template of its
	// variable store; "" picks Debian's 4 MiB images (package ovmf).
	OVMFCode string
	OVMFVars string
	// StartTimeout bounds how long Start waits for a new process's control
	// socket when ctx has no deadline of its own. Default 30s.
	StartTimeout time.Duration
	// QMPTimeout bounds each control-socket conversation (Lookup, Pause,
	// ...) when ctx has no deadline of its own. Default 10s.
	QMPTimeout time.Duration
	// Nice is the CPU niceness of every thread of a VM's process (0-19;
	// 0 leaves them as the agent is). Guests that keep every core busy
	// then still leave the host's own services (the agent, the server when
	// it shares the machine) the CPU they need to answer in time; a guest
	// on an otherwise idle host still gets all of it.
	Nice int
}

// QEMU runs each VM as its own qemu-system-x86_64 process, started in a new
// session with its output in files, so it is not the agent's to take down:
// the agent may die (even by SIGKILL) and a new QEMU driver in a new agent
// finds the same process again from the VM's directory. The pid file there
// is the source of truth; the process's command line carries the VM's UUID
// so a stale pid file pointing at a recycled PID is never mistaken for the
// VM.
//
// What the agent must know:
//   - QEMU inherits the agent's cgroup. Under systemd, stopping the agent's
//     unit kills its VMs unless the unit has KillMode=process (or the agent
//     moves each VM into a scope of its own).
//   - QEMU serves one QMP client at a time; the driver connects per call.
//     Anything else that keeps the QMP socket open makes driver calls wait
//     until their context ends.
//   - A guest reboot stays inside the process. A guest power-off or a
//     guest kernel panic (told by the pvpanic device) does not end it:
//     QEMU runs with -action shutdown=pause,panic=pause and keeps the
//     process, in status "shutdown" or "guest-panicked" (GuestStopped),
//     so the agent can tell a guest that powered itself off from a crash,
//     even for a process an earlier agent started. Shutdown or Kill then
//     ends it.
//   - Lookup reporting Status "prelaunch" means an agent died between
//     spawning QEMU and letting it run: Kill and Start again.
type QEMU struct {
	opts QEMUOptions
}

var _ Driver = (*QEMU)(nil)

// NewQEMU returns the QEMU driver.
func NewQEMU(opts QEMUOptions) *QEMU {
	if opts.Binary == "" {
		opts.Binary = "qemu-system-x86_64"
	}
	if opts.OVMFCode == "" {
		opts.OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	}
	if opts.OVMFVars == "" {
		opts.OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if opts.QMPTimeout <= 0 {
		opts.QMPTimeout = 10 * time.Second
	}
	return &QEMU{opts: opts}
}

// Start launches the VM paused (-S), wires what must be wired before its
// CPUs run (unplugged NICs get their link down), then lets it run. It
// returns once QMP has answered and the VM runs.
func (q *QEMU) Start(ctx context.Context, spec Spec) (Info, error) {
	if err := validate(spec); err != nil {
		return Info{}, fmt.Errorf("start vm %s: %w", spec.ID, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, q.opts.StartTimeout)
		defer cancel()
	}
	fail := func(err error) (Info, error) {
		return Info{}, fmt.Errorf("start vm %s (%s): %w", spec.Name, spec.ID, err)
	}

	unlock, err := lockDir(ctx, spec.Dir)
	if err != nil {
		return fail(err)
	}
	defer unlock()

	if p, ok, err := findProcess(spec.ID, spec.Dir); err != nil {
		return fail(err)
	} else if ok {
		return fail(fmt.Errorf("already running as pid %d", p.PID))
	}
	removeRuntimeFiles(spec.Dir)

	if spec.Firmware == "uefi" {
		if err := q.prepareUEFIVars(spec.Dir); err != nil {
			return fail(err)
		}
	}
	args, err := q.commandLine(spec)
	if err != nil {
		return fail(err)
	}

	stderrPath := filepath.Join(spec.Dir, StderrFile)
	stderr, offset, err := openStderr(stderrPath)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(stderr, "hearth: %s starting %s\n", time.Now().UTC().Format(time.RFC3339), q.opts.Binary)
	cmd := exec.Command(q.opts.Binary, args...)
	cmd.Dir = spec.Dir
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	// A new session: no controlling terminal, not in the agent's process
	// group, so neither a signal to the agent's group nor the agent's
	// death reaches QEMU.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	stderr.Close()
	if err != nil {
		return fail(fmt.Errorf("run %s: %w", q.opts.Binary, err))
	}
	// Reap the process when it exits while this agent lives; after an
	// agent restart it is init's (or a subreaper's) to reap.
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	abort := func(err error) (Info, error) {
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
		removeRuntimeFiles(spec.Dir)
		if tail := stderrTail(stderrPath, offset); tail != "" {
			err = fmt.Errorf("%w; qemu said: %s", err, tail)
		}
		return fail(err)
	}

	c, err := waitForQMP(ctx, filepath.Join(spec.Dir, QMPSocket), exited)
	if err != nil {
		return abort(err)
	}
	defer c.Close()
	for i, n := range spec.NICs {
		if n.Tap == "" {
			if err := c.Execute(ctx, "set_link", map[string]any{"name": nicID(i), "up": false}, nil); err != nil {
				return abort(err)
			}
		}
	}
	// The process is still paused (-S): every thread that runs guest
	// code exists now, and threads made later inherit the niceness.
	if err := renice(cmd.Process.Pid, q.opts.Nice); err != nil {
		return abort(err)
	}
	if spec.Incoming != "" {
		if spec.IncomingTLS != nil {
			if err := incomingTLS(ctx, c, spec.IncomingTLS); err != nil {
				return abort(err)
			}
		}
		// Started with -incoming defer: listen now, and stay paused (-S)
		// when the state has arrived, until the source has let go.
		if err := c.Execute(ctx, "migrate-incoming", map[string]any{"uri": spec.Incoming}, nil); err != nil {
			return abort(err)
		}
	} else if err := c.Execute(ctx, "cont", nil, nil); err != nil {
		return abort(err)
	}
	p, ok, err := findProcess(spec.ID, spec.Dir)
	if err != nil {
		return abort(err)
	}
	if !ok || p.PID != cmd.Process.Pid {
		return abort(fmt.Errorf("pid file %s does not name the process started (pid %d)", filepath.Join(spec.Dir, PIDFile), cmd.Process.Pid))
	}
	info, err := query(ctx, c, p)
	if err != nil {
		return abort(err)
	}
	return info, nil
}

// Lookup finds the VM's process from its pid file and asks it for its
// state. When the process is there but does not answer on QMP (hung, or
// another client holds the socket), it returns ok with the PID, an empty
// State and the error.
func (q *QEMU) Lookup(ctx context.Context, id, dir string) (Info, bool, error) {
	p, ok, err := findProcess(id, dir)
	if err != nil || !ok {
		return Info{}, false, err
	}
	ctx, cancel := q.qmpContext(ctx)
	defer cancel()
	c, err := DialQMP(ctx, filepath.Join(dir, QMPSocket))
	if err != nil {
		return infoOf(p), true, fmt.Errorf("lookup vm %s: %w", id, err)
	}
	defer c.Close()
	info, err := query(ctx, c, p)
	if err != nil {
		return infoOf(p), true, fmt.Errorf("lookup vm %s: %w", id, err)
	}
	return info, true, nil
}

// Shutdown presses the VM's ACPI power button and waits up to timeout for
// the guest to power off, then kills the process. A guest that has
// stopped (powered off now or before, or panicked: GuestStopped) is told
// to quit, so the process ends at once and cleanly. A VM paused by Pause is resumed first
// so its guest can hear the button; one that never ran, crashed or hung in
// QEMU is killed at once. If ctx ends first, Shutdown returns ctx's error
// and leaves the process as it is.
func (q *QEMU) Shutdown(ctx context.Context, id, dir string, timeout time.Duration) error {
	p, ok, err := findProcess(id, dir)
	if err != nil {
		return fmt.Errorf("shut down vm %s: %w", id, err)
	}
	if !ok {
		removeRuntimeFiles(dir)
		return nil
	}
	deadline := time.Now().Add(timeout)
	if q.powerButton(ctx, dir, deadline) {
		wctx, cancel := context.WithDeadline(ctx, deadline)
		err := q.waitPoweredOff(wctx, dir, p)
		cancel()
		if err == nil {
			removeRuntimeFiles(dir)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("shut down vm %s: %w", id, ctx.Err())
		}
	}
	if err := process.Kill(ctx, p); err != nil {
		return fmt.Errorf("shut down vm %s: %w", id, err)
	}
	removeRuntimeFiles(dir)
	return nil
}

// powerButton asks the guest to power off and reports whether that is
// worth waiting for.
func (q *QEMU) powerButton(ctx context.Context, dir string, deadline time.Time) bool {
	qctx, cancel := q.qmpContext(ctx)
	defer cancel()
	if dl, ok := qctx.Deadline(); ok && deadline.Before(dl) {
		var c2 context.CancelFunc
		qctx, c2 = context.WithDeadline(qctx, deadline)
		defer c2()
	}
	c, err := DialQMP(qctx, filepath.Join(dir, QMPSocket))
	if err != nil {
		return false
	}
	defer c.Close()
	var st qmpStatus
	if err := c.Execute(qctx, "query-status", nil, &st); err != nil {
		return false
	}
	switch st.Status {
	case "running":
	case "paused", "suspended":
		if err := c.Execute(qctx, "cont", nil, nil); err != nil {
			return false
		}
	case StatusShutdown, StatusGuestPanicked, StatusInternalError:
		return true // stopped already: waitPoweredOff tells it to quit
	default:
		return false
	}
	return c.Execute(qctx, "system_powerdown", nil, nil) == nil
}

// statusPoll is how often waitPoweredOff and Wait ask QEMU for its
// status while they watch a process: a QMP conversation each, so not at
// every look at /proc.
const statusPoll = time.Second

// waitPoweredOff waits until the process p is gone, telling QEMU to quit
// once its guest has stopped (it keeps the process: -action
// shutdown=pause,panic=pause). It returns ctx's error if ctx ends first.
func (q *QEMU) waitPoweredOff(ctx context.Context, dir string, p process.ID) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var asked time.Time
	for p.Alive() {
		if time.Since(asked) >= statusPoll/4 {
			asked = time.Now()
			if GuestStopped(q.status(ctx, dir)) {
				q.quit(ctx, dir)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// status is the VM's QMP status, or "" when QEMU does not answer (it is
// going, busy with another client, or hung).
func (q *QEMU) status(ctx context.Context, dir string) string {
	qctx, cancel := q.qmpContext(ctx)
	defer cancel()
	if dl, ok := qctx.Deadline(); !ok || time.Until(dl) > statusPoll {
		var c2 context.CancelFunc
		qctx, c2 = context.WithTimeout(qctx, statusPoll)
		defer c2()
	}
	c, err := DialQMP(qctx, filepath.Join(dir, QMPSocket))
	if err != nil {
		return ""
	}
	defer c.Close()
	var st qmpStatus
	if err := c.Execute(qctx, "query-status", nil, &st); err != nil {
		return ""
	}
	return st.Status
}

// quit tells QEMU to exit, as it does by itself after the guest powered
// off without -action shutdown=pause.
func (q *QEMU) quit(ctx context.Context, dir string) {
	qctx, cancel := q.qmpContext(ctx)
	defer cancel()
	c, err := DialQMP(qctx, filepath.Join(dir, QMPSocket))
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.Execute(qctx, "quit", nil, nil)
}

// Kill stops the VM's process at once (SIGKILL) and removes its pid file
// and sockets. Killing a VM that is not running only tidies up.
func (q *QEMU) Kill(ctx context.Context, id, dir string) error {
	p, ok, err := findProcess(id, dir)
	if err != nil {
		return fmt.Errorf("kill vm %s: %w", id, err)
	}
	if ok {
		if err := process.Kill(ctx, p); err != nil {
			return fmt.Errorf("kill vm %s: %w", id, err)
		}
	}
	removeRuntimeFiles(dir)
	return nil
}

// Pause stops the VM's CPUs (QMP stop).
func (q *QEMU) Pause(ctx context.Context, id, dir string) error {
	return q.simple(ctx, id, dir, "pause", "stop")
}

// Resume lets the VM's CPUs run again (QMP cont).
func (q *QEMU) Resume(ctx context.Context, id, dir string) error {
	return q.simple(ctx, id, dir, "resume", "cont")
}

func (q *QEMU) simple(ctx context.Context, id, dir, verb, command string) error {
	_, ok, err := findProcess(id, dir)
	if err != nil {
		return fmt.Errorf("%s vm %s: %w", verb, id, err)
	}
	if !ok {
		return fmt.Errorf("%s vm %s: %w", verb, id, ErrNotRunning)
	}
	ctx, cancel := q.qmpContext(ctx)
	defer cancel()
	c, err := DialQMP(ctx, filepath.Join(dir, QMPSocket))
	if err != nil {
		return fmt.Errorf("%s vm %s: %w", verb, id, err)
	}
	defer c.Close()
	if err := c.Execute(ctx, command, nil, nil); err != nil {
		return fmt.Errorf("%s vm %s: %w", verb, id, err)
	}
	return nil
}

// Wait returns when the VM's process is gone or its guest has stopped by
// itself (QEMU keeps the process then: GuestStopped). The process need
// not be this agent's child, so Wait watches /proc rather than waiting on
// it, and asks QEMU its status every statusPoll.
func (q *QEMU) Wait(ctx context.Context, id, dir string) error {
	p, ok, err := findProcess(id, dir)
	if err != nil {
		return fmt.Errorf("wait for vm %s: %w", id, err)
	}
	if !ok {
		return nil
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var asked time.Time
	for p.Alive() {
		if time.Since(asked) >= statusPoll {
			asked = time.Now()
			if GuestStopped(q.status(ctx, dir)) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for vm %s: %w", id, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

func (q *QEMU) qmpContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, q.opts.QMPTimeout)
}

// prepareUEFIVars gives the VM its own variable store, once.
func (q *QEMU) prepareUEFIVars(dir string) error {
	dst := filepath.Join(dir, UEFIVarsFile)
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if _, err := os.Stat(q.opts.OVMFCode); err != nil {
		return fmt.Errorf("uefi firmware: %w (install the ovmf package)", err)
	}
	src, err := os.Open(q.opts.OVMFVars)
	if err != nil {
		return fmt.Errorf("uefi variable store template: %w (install the ovmf package)", err)
	}
	defer src.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("uefi variable store: %w", err)
	}
	_, err = io.Copy(out, src)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("uefi variable store: %w", err)
	}
	return nil
}

// commandLine is the whole of QEMU's arguments for spec.
func (q *QEMU) commandLine(spec Spec) ([]string, error) {
	dir := spec.Dir
	uuid := vmUUID(spec.ID)
	name := spec.Name
	if name == "" {
		name = spec.ID
	}
	args := []string{
		"-name", "guest=" + qemuEscape(name) + ",process=hearth-" + uuid[:8] + ",debug-threads=on",
		"-uuid", uuid,
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-msg", "timestamp=on",
		"-pidfile", filepath.Join(dir, PIDFile),
		// Paused until Start has wired the VM up over QMP.
		"-S",
		// A guest that powers off leaves the process in status
		// "shutdown" rather than ending it, and one whose kernel panics
		// (told by the pvpanic device below) in "guest-panicked": so a
		// power-off is never mistaken for a crash, even by an agent
		// that did not start the process and has no exit status (see
		// GuestStopped). panic=exit-failure would not do: with
		// shutdown=pause, QEMU 7.2 turns it into status "shutdown" too.
		"-action", "shutdown=pause,panic=pause",
	}
	if b := spec.SMBIOS; b != nil {
		args = append(args, "-smbios", "type=1,manufacturer="+qemuEscape(b.Manufacturer)+",product="+qemuEscape(b.Product))
	}

	// graphics=off makes SeaBIOS and iPXE print to the serial port, so
	// the console log shows why a disk or network boot went wrong.
	machine := spec.MachineType
	if machine == "" {
		machine = "q35"
	}
	machine += ",graphics=off"
	if spec.Firmware == "uefi" {
		args = append(args,
			"-blockdev", "driver=file,node-name=fw-code,read-only=on,filename="+qemuEscape(q.opts.OVMFCode),
			"-blockdev", "driver=file,node-name=fw-vars,filename="+qemuEscape(filepath.Join(dir, UEFIVarsFile)),
		)
		machine += ",pflash0=fw-code,pflash1=fw-vars"
	}
	args = append(args, "-machine", machine)
	if spec.KVM {
		args = append(args, "-accel", "kvm", "-cpu", "host")
	} else {
		args = append(args, "-accel", "tcg,thread=multi", "-cpu", "max")
	}
	if spec.LocalTime {
		args = append(args, "-rtc", "base=localtime")
	}
	args = append(args,
		"-smp", strconv.Itoa(spec.CPUs),
		"-m", strconv.FormatInt(spec.MemoryMiB, 10)+"M",
		"-chardev", "socket,id=qmp,server=on,wait=off,path="+qemuEscape(filepath.Join(dir, QMPSocket)),
		"-mon", "chardev=qmp,mode=control",
		// logappend=on keeps the log across restarts, and makes QEMU
		// open it with O_APPEND: every write lands at the file's end, so
		// the agent can cap the log by copying it aside and truncating it
		// in place while QEMU keeps writing (TestConsoleLogAppends).
		"-chardev", "socket,id=ser0,server=on,wait=off,path="+qemuEscape(filepath.Join(dir, ConsoleSocket))+
			",logfile="+qemuEscape(filepath.Join(dir, ConsoleLog))+",logappend=on",
		"-serial", "chardev:ser0",
		// Guests that make SSH host keys on first boot would otherwise
		// wait for entropy.
		"-object", "rng-random,id=rng0,filename=/dev/urandom",
		"-device", "virtio-rng-pci,rng=rng0",
		// The ISA pvpanic device (on pc's ISA bus and q35's LPC bridge):
		// Linux (pvpanic-mmio) and Windows (virtio-win) guests tell QEMU
		// through it that their kernel panicked.
		"-device", "pvpanic",
	)

	boot := spec.Boot
	if boot.From == "kernel" {
		args = append(args, "-kernel", boot.Kernel)
		if boot.Initrd != "" {
			args = append(args, "-initrd", boot.Initrd)
		}
		if boot.Cmdline != "" {
			args = append(args, "-append", boot.Cmdline)
		}
	}

	diskBoot := make([]int, len(spec.Disks))
	nicBoot := make([]int, len(spec.NICs))
	for i, d := range spec.Disks {
		diskBoot[i] = d.BootIndex
	}
	for i, n := range spec.NICs {
		nicBoot[i] = n.BootIndex
	}
	// Booting from disk or network with no device marked: the first one.
	switch {
	case (boot.From == "disk" || boot.From == "") && len(spec.Disks) > 0 && !slices.ContainsFunc(diskBoot, positive):
		diskBoot[0] = 1
	case boot.From == "network" && !slices.ContainsFunc(nicBoot, positive):
		nicBoot[0] = 1
	}

	if slices.ContainsFunc(spec.Disks, func(d Disk) bool { return d.Bus == "scsi" }) {
		args = append(args, "-device", "virtio-scsi-pci,id=scsi0")
	}
	ide := 0 // IDE ports used so far
	secrets := map[string]bool{}
	for i, d := range spec.Disks {
		node := fmt.Sprintf("disk%d", i)
		bd := "driver=" + d.Format + ",node-name=" + node +
			",file.driver=file,file.filename=" + qemuEscape(d.Path)
		if d.ReadOnly || d.CDROM {
			bd += ",read-only=on"
		} else {
			bd += ",discard=unmap"
		}
		if d.Protocol != nil {
			// Shared storage: the JSON form, since the protocol node's
			// options nest (an NFS server, RBD's auth settings).
			for _, sec := range d.Secrets {
				if !secrets[sec.ID] {
					secrets[sec.ID] = true
					args = append(args, "-object", "secret,id="+qemuEscape(sec.ID)+",format=base64,file="+qemuEscape(sec.File))
				}
			}
			opts := map[string]any{"driver": d.Format, "node-name": node, "file": d.Protocol}
			if d.ReadOnly || d.CDROM {
				opts["read-only"] = true
			} else {
				opts["discard"] = "unmap"
			}
			b, err := json.Marshal(opts)
			if err != nil {
				return nil, fmt.Errorf("disks[%d]: %w", i, err)
			}
			bd = string(b)
		}
		var dev string
		switch d.Bus {
		case "scsi":
			dev = "scsi-hd,bus=scsi0.0"
			if d.CDROM {
				dev = "scsi-cd,bus=scsi0.0"
			}
		case "ide":
			dev = "ide-hd,"
			if d.CDROM {
				dev = "ide-cd,"
			}
			dev += ideAddress(machine, ide)
			ide++
		default:
			dev = "virtio-blk-pci"
		}
		dev += ",id=" + node + "-dev,drive=" + node
		if diskBoot[i] > 0 {
			dev += ",bootindex=" + strconv.Itoa(diskBoot[i])
		}
		args = append(args, "-blockdev", bd, "-device", dev)
	}
	if spec.Incoming != "" {
		args = append(args, "-incoming", "defer")
	}
	if spec.Seed != "" {
		args = append(args,
			"-blockdev", "driver=raw,node-name=seed,read-only=on,file.driver=file,file.filename="+qemuEscape(spec.Seed),
			"-device", "virtio-blk-pci,id=seed-dev,drive=seed",
		)
	}
	for i, n := range spec.NICs {
		dev := nicDevices[n.Model] + ",id=" + nicID(i) + ",mac=" + n.MAC
		if n.Tap != "" {
			netdev := fmt.Sprintf("net%d", i)
			nd := "tap,id=" + netdev + ",ifname=" + n.Tap + ",script=no,downscript=no"
			if spec.KVM && exists("/dev/vhost-net") {
				nd += ",vhost=on"
			}
			args = append(args, "-netdev", nd)
			dev += ",netdev=" + netdev
		}
		// A NIC without a tap has no backend at all: QEMU drops what the
		// guest sends and Start sets its link down, so the guest sees an
		// unplugged cable and nothing leaves the process.
		if nicBoot[i] > 0 {
			dev += ",bootindex=" + strconv.Itoa(nicBoot[i])
		} else {
			// No option ROM: iPXE is only needed to boot from the NIC.
			dev += ",romfile="
		}
		args = append(args, "-device", dev)
	}
	return args, nil
}

func positive(i int) bool { return i > 0 }

// nicDevices maps the NIC models the API offers to QEMU's devices.
var nicDevices = map[string]string{
	"":        "virtio-net-pci",
	"virtio":  "virtio-net-pci",
	"e1000":   "e1000",
	"rtl8139": "rtl8139",
}

// ideAddress places the n-th IDE drive: q35's AHCI controller has six
// ports of one unit each (ide.0 … ide.5); the pc machine's IDE controller
// has two buses of two units.
func ideAddress(machine string, n int) string {
	if strings.HasPrefix(machine, "pc") {
		return fmt.Sprintf("bus=ide.%d,unit=%d", n/2, n%2)
	}
	return fmt.Sprintf("bus=ide.%d", n)
}

// ideSlots is how many IDE drives a machine type takes.
func ideSlots(machine string) int {
	if machine == "pc" {
		return 4
	}
	return 6
}

func nicID(i int) string { return fmt.Sprintf("nic%d", i) }

var (
	tapRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
)

// maxSocketPath is what fits in sun_path with its terminating NUL.
const maxSocketPath = 107

func validate(spec Spec) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if spec.ID == "" {
		bad("id is empty")
	}
	if !filepath.IsAbs(spec.Dir) {
		bad("dir %q is not an absolute path", spec.Dir)
	} else {
		for _, f := range []string{QMPSocket, ConsoleSocket} {
			if p := filepath.Join(spec.Dir, f); len(p) > maxSocketPath {
				bad("socket path %s is longer than %d bytes: use a shorter runtime directory", p, maxSocketPath)
			}
		}
		if st, err := os.Stat(spec.Dir); err != nil {
			bad("dir: %w", err)
		} else if !st.IsDir() {
			bad("dir %s is not a directory", spec.Dir)
		}
	}
	if spec.CPUs < 1 {
		bad("cpus is %d, want at least 1", spec.CPUs)
	}
	if spec.MemoryMiB < 16 {
		bad("memoryMiB is %d, want at least 16", spec.MemoryMiB)
	}
	switch spec.Firmware {
	case "bios", "uefi", "":
	default:
		bad("firmware %q: want bios or uefi", spec.Firmware)
	}
	switch spec.Boot.From {
	case "disk", "":
	case "kernel":
		if spec.Boot.Kernel == "" {
			bad("boot.kernel is empty for boot from kernel")
		}
	case "network":
		if len(spec.NICs) == 0 {
			bad("boot from network needs a nic")
		}
	default:
		bad("boot.from %q: want disk, kernel or network", spec.Boot.From)
	}
	bootIndex := map[int]string{}
	useIndex := func(i int, who string) {
		if i < 0 {
			bad("%s: bootIndex %d is negative", who, i)
		}
		if i <= 0 {
			return
		}
		if other, dup := bootIndex[i]; dup {
			bad("%s: bootIndex %d is also %s's", who, i, other)
		}
		bootIndex[i] = who
	}
	switch spec.MachineType {
	case "", "q35", "pc":
	case "virt":
		bad("machineType virt is for arm64 hosts; this host runs x86_64 guests (use q35 or pc)")
	default:
		bad("machineType %q: want q35 or pc", spec.MachineType)
	}
	ide := 0
	for i, d := range spec.Disks {
		who := fmt.Sprintf("disks[%d]", i)
		switch {
		case d.Protocol != nil:
			if drv, _ := d.Protocol["driver"].(string); drv != "rbd" && drv != "nfs" {
				bad("%s: protocol driver %q: want rbd or nfs (a file is a path)", who, drv)
			}
			for _, sec := range d.Secrets {
				if sec.ID == "" || !filepath.IsAbs(sec.File) {
					bad("%s: secret %q needs an id and an absolute file", who, sec.ID)
				}
			}
		case !filepath.IsAbs(d.Path):
			bad("%s: path %q is not absolute", who, d.Path)
		}
		if d.Format != "qcow2" && d.Format != "raw" {
			bad("%s: format %q: want qcow2 or raw", who, d.Format)
		}
		switch d.Bus {
		case "", "virtio":
			if d.CDROM {
				bad("%s: a cdrom cannot be on virtio (use scsi or ide)", who)
			}
		case "scsi":
		case "ide":
			if d.ReadOnly && !d.CDROM {
				bad("%s: an IDE disk cannot be read-only (use virtio or scsi, or a cdrom)", who)
			}
			if ide++; ide > ideSlots(spec.MachineType) {
				bad("%s: more IDE drives than the %s machine has ports (%d)", who, cmp.Or(spec.MachineType, "q35"), ideSlots(spec.MachineType))
			}
		default:
			bad("%s: bus %q: want virtio, scsi or ide", who, d.Bus)
		}
		useIndex(d.BootIndex, who)
	}
	if spec.Incoming != "" && !incomingRE.MatchString(spec.Incoming) {
		bad("incoming %q: want tcp:HOST:PORT", spec.Incoming)
	}
	if spec.Seed != "" && !filepath.IsAbs(spec.Seed) {
		bad("seed %q is not an absolute path", spec.Seed)
	}
	for i, n := range spec.NICs {
		who := fmt.Sprintf("nics[%d]", i)
		if hw, err := net.ParseMAC(n.MAC); err != nil || len(hw) != 6 {
			bad("%s: mac %q is not an Ethernet address", who, n.MAC)
		}
		if n.Tap != "" && !tapRE.MatchString(n.Tap) {
			bad("%s: tap %q is not an interface name", who, n.Tap)
		}
		if _, ok := nicDevices[n.Model]; !ok {
			bad("%s: model %q: want virtio, e1000 or rtl8139", who, n.Model)
		}
		useIndex(n.BootIndex, who)
	}
	return errors.Join(errs...)
}

// qemuEscape doubles commas, QEMU's escape inside option values.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// vmUUID is the SMBIOS UUID QEMU gets for the VM: its ID when that is a
// UUID (object uids are), else a name-based UUID (version 5 layout)
// derived from it, so any ID maps to one stable UUID.
func vmUUID(id string) string {
	if uuidRE.MatchString(id) {
		return strings.ToLower(id)
	}
	h := sha1.Sum([]byte("hearth.dev/vm/" + id))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// waitForQMP waits for a new QEMU's control socket to answer, or for the
// process to die trying.
func waitForQMP(ctx context.Context, path string, exited <-chan error) (*QMPClient, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			if err == nil {
				return nil, errors.New("qemu exited during start")
			}
			return nil, fmt.Errorf("qemu exited during start: %w", err)
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for qmp socket %s: %w", path, ctx.Err())
		case <-tick.C:
		}
		if !exists(path) {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := DialQMP(dctx, path)
		cancel()
		if err == nil {
			return c, nil
		}
	}
}

// qmpStatus is query-status's answer.
type qmpStatus struct {
	Status  string `json:"status"`
	Running bool   `json:"running"`
}

func query(ctx context.Context, c *QMPClient, p process.ID) (Info, error) {
	info := infoOf(p)
	var st qmpStatus
	if err := c.Execute(ctx, "query-status", nil, &st); err != nil {
		return info, err
	}
	info.Status = st.Status
	if st.Running {
		info.State = Running
	} else {
		info.State = Paused
	}
	var kvm struct {
		Enabled bool `json:"enabled"`
	}
	if err := c.Execute(ctx, "query-kvm", nil, &kvm); err != nil {
		return info, err
	}
	info.Accelerator = "tcg"
	if kvm.Enabled {
		info.Accelerator = "kvm"
	}
	return info, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// removeRuntimeFiles removes what only means something while the process
// lives. The console log, QEMU's messages and the UEFI variables stay.
func removeRuntimeFiles(dir string) {
	for _, f := range []string{PIDFile, QMPSocket, ConsoleSocket} {
		os.Remove(filepath.Join(dir, f))
	}
}

// lockDir holds an exclusive flock on the VM's directory, so two drivers
// (or two agents) cannot start the same VM at once.
func lockDir(ctx context.Context, dir string) (unlock func(), err error) {
	unlock, err = flock.Lock(ctx, dir, 50*time.Millisecond)
	if errors.Is(err, flock.ErrBusy) {
		return nil, fmt.Errorf("lock %s: another start holds it: %w", dir, ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return unlock, nil
}

// maxStderr is how large qemu.stderr may grow before a start empties it.
const maxStderr = 1 << 20

// openStderr opens qemu.stderr for appending and returns where this
// start's messages begin.
func openStderr(path string) (*os.File, int64, error) {
	if st, err := os.Stat(path); err == nil && st.Size() > maxStderr {
		os.Truncate(path, 0)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// stderrTail is the end of what QEMU wrote since offset, on one line.
func stderrTail(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, 1<<20))
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "hearth: ") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, " | ")
}

// renice sets the niceness of every thread of process pid (Linux keeps it
// per thread) and of its session's autogroup. QEMU runs in a session of
// its own, and where the kernel groups sessions for CPU scheduling
// (sched_autogroup, on by default in Debian's kernels) a thread's own
// niceness only weighs against threads of the same session: without the
// group's, fifty busy guests would get fifty shares of the CPU to the
// agent's one, however nice their threads.
func renice(pid, nice int) error {
	if nice == 0 {
		return nil
	}
	ag := fmt.Sprintf("/proc/%d/autogroup", pid)
	if err := os.WriteFile(ag, []byte(strconv.Itoa(nice)), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("setting the niceness of QEMU's autogroup: %w", err)
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("setting the niceness of thread %d of QEMU: %w", tid, err)
		}
	}
	return nil
}

// incomingRE is what a migration's listening URI may be: TCP on an IPv4
// address or host name and a port.
var incomingRE = regexp.MustCompile(`^tcp:[A-Za-z0-9.-]+:[0-9]{1,5}$`)

// Migration is what QEMU reports of a finished live migration.
type Migration struct {
	// Total is the whole migration, from the migrate command to the
	// destination having everything; Downtime the part with the guest
	// stopped (QEMU's own figure); Setup the part before RAM was sent.
	Total, Downtime, Setup time.Duration
	// Transferred is the bytes of RAM sent, with pages sent again after
	// the guest dirtied them.
	Transferred int64
}

// Announce asks QEMU to announce the VM's NICs on their links (QMP
// announce-self), for a VM that has just moved here: a virtio guest
// sends its own gratuitous ARPs and unsolicited neighbour advertisements
// (VIRTIO_NET_F_GUEST_ANNOUNCE), and for other NICs QEMU sends RARPs from
// the NIC's MAC. Bridges on the way learn where the MAC is now, and
// neighbours refresh their entries. QEMU announces on its own when an
// incoming migration completes, but then the guest is still paused (the
// destination waits for the source to let go): this repeats it with the
// guest running. Five rounds over about a second.
func (q *QEMU) Announce(ctx context.Context, id, dir string) error {
	_, ok, err := findProcess(id, dir)
	if err != nil {
		return fmt.Errorf("announce vm %s: %w", id, err)
	}
	if !ok {
		return fmt.Errorf("announce vm %s: %w", id, ErrNotRunning)
	}
	ctx, cancel := q.qmpContext(ctx)
	defer cancel()
	c, err := DialQMP(ctx, filepath.Join(dir, QMPSocket))
	if err != nil {
		return fmt.Errorf("announce vm %s: %w", id, err)
	}
	defer c.Close()
	args := map[string]any{"initial": 10, "max": 500, "rounds": 5, "step": 100}
	if err := c.Execute(ctx, "announce-self", args, nil); err != nil {
		return fmt.Errorf("announce vm %s: %w", id, err)
	}
	return nil
}

// Migrate live-migrates the VM to a destination QEMU started with
// Spec.Incoming = uri, and returns once the destination has the whole
// state. The source is left paused ("postmigrate"): the caller resumes
// the destination (Resume) and then kills the source, so that exactly
// one of them runs the guest; or, if the destination never runs it,
// resumes the source instead (QMP cont carries on from the pause, the
// disks taken back). If ctx ends first, the migration is
// cancelled and the source keeps running.
//
// With tls, the stream is TLS: QEMU presents tls's certificate, trusts
// its CA only, and checks that the destination's certificate is for
// tls.Hostname; a destination whose certificate fails that is refused
// and the migration fails (the source keeps running).
func (q *QEMU) Migrate(ctx context.Context, id, dir, uri string, tls *MigrationTLS) (Migration, error) {
	fail := func(err error) (Migration, error) {
		return Migration{}, fmt.Errorf("migrate vm %s to %s: %w", id, uri, err)
	}
	if !incomingRE.MatchString(uri) {
		return fail(fmt.Errorf("%q is not tcp:HOST:PORT", uri))
	}
	proc, ok, err := findProcess(id, dir)
	if err != nil {
		return fail(err)
	} else if !ok {
		return fail(ErrNotRunning)
	}
	// One connection for the whole migration: QMP serves one client at a
	// time, and nothing else should touch the VM meanwhile.
	dctx, cancel := q.qmpContext(ctx)
	c, err := dialQMP(dctx, filepath.Join(dir, QMPSocket), true) // out of band, to yank a stuck migration
	cancel()
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	call := func(command string, args, result any) error {
		qctx, cancel := context.WithTimeout(context.Background(), q.opts.QMPTimeout)
		defer cancel()
		return c.Execute(qctx, command, args, result)
	}
	// A migration still under way (its caller restarted since it began
	// it: QEMU goes on without the QMP connection that asked) is
	// followed, not begun again (QEMU would refuse).
	var now struct {
		Status string `json:"status"`
	}
	if err := call("query-migrate", nil, &now); err != nil {
		return fail(err)
	}
	if !migrationUnderWay(now.Status) {
		if err := q.beginMigration(call, uri, tls); err != nil {
			return fail(err)
		}
	}
	// QEMU answers in-band commands from its main loop, which a
	// migration may hold for a while (the stop-and-copy at the end), or,
	// stuck writing to a destination that does not read, for good: a
	// question not answered in time is waited on, never asked again
	// (each would queue in QEMU, and a full queue stops QEMU reading
	// even out-of-band commands).
	ask := &qmpAsker{c: c, timeout: q.opts.QMPTimeout}
	lastSaid, stuckSince := time.Now(), time.Time{}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var st migrationStatus
		switch err := ask.do(ctx, "query-migrate", nil, &st); {
		case err == nil:
			stuckSince = time.Time{}
			switch st.Status {
			case "completed":
				return st.migration(), nil
			case "failed", "cancelled":
				return fail(fmt.Errorf("%s: %s", st.Status, st.ErrorDesc))
			}
			if time.Since(lastSaid) > 10*time.Second {
				lastSaid = time.Now()
				slog.Info("migration under way", "vm", id, "to", uri, "status", st.Status, "ms", st.Total, "sent", st.RAM.Transferred)
			}
		case isTimeout(err):
			if stuckSince.IsZero() {
				stuckSince = time.Now()
			}
			if time.Since(lastSaid) > 10*time.Second {
				lastSaid = time.Now()
				slog.Warn("QEMU does not answer while it migrates (the destination may not read)", "vm", id, "to", uri, "for", time.Since(stuckSince).Round(time.Second))
			}
		default:
			return fail(err)
		}
		select {
		case <-ctx.Done():
			return q.cancelMigration(ask, proc.PID, uri, fail, ctx.Err())
		case <-tick.C:
		}
	}
}

// migrationStatus is what query-migrate answers, in part.
type migrationStatus struct {
	Status    string `json:"status"`
	Total     int64  `json:"total-time"`
	Downtime  int64  `json:"downtime"`
	Setup     int64  `json:"setup-time"`
	ErrorDesc string `json:"error-desc"`
	RAM       struct {
		Transferred int64 `json:"transferred"`
	} `json:"ram"`
}

func (st migrationStatus) migration() Migration {
	return Migration{Total: time.Duration(st.Total) * time.Millisecond, Downtime: time.Duration(st.Downtime) * time.Millisecond,
		Setup: time.Duration(st.Setup) * time.Millisecond, Transferred: st.RAM.Transferred}
}

// qmpAsker runs in-band commands on a QMP connection, at most one
// unanswered at a time: a command whose answer does not come in time is
// left pending, and the next one first waits for that answer.
type qmpAsker struct {
	c       *QMPClient
	timeout time.Duration
	pending string // the id of the command whose answer is still to come
}

// do runs command, each wait bounded by the asker's timeout and ctx. A
// wait that times out leaves it (or the earlier command it waited on)
// pending, and returns an error isTimeout knows.
func (a *qmpAsker) do(ctx context.Context, command string, args, result any) error {
	a.c.mu.Lock()
	defer a.c.mu.Unlock()
	wait := func(cmd, id string, result any) error {
		qctx, cancel := context.WithTimeout(ctx, a.timeout)
		defer cancel()
		stop := a.c.watch(qctx)
		defer stop()
		err := a.c.receive(qctx, cmd, id, result)
		if err == nil || !isTimeout(err) {
			a.pending = ""
		}
		return err
	}
	if a.pending != "" {
		if err := wait("(an earlier command)", a.pending, nil); isTimeout(err) {
			return err
		}
	}
	qctx, cancel := context.WithTimeout(ctx, a.timeout)
	stop := a.c.watch(qctx)
	id, err := a.c.send(qctx, command, args, false)
	stop()
	cancel()
	if err != nil {
		return err
	}
	a.pending = id
	return wait(command, id, result)
}

// isTimeout reports whether err is a QMP command that was not answered
// in time (not an answer, nor a broken connection).
func isTimeout(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.Canceled)
}

// migrationUnderWay reports whether a query-migrate status is of a
// migration that has begun and not ended.
func migrationUnderWay(status string) bool {
	switch status {
	case "setup", "active", "pre-switchover", "device", "wait-unplug", "cancelling", "postcopy-active":
		return true
	}
	return false
}

// beginMigration sets the migration's capabilities and TLS up and starts
// it to uri (QMP migrate).
func (q *QEMU) beginMigration(call func(string, any, any) error, uri string, tls *MigrationTLS) error {
	// A guest that dirties memory faster than it can be sent would
	// never converge: auto-converge slows its vCPUs until it does.
	caps := []map[string]any{{"capability": "auto-converge", "state": true}}
	if err := call("migrate-set-capabilities", map[string]any{"capabilities": caps}, nil); err != nil {
		return err
	}
	params := map[string]any{"tls-creds": "", "tls-hostname": ""}
	if tls != nil {
		if tls.Hostname == "" {
			return errors.New("migration TLS: no hostname to check the destination's certificate against")
		}
		// A failed attempt left its object: make it afresh, from the
		// files as they are now.
		_ = call("object-del", map[string]any{"id": migrationTLSID}, nil)
		if err := call("object-add", tlsCredsArgs(tls.Dir, "client"), nil); err != nil {
			return fmt.Errorf("migration TLS credentials in %s: %w", tls.Dir, err)
		}
		params = map[string]any{"tls-creds": migrationTLSID, "tls-hostname": tls.Hostname}
	}
	if err := call("migrate-set-parameters", params, nil); err != nil {
		return err
	}
	return call("migrate", map[string]any{"uri": uri}, nil)
}

// cancelMigration cancels a migration that ran out of time and waits
// until QEMU says how it ended. A QEMU that answers is asked to cancel
// (QMP migrate_cancel). One that does not (its migration holds its main
// loop, stuck writing to a destination that does not read) has the
// migration's connections shut down out of band (QMP yank), which ends
// the stuck write and fails the migration. Either way the source then
// runs the guest on. A migration that completed before the cancel
// arrived has the guest paused, its state sent: that is a success, as
// QEMU.Migrate's.
func (q *QEMU) cancelMigration(ask *qmpAsker, pid int, uri string, fail func(error) (Migration, error), why error) (Migration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*q.opts.QMPTimeout)
	defer cancel()
	how := "cancelled"
	if err := ask.do(ctx, "migrate_cancel", nil, nil); isTimeout(err) {
		// Stuck: QEMU's own way first (yank, out of band, shuts down
		// the connections a migration thread blocks on), then the
		// kernel's, for a main loop blocked in the TLS handshake
		// (migratestuck.go).
		how = "QEMU did not answer (the stuck migration held it), so its connections to the destination were shut down"
		yctx, ycancel := context.WithTimeout(ctx, q.opts.QMPTimeout)
		yerr := ask.c.ExecuteOOB(yctx, "yank", map[string]any{"instances": []map[string]any{{"type": "migration"}}}, nil)
		ycancel()
		n, serr := shutDownMigrationSockets(pid, uri)
		if serr != nil || (yerr != nil && n == 0) {
			return fail(fmt.Errorf("%w; QEMU does not answer, and shutting the migration's connections down failed: yank: %v; sockets: %v", why, yerr, serr))
		}
	} else if err != nil {
		return fail(fmt.Errorf("%w; cancelling it: %v", why, err))
	}
	for {
		var st migrationStatus
		err := ask.do(ctx, "query-migrate", nil, &st)
		switch {
		case err != nil && !isTimeout(err):
			return fail(fmt.Errorf("%w; after cancelling it: %v", why, err))
		case err == nil && st.Status == "completed":
			return st.migration(), nil
		case err == nil && (st.Status == "cancelled" || st.Status == "failed"):
			return fail(fmt.Errorf("%w: %s", why, how))
		case ctx.Err() != nil:
			return fail(fmt.Errorf("%w; cancelling it, QEMU still says %q", why, st.Status))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The ids of the QOM objects a migration's TLS uses.
const (
	migrationTLSID   = "hearth-migration-tls"
	migrationAuthzID = "hearth-migration-authz"
)

// The files QEMU's tls-creds-x509 reads from its directory.
const (
	tlsCACert     = "ca-cert.pem"
	tlsServerCert = "server-cert.pem"
	tlsServerKey  = "server-key.pem"
	tlsClientCert = "client-cert.pem"
	tlsClientKey  = "client-key.pem"
)

func tlsCredsArgs(dir, endpoint string) map[string]any {
	return map[string]any{"qom-type": "tls-creds-x509", "id": migrationTLSID, "dir": dir, "endpoint": endpoint, "verify-peer": true}
}

// incomingTLS makes a destination accept its migration over TLS only,
// from a certificate of the CA in t.Dir (with common name t.Peer, when
// set).
func incomingTLS(ctx context.Context, c *QMPClient, t *MigrationTLS) error {
	if err := c.Execute(ctx, "object-add", tlsCredsArgs(t.Dir, "server"), nil); err != nil {
		return fmt.Errorf("migration TLS credentials in %s: %w", t.Dir, err)
	}
	params := map[string]any{"tls-creds": migrationTLSID}
	if t.Peer != "" {
		// QEMU compares the client certificate's distinguished name as
		// GnuTLS writes it: the certificate has a common name only.
		authz := map[string]any{"qom-type": "authz-simple", "id": migrationAuthzID, "identity": "CN=" + t.Peer}
		if err := c.Execute(ctx, "object-add", authz, nil); err != nil {
			return fmt.Errorf("migration TLS: allowing %s only: %w", t.Peer, err)
		}
		params["tls-authz"] = migrationAuthzID
	}
	if err := c.Execute(ctx, "migrate-set-parameters", params, nil); err != nil {
		return fmt.Errorf("migration TLS: %w", err)
	}
	return nil
}

// WriteMigrationTLS writes the files of a host's migration TLS into dir
// as QEMU reads them: the CA's certificate, and the host's certificate
// and key under the names of both ends (a host is the destination of one
// migration and the source of the next). The key is readable by its
// owner only; files are replaced atomically.
func WriteMigrationTLS(dir string, caPEM, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{tlsCACert, caPEM, 0o644}, {tlsServerCert, certPEM, 0o644}, {tlsClientCert, certPEM, 0o644},
		{tlsServerKey, keyPEM, 0o600}, {tlsClientKey, keyPEM, 0o600},
	} {
		if err := atomicfile.Write(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("migration TLS: %w", err)
		}
	}
	return nil
}
