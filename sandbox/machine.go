package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/netns"
)

// Defaults of `hearth sandbox machine add`.
const (
	DefaultMachineDisk   = "8G"
	DefaultMachineMemory = "512M"
	// OVMFCode and OVMFVars are Debian's UEFI firmware (package ovmf) and
	// the template of its variable store, which each UEFI machine copies.
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// Files in a machine's directory. The console log and the UEFI variables
// have the names compute gives them in a VM's directory.
const (
	machineDisk    = "disk.qcow2"
	machineConsole = compute.ConsoleLog
	machineVars    = compute.UEFIVarsFile
	machineQEMULog = compute.StderrFile
)

// MachineConfig says what machine AddMachine makes.
type MachineConfig struct {
	// Dir is the sandbox's directory (default DefaultDir).
	Dir string
	// Name names the machine: a DNS label. It also picks the default MAC
	// and the tap's name.
	Name string
	// UEFI boots OVMF instead of SeaBIOS.
	UEFI bool
	// DiskSize is the virtual size of the machine's empty disk, as
	// qemu-img takes it (default 8G).
	DiskSize string
	// Memory is QEMU's -m (default 512M).
	Memory string
	// MAC is the NIC's address (default MachineMAC(Name)).
	MAC string
	// Executable is the hearth binary used to enter PREFIX-lan (default:
	// this program).
	Executable string
	// QEMU and QEMUImg are the programs run (default qemu-system-x86_64
	// and qemu-img from PATH).
	QEMU, QEMUImg string
}

var (
	machineNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	sizeRE        = regexp.MustCompile(`^[1-9][0-9]*[KMGTkmgt]?$`)
	memoryRE      = regexp.MustCompile(`^[1-9][0-9]*[MGmg]?$`)
)

func (c MachineConfig) withDefaults() (MachineConfig, error) {
	if c.Dir == "" {
		c.Dir = DefaultDir
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return c, fmt.Errorf("--dir: %w", err)
	}
	c.Dir = dir
	if !machineNameRE.MatchString(c.Name) {
		return c, fmt.Errorf("machine name %q: use lowercase letters, digits and '-' (a DNS label of at most 63 characters)", c.Name)
	}
	if c.DiskSize == "" {
		c.DiskSize = DefaultMachineDisk
	}
	if !sizeRE.MatchString(c.DiskSize) {
		return c, fmt.Errorf("--disk %q: give a size such as 8G or 512M", c.DiskSize)
	}
	if c.Memory == "" {
		c.Memory = DefaultMachineMemory
	}
	if !memoryRE.MatchString(c.Memory) {
		return c, fmt.Errorf("--memory %q: give a size such as 512M or 2G", c.Memory)
	}
	if c.MAC == "" {
		c.MAC = MachineMAC(c.Name)
	}
	mac, err := net.ParseMAC(c.MAC)
	if err != nil || len(mac) != 6 {
		return c, fmt.Errorf("--mac %q: give an Ethernet address such as 52:54:00:12:34:56", c.MAC)
	}
	if mac[0]&1 != 0 {
		return c, fmt.Errorf("--mac %s is a multicast address: a NIC needs a unicast one (even first byte)", c.MAC)
	}
	c.MAC = mac.String()
	if c.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return c, fmt.Errorf("finding the hearth binary: %w", err)
		}
		c.Executable = exe
	}
	if c.QEMU == "" {
		c.QEMU = "qemu-system-x86_64"
	}
	if c.QEMUImg == "" {
		c.QEMUImg = "qemu-img"
	}
	return c, nil
}

// MachineMAC is the MAC a machine gets by default: QEMU's locally
// administered prefix 52:54:00 and three bytes of a hash of the name, so
// a machine removed and added again under its name is the same machine to
// the boot service.
func MachineMAC(name string) string {
	h := sha256.Sum256([]byte("hearth sandbox machine " + name))
	return net.HardwareAddr{0x52, 0x54, 0x00, h[0], h[1], h[2]}.String()
}

// tapName is the machine's link in PREFIX-lan: m-NAME, or, for names
// too long for an interface name, m-, the name's start and a hash.
func tapName(name string) string {
	if len(name) <= 13 {
		return "m-" + name
	}
	h := sha256.Sum256([]byte(name))
	return "m-" + name[:6] + "-" + hex.EncodeToString(h[:3])
}

// AddMachine adds a machine to the sandbox's provisioning network and
// powers it on: an empty qcow2 disk and a tap on prov0, and QEMU, started
// inside PREFIX-lan as a daemon, with the NIC first in the boot order and
// the disk second, as a real machine set to network boot.
//
// How the NIC boots depends on the firmware, as on real machines (both
// seen end to end against `hearth boot` on Debian 12):
//   - BIOS: SeaBIOS runs the NIC's option ROM, QEMU's iPXE (ipxe-qemu's
//     efi-virtio.rom, whose legacy part is iPXE). Its DHCPDISCOVER has
//     arch 0 and iPXE's option 175, so the boot service answers with the
//     URL of an iPXE script at once: no TFTP.
//   - UEFI: the NIC gets no option ROM (romfile=), so OVMF's own
//     virtio-net driver and PXE client boot it, as a real UEFI machine's
//     firmware does: DHCP with arch 7 and no iPXE options, ipxe.efi over
//     TFTP, then iPXE fetches its script over HTTP. With QEMU's ROM, the
//     UEFI iPXE driver in it would bind the NIC first and skip the TFTP
//     step.
//
// A BIOS machine whose network and disk boot both fail restarts after
// 10 s and tries again, as a real one in a boot loop; an OVMF one goes on
// to its other boot options (PXE over IPv6, HTTP boot) and then stops in
// its boot manager.
//
// It is recorded in sandbox.json before anything is made; when a step
// fails, what was made is removed again.
func AddMachine(ctx context.Context, cfg MachineConfig) (*Machine, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("adding a machine makes a tap in the sandbox's namespaces: run it as root")
	}
	for _, tool := range []struct{ path, pkg string }{{cfg.QEMU, "qemu-system-x86"}, {cfg.QEMUImg, "qemu-utils"}} {
		if _, err := exec.LookPath(tool.path); err != nil {
			return nil, fmt.Errorf("%s is needed to run a machine (Debian package %s): %w", tool.path, tool.pkg, err)
		}
	}
	firmware := "bios"
	if cfg.UEFI {
		firmware = "uefi"
		for _, f := range []string{OVMFCode, OVMFVars} {
			if _, err := os.Stat(f); err != nil {
				return nil, fmt.Errorf("--uefi needs %s: %w (install Debian's ovmf package)", f, err)
			}
		}
	}

	unlock, err := lockState(ctx, cfg.Dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := loadUpState(cfg.Dir)
	if err != nil {
		return nil, err
	}
	p := st.Provisioning
	if p == nil {
		return nil, fmt.Errorf("the sandbox in %s has no provisioning network (it was built by an older hearth, or is still being built): run hearth sandbox down and up again", cfg.Dir)
	}
	if !exists(netns.Path(p.Netns)) {
		return nil, fmt.Errorf("the provisioning network's namespace %s is gone: run hearth sandbox down and up again", p.Netns)
	}
	m := Machine{
		Name:     cfg.Name,
		MAC:      cfg.MAC,
		Firmware: firmware,
		Memory:   cfg.Memory,
		DiskSize: cfg.DiskSize,
		Tap:      tapName(cfg.Name),
		Dir:      filepath.Join(cfg.Dir, machinesSubdir, cfg.Name),
	}
	for _, o := range st.Machines {
		switch {
		case o.Name == m.Name:
			return nil, fmt.Errorf("machine %s exists already (console %s); remove it first with hearth sandbox machine rm %s", m.Name, o.Console(), m.Name)
		case o.MAC == m.MAC:
			return nil, fmt.Errorf("machine %s has MAC %s already: give --mac another", o.Name, m.MAC)
		case o.Tap == m.Tap:
			return nil, fmt.Errorf("machine %s's tap is %s too: choose another name", o.Name, m.Tap)
		}
	}
	if exists(m.Dir) {
		return nil, fmt.Errorf("%s exists, but no machine %s is recorded: remove it or choose another name", m.Dir, m.Name)
	}
	// Its Machine object first, so that the boot service knows it by
	// name from its first DHCP packet on.
	c, err := machineClient(st)
	if err != nil {
		return nil, err
	}
	created := false
	if c != nil {
		if created, err = registerMachine(ctx, c, m, p.Site); err != nil {
			return nil, fmt.Errorf("machine %s: %w", m.Name, err)
		}
	}
	st.Machines = append(st.Machines, m)
	if err := st.addPath(filepath.Join(cfg.Dir, machinesSubdir)); err != nil {
		return nil, err
	}
	rec := &st.Machines[len(st.Machines)-1]
	if err := startMachine(ctx, cfg, st, rec); err != nil {
		if rerr := removeMachine(ctx, st, m.Name); rerr != nil {
			err = fmt.Errorf("%w; removing what was made: %v", err, rerr)
		}
		if created {
			if rerr := unregisterMachine(ctx, c, m); rerr != nil {
				err = fmt.Errorf("%w; %v", err, rerr)
			}
		}
		return nil, fmt.Errorf("machine %s: %w", m.Name, err)
	}
	return rec, nil
}

// startMachine makes the machine's disk and tap and starts its QEMU. It
// records the process (in m, which is in st) as soon as it runs.
func startMachine(ctx context.Context, cfg MachineConfig, st *State, m *Machine) error {
	p := st.Provisioning
	if err := os.MkdirAll(m.Dir, 0o755); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, cfg.QEMUImg, "create", "-q", "-f", "qcow2", m.Disk(), m.DiskSize).CombinedOutput(); err != nil {
		return fmt.Errorf("creating its disk: %s: %v: %s", cfg.QEMUImg, err, strings.TrimSpace(string(out)))
	}
	if m.Firmware == "uefi" {
		if err := copyFile(OVMFVars, filepath.Join(m.Dir, machineVars)); err != nil {
			return fmt.Errorf("copying the UEFI variable store: %w", err)
		}
	}
	if err := addTap(p.Netns, m.Tap, p.Bridge); err != nil {
		return err
	}
	return launchMachine(ctx, cfg, st, m)
}

// launchMachine starts the machine's QEMU on its disk and tap, which
// exist, and records the process (in m, which is in st) as soon as it
// runs.
func launchMachine(ctx context.Context, cfg MachineConfig, st *State, m *Machine) error {
	p := st.Provisioning
	kvm, _ := compute.DetectKVM(ctx)
	argv := Command(cfg.Executable, p.Netns, append([]string{cfg.QEMU}, machineQEMUArgs(*m, kvm)...)...).Args
	logPath := filepath.Join(m.Dir, machineQEMULog)
	proc, err := startDaemon(argv, logPath)
	if proc != nil {
		m.QEMU = proc
		if serr := st.save(); serr != nil {
			return serr
		}
	}
	if err != nil {
		return fmt.Errorf("%w:\n%s", err, logTail(logPath, 10))
	}
	// QEMU fails at once on a bad option, a busy tap or a missing file;
	// once the firmware prints, it is past all that.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if !proc.alive() {
			return fmt.Errorf("QEMU exited; the end of %s:\n%s", logPath, logTail(logPath, 10))
		}
		if st, err := os.Stat(m.Console()); err == nil && st.Size() > 0 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// machineQEMUArgs is QEMU's command line for m, after the program name.
func machineQEMUArgs(m Machine, kvm bool) []string {
	// graphics=off makes SeaBIOS and iPXE print to the serial port, so the
	// console log shows the whole network boot.
	machine := "q35,graphics=off"
	args := []string{
		"-name", "guest=" + qemuEscape(m.Name),
		"-nodefaults", "-no-user-config",
		"-display", "none",
	}
	if m.Firmware == "uefi" {
		args = append(args,
			"-blockdev", "driver=file,node-name=fw-code,read-only=on,filename="+qemuEscape(OVMFCode),
			"-blockdev", "driver=file,node-name=fw-vars,filename="+qemuEscape(filepath.Join(m.Dir, machineVars)),
		)
		machine += ",pflash0=fw-code,pflash1=fw-vars"
	} else {
		// Only the devices with a bootindex, then, after 10 s, again.
		args = append(args, "-boot", "strict=on,reboot-timeout=10000")
	}
	args = append(args, "-machine", machine)
	nic := "virtio-net-pci,netdev=n0,mac=" + m.MAC + ",bootindex=1"
	if m.Firmware == "uefi" {
		// No option ROM: OVMF's own virtio-net driver and PXE client boot
		// the NIC, as a real UEFI machine's firmware does, rather than the
		// UEFI iPXE driver QEMU's ROM would add.
		nic += ",romfile="
	}
	if kvm {
		args = append(args, "-accel", "kvm", "-cpu", "host")
	} else {
		args = append(args, "-accel", "tcg", "-cpu", "max")
	}
	return append(args,
		"-smp", "1",
		"-m", m.Memory,
		"-chardev", "file,id=ser0,append=on,path="+qemuEscape(m.Console()),
		"-serial", "chardev:ser0",
		// Installers that make SSH host keys would otherwise wait for
		// entropy.
		"-object", "rng-random,id=rng0,filename=/dev/urandom",
		"-device", "virtio-rng-pci,rng=rng0",
		"-netdev", "tap,id=n0,ifname="+m.Tap+",script=no,downscript=no",
		"-device", nic,
		"-blockdev", "driver=qcow2,node-name=disk0,discard=unmap,file.driver=file,file.filename="+qemuEscape(m.Disk()),
		"-device", "virtio-blk-pci,drive=disk0,bootindex=2",
	)
}

// qemuEscape doubles commas, which QEMU's option syntax would take for
// separators.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// addTap makes a persistent tap inside a namespace and plugs it into the
// bridge there. A tap is made with an ioctl on /dev/net/tun, which makes
// it in the calling thread's namespace: so all of it runs on a thread
// inside the namespace.
func addTap(netnsName, tap, bridge string) error {
	return netns.DoNamed(netnsName, func() error {
		t := &netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: tap},
			Mode:      netlink.TUNTAP_MODE_TAP,
			Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_TUN_EXCL,
		}
		if err := netlink.LinkAdd(t); err != nil {
			return fmt.Errorf("creating tap %s in %s: %w", tap, netnsName, err)
		}
		// The creating fds are open in this process only until it
		// exits; the tap persists, for QEMU to attach to.
		for _, f := range t.Fds {
			f.Close()
		}
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		if err := plugIntoBridge(h, tap, bridge); err != nil {
			return fmt.Errorf("%s: %w", netnsName, err)
		}
		return nil
	})
}

// deleteTap deletes a tap in a namespace; a missing tap or namespace is
// fine, anything else by the name is left alone.
func deleteTap(netnsName, tap string) error {
	if !exists(netns.Path(netnsName)) {
		return nil
	}
	return netns.DoNamed(netnsName, func() error {
		l, err := netlink.LinkByName(tap)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return nil
			}
			return fmt.Errorf("link %s in %s: %w", tap, netnsName, err)
		}
		if l.Type() != "tuntap" {
			return fmt.Errorf("link %s in %s is a %s, not a machine's tap: left alone", tap, netnsName, l.Type())
		}
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("deleting %s in %s: %w", tap, netnsName, err)
		}
		return nil
	})
}

// RemoveMachine powers the machine off (stops its QEMU), removes its
// tap, its files and its record, and deletes its Machine objects from the
// sandbox's server: the machine is gone from the lab, as one carried out
// of the rack.
func RemoveMachine(ctx context.Context, dir, name string) error {
	if os.Geteuid() != 0 {
		return errors.New("removing a machine deletes its tap in the sandbox's namespaces: run it as root")
	}
	st, m, unlock, err := lockMachine(ctx, dir, name)
	if err != nil {
		return err
	}
	defer unlock()
	if err := removeMachine(ctx, st, name); err != nil {
		return err
	}
	c, err := machineClient(st)
	if err != nil || c == nil {
		return err
	}
	if err := unregisterMachine(ctx, c, m); err != nil {
		return fmt.Errorf("machine %s is removed, but its Machine object is not: %w; delete it with hearth delete machine %s", name, err, name)
	}
	return nil
}

// RestartMachine power-cycles a machine, as its reset button does: QEMU
// stops and starts again on the same disk, so the machine network-boots
// again (and an installed one boots its disk, if its profile says so).
// Its console log goes on in the same file.
func RestartMachine(ctx context.Context, dir, name string) (*Machine, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("restarting a machine starts QEMU in the sandbox's namespaces: run it as root")
	}
	st, m, unlock, err := lockMachine(ctx, dir, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	cfg, err := MachineConfig{Dir: st.Dir, Name: name}.withDefaults()
	if err != nil {
		return nil, err
	}
	if m.QEMU.alive() {
		if left := terminate(ctx, []Process{*m.QEMU}, 5*time.Second); len(left) > 0 {
			return nil, fmt.Errorf("machine %s: could not stop QEMU (%s)", name, pids(left))
		}
	}
	i := slices.IndexFunc(st.Machines, func(o Machine) bool { return o.Name == name })
	rec := &st.Machines[i]
	rec.QEMU = nil
	if err := st.save(); err != nil {
		return nil, err
	}
	if err := launchMachine(ctx, cfg, st, rec); err != nil {
		return nil, fmt.Errorf("machine %s: %w", name, err)
	}
	return rec, nil
}

// lockMachine locks the sandbox in dir and finds its machine name, with
// an error that lists the machines there are when it has none of that
// name.
func lockMachine(ctx context.Context, dir, name string) (*State, Machine, func(), error) {
	if dir == "" {
		dir = DefaultDir
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, Machine{}, nil, err
	}
	unlock, err := lockState(ctx, dir)
	if err != nil {
		return nil, Machine{}, nil, err
	}
	st, err := loadUpState(dir)
	if err != nil {
		unlock()
		return nil, Machine{}, nil, err
	}
	i := slices.IndexFunc(st.Machines, func(m Machine) bool { return m.Name == name })
	if i < 0 {
		unlock()
		var known []string
		for _, m := range st.Machines {
			known = append(known, m.Name)
		}
		if len(known) == 0 {
			return nil, Machine{}, nil, fmt.Errorf("no machine %s: the sandbox in %s has no machines", name, dir)
		}
		return nil, Machine{}, nil, fmt.Errorf("no machine %s in the sandbox in %s (it has %s)", name, dir, strings.Join(known, ", "))
	}
	return st, st.Machines[i], unlock, nil
}

// removeMachine stops the machine's QEMU, deletes its tap and directory,
// and drops its record. It goes on after a failed step; the record stays
// if anything failed, so it can be tried again.
func removeMachine(ctx context.Context, st *State, name string) error {
	i := slices.IndexFunc(st.Machines, func(m Machine) bool { return m.Name == name })
	if i < 0 {
		return nil
	}
	m := st.Machines[i]
	var errs []error
	if m.QEMU.alive() {
		if left := terminate(ctx, []Process{*m.QEMU}, 5*time.Second); len(left) > 0 {
			errs = append(errs, fmt.Errorf("could not stop QEMU (%s)", pids(left)))
		}
	}
	if st.Provisioning != nil {
		if err := deleteTap(st.Provisioning.Netns, m.Tap); err != nil {
			errs = append(errs, err)
		}
	}
	if rel, err := filepath.Rel(filepath.Join(st.Dir, machinesSubdir), m.Dir); err != nil || rel != m.Name {
		errs = append(errs, fmt.Errorf("%s is not a machine directory of %s: left alone", m.Dir, st.Dir))
	} else if err := os.RemoveAll(m.Dir); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	st.Machines = slices.Delete(st.Machines, i, i+1)
	return st.save()
}

// PrintMachines lists the sandbox's machines with their console logs.
func PrintMachines(w io.Writer, dir string) error {
	if dir == "" {
		dir = DefaultDir
	}
	st, err := loadUpState(dir)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tMAC\tFIRMWARE\tMEMORY\tDISK\tSTATE\tCONSOLE")
	for _, m := range st.Machines {
		state := "not started"
		if m.QEMU != nil {
			state = running(m.QEMU)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.MAC, m.Firmware, m.Memory, m.DiskSize, state, m.Console())
	}
	return tw.Flush()
}

// loadUpState reads the record of the sandbox in dir, with an error that
// says what to do when there is none.
func loadUpState(dir string) (*State, error) {
	st, err := LoadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no sandbox is up in %s (there is no %s): run hearth sandbox up first, or give its --dir", dir, statePath(dir))
	}
	return st, err
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
