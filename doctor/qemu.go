package doctor

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"hearth.dev/hearth/compute"
)

// Condition types of QEMU's findings.
const (
	condQEMU   = "QEMU"
	condKVM    = "KVM"
	condImages = "DiskImages"
	condIPXE   = "IPXE"
	condTools  = "Tools"
)

// qemuTimeout bounds one paused start of QEMU: it loads its firmware and
// option ROMs and quits, in well under a second.
const qemuTimeout = 20 * time.Second

// qemuChecks finds the emulator and starts it paused the way the QEMU
// driver starts VMs, once with SeaBIOS and a virtio NIC's iPXE option ROM
// (BIOS VMs, network boot) and once with OVMF in flash (UEFI VMs), and
// quits it before a CPU runs.
func (o Options) qemuChecks(ctx context.Context) []Finding {
	path, err := exec.LookPath(o.QEMU)
	if err != nil {
		return []Finding{{Check: "qemu", Condition: condQEMU, Status: Fail,
			Message: fmt.Sprintf("%s is not installed", o.QEMU), Fix: "apt-get install qemu-system-x86"}}
	}
	ver, _ := exec.CommandContext(ctx, path, "--version").Output()
	first, _, _ := strings.Cut(string(ver), "\n")
	out := []Finding{{Check: "qemu", Condition: condQEMU, Status: OK, Message: strings.TrimSpace(first) + " (" + path + ")"}}

	bios := Finding{Check: "firmware-bios", Condition: condQEMU, Status: OK,
		Message: "QEMU starts a BIOS VM (SeaBIOS) with a virtio NIC's iPXE option ROM"}
	if msg, err := o.tryQEMU(ctx, "-machine", "q35,graphics=off", "-device", "virtio-net-pci"); err != nil {
		bios.Status, bios.Message, bios.Fix = Fail, "QEMU cannot start a BIOS VM with a virtio NIC: "+msg, firmwareFix(msg)
	}
	out = append(out, bios)

	uefi := Finding{Check: "firmware-uefi", Condition: condQEMU, Status: OK,
		Message: "QEMU starts a UEFI VM (OVMF " + o.OVMFCode + ")"}
	if msg, err := o.tryUEFI(ctx); err != nil {
		uefi.Status, uefi.Message, uefi.Fix = Fail, "QEMU cannot start a UEFI VM: "+msg, firmwareFix(msg)
	}
	return append(out, uefi)
}

// tryUEFI starts QEMU paused with OVMF as the driver gives it: the code
// read-only and a copy of the variable store, both as flash.
func (o Options) tryUEFI(ctx context.Context) (string, error) {
	for _, f := range []string{o.OVMFCode, o.OVMFVars} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Sprintf("%s is missing", f), err
		}
	}
	tmp, err := os.MkdirTemp("", "hearth-doctor-")
	if err != nil {
		return err.Error(), err
	}
	defer os.RemoveAll(tmp)
	vars, err := os.ReadFile(o.OVMFVars)
	if err != nil {
		return err.Error(), err
	}
	varsCopy := filepath.Join(tmp, "vars.fd")
	if err := os.WriteFile(varsCopy, vars, 0o600); err != nil {
		return err.Error(), err
	}
	return o.tryQEMU(ctx,
		"-blockdev", "driver=file,node-name=fw-code,read-only=on,filename="+o.OVMFCode,
		"-blockdev", "driver=file,node-name=fw-vars,filename="+varsCopy,
		"-machine", "q35,graphics=off,pflash0=fw-code,pflash1=fw-vars")
}

// tryQEMU starts QEMU paused (-S, under TCG, so KVM plays no part) with
// args, which loads the firmware and the devices' ROMs, then quits it
// through QMP on stdin. It returns QEMU's complaint when it cannot.
func (o Options) tryQEMU(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, qemuTimeout)
	defer cancel()
	full := append([]string{"-nodefaults", "-no-user-config", "-display", "none", "-accel", "tcg", "-m", "64", "-S",
		"-qmp", "stdio"}, args...)
	cmd := exec.CommandContext(ctx, o.QEMU, full...)
	cmd.Stdin = strings.NewReader(`{"execute":"qmp_capabilities"}` + "\n" + `{"execute":"quit"}` + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err == nil {
		return "", nil
	}
	msg := firstErrorLine(stderr.String())
	if msg == "" {
		msg = err.Error()
	}
	return msg, err
}

// firstErrorLine is the first line of QEMU's stderr that is not a warning.
func firstErrorLine(stderr string) string {
	var warn string
	for _, l := range strings.Split(stderr, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "":
		case strings.Contains(l, "warning:"):
			if warn == "" {
				warn = l
			}
		default:
			return l
		}
	}
	return warn
}

// firmwareFix names the package that holds what QEMU could not find.
func firmwareFix(msg string) string {
	switch {
	case strings.Contains(msg, "romfile") || strings.Contains(msg, ".rom"):
		return "apt-get install ipxe-qemu (the iPXE option ROMs QEMU's NICs boot from the network with)"
	case strings.Contains(msg, "BIOS") || strings.Contains(msg, "bios"):
		return "apt-get install seabios (QEMU's BIOS)"
	case strings.Contains(msg, "OVMF") || strings.Contains(msg, "pflash") || strings.Contains(msg, "fw-"):
		return "apt-get install ovmf (UEFI firmware for VMs)"
	default:
		return "apt-get install --reinstall qemu-system-x86 seabios ipxe-qemu ovmf"
	}
}

// kvm asks the driver's probe: a tiny guest that runs through long mode
// under KVM. A host without KVM runs VMs under TCG, much slower.
func (o Options) kvm(ctx context.Context) []Finding {
	if _, err := exec.LookPath(o.QEMU); err != nil {
		return []Finding{{Check: "kvm", Condition: condKVM, Status: Skipped,
			Message: "not tried: " + o.QEMU + " is not installed", Fix: "apt-get install qemu-system-x86"}}
	}
	ok, why := compute.NewQEMU(compute.QEMUOptions{Binary: o.QEMU}).DetectKVM(ctx)
	if ok {
		return []Finding{{Check: "kvm", Condition: condKVM, Status: OK, Message: why}}
	}
	return []Finding{{Check: "kvm", Condition: condKVM, Status: Warn, Message: why,
		Fix: "enable virtualisation (VT-x or AMD-V) in the firmware setup, or nested virtualisation on the hypervisor this machine runs on; " +
			"check that /dev/kvm exists (modprobe kvm_intel or kvm_amd) and that dmesg says nothing about kvm"}}
}

// qemuImg makes a qcow2 file with qemu-img where volumes go (beside the
// data directory when it does not exist yet), and asks qemu-img to open an
// RBD image: the driver (qemu-block-extra) is loaded only when asked for,
// and without it qemu-img answers "Unknown driver".
func (o Options) qemuImg(ctx context.Context, dataDir string) []Finding {
	path, err := exec.LookPath(o.QEMUImg)
	if err != nil {
		return []Finding{{Check: "qemu-img", Condition: condImages, Status: Fail,
			Message: o.QEMUImg + " is not installed: volumes and images cannot be made", Fix: "apt-get install qemu-utils"}}
	}
	ctx, cancel := context.WithTimeout(ctx, qemuTimeout)
	defer cancel()
	img := Finding{Check: "qemu-img", Condition: condImages, Status: OK}
	dir := existingDir(dataDir)
	tmp, err := os.MkdirTemp(dir, ".hearth-doctor-")
	if err != nil {
		img.Status, img.Message = Skipped, fmt.Sprintf("not tried: %v", err)
		img.Fix = "run hearth doctor as the user the agent runs as (root)"
	} else {
		defer os.RemoveAll(tmp)
		out, err := exec.CommandContext(ctx, path, "create", "-q", "-f", "qcow2", filepath.Join(tmp, "t.qcow2"), "1M").CombinedOutput()
		if err != nil {
			img.Status = Fail
			img.Message = fmt.Sprintf("qemu-img cannot make a qcow2 file in %s: %v: %s", dir, err, strings.TrimSpace(string(out)))
			img.Fix = "apt-get install --reinstall qemu-utils, and check that " + dir + " is writable"
		} else {
			img.Message = "qemu-img makes qcow2 files in " + dir
		}
	}
	rbd := Finding{Check: "rbd", Condition: condImages, Status: OK, Message: "QEMU's RBD (Ceph) block driver is installed"}
	out, _ := exec.CommandContext(ctx, path, "info", `json:{"driver":"rbd"}`).CombinedOutput()
	switch s := string(out); {
	case strings.Contains(s, "Unknown driver") || strings.Contains(s, "Unknown protocol"):
		rbd.Status, rbd.Message = Warn, "QEMU's RBD block driver is missing: volumes on Ceph cannot be used here"
		rbd.Fix = "apt-get install qemu-block-extra"
	case !strings.Contains(s, "'pool'"):
		rbd.Status, rbd.Message = Warn, "qemu-img gave an unexpected answer about the RBD driver: "+firstErrorLine(s)
		rbd.Fix = "apt-get install qemu-block-extra"
	}
	return []Finding{img, rbd}
}

// ipxe checks the iPXE binaries the boot service serves (and the
// sandbox's machines boot): BIOS, UEFI, and UEFI on the NIC's own driver.
func (o Options) ipxe() []Finding {
	var missing []string
	for _, f := range []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"} {
		if fi, err := os.Stat(filepath.Join(o.IPXEDir, f)); err != nil || fi.Size() == 0 {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return []Finding{{Check: "ipxe", Condition: condIPXE, Status: Fail,
			Message: fmt.Sprintf("%s has no %s: machines cannot network-boot", o.IPXEDir, strings.Join(missing, ", ")),
			Fix:     "apt-get install ipxe (or give hearth boot --ipxe-dir where they are)"}}
	}
	return []Finding{{Check: "ipxe", Condition: condIPXE, Status: OK,
		Message: "iPXE for BIOS and UEFI in " + o.IPXEDir}}
}

// testGuestTools are what the sandbox builds its test guest with: it
// downloads Debian's kernel and busybox with apt-get and unpacks them with
// dpkg-deb.
func testGuestTools() []Finding {
	var missing []string
	for _, t := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return []Finding{{Check: "test-guest", Condition: condTools, Status: Fail,
			Message: "the sandbox builds its test guest from Debian's packages, but " + strings.Join(missing, ", ") + " is missing",
			Fix:     "run the sandbox on Debian or Ubuntu (apt and dpkg)"}}
	}
	return []Finding{{Check: "test-guest", Condition: condTools, Status: OK,
		Message: "apt-get and dpkg-deb are here to build the test guest from Debian's packages"}}
}

// existingDir is dir, or its closest ancestor that exists.
func existingDir(dir string) string {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return d
		}
		if d == filepath.Dir(d) {
			return d
		}
	}
}
