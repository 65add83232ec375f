package compute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// DetectKVM reports whether QEMU can run a VM with KVM on this host, and a
// sentence for the Host's status saying why or why not. It does not trust
// /dev/kvm's presence (nested or restricted hosts have the device and still
// fail to run a vCPU): it boots a one-instruction guest under KVM with the
// same machine and CPU model the driver uses and checks that the guest ran.
// It takes well under a second; nothing is cached.
func DetectKVM(ctx context.Context) (ok bool, reason string) {
	return detectKVM(ctx, "qemu-system-x86_64")
}

// DetectKVM is the package's DetectKVM with this driver's QEMU binary.
func (q *QEMU) DetectKVM(ctx context.Context) (ok bool, reason string) {
	return detectKVM(ctx, q.opts.Binary)
}

// kvmProbeExit is the status QEMU exits with when the probe guest writes
// 0x2a to the isa-debug-exit port: (0x2a << 1) | 1.
const kvmProbeExit = 85

// kvmProbeFirmware is a 64 KiB firmware whose reset vector (the last 16
// bytes, where an x86 CPU starts in real mode) writes 0x2a to port 0xf4 and
// halts.
func kvmProbeFirmware() []byte {
	b := bytes.Repeat([]byte{0xf4}, 64<<10) // hlt
	copy(b[len(b)-16:], []byte{
		0xb0, 0x2a, // mov al, 0x2a
		0xe6, 0xf4, // out 0xf4, al
		0xfa,       // cli
		0xf4,       // hlt
		0xeb, 0xfd, // jmp back to hlt
	})
	return b
}

func detectKVM(ctx context.Context, binary string) (bool, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Sprintf("kvm unusable: %v; VMs run under TCG (slow)", err)
	}
	f.Close()

	tmp, err := os.MkdirTemp("", "hearth-kvm-probe-")
	if err != nil {
		return false, fmt.Sprintf("kvm not probed: %v; VMs run under TCG (slow)", err)
	}
	defer os.RemoveAll(tmp)
	fw := filepath.Join(tmp, "probe.bin")
	if err := os.WriteFile(fw, kvmProbeFirmware(), 0o644); err != nil {
		return false, fmt.Sprintf("kvm not probed: %v; VMs run under TCG (slow)", err)
	}

	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary,
		"-nodefaults", "-no-user-config", "-display", "none",
		"-machine", "q35", "-accel", "kvm", "-cpu", "host", "-smp", "1", "-m", "16",
		"-bios", fw,
		"-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
		"-no-reboot",
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == kvmProbeExit {
		return true, "kvm works: a test guest ran on /dev/kvm"
	}
	what := "exited without running it"
	switch {
	case ctx.Err() != nil:
		what = "did not finish it within 10s"
	case err != nil:
		what = "failed (" + err.Error() + ")"
	}
	msg := strings.Join(strings.Fields(strings.ReplaceAll(stderr.String(), "\n", " | ")), " ")
	msg = strings.TrimSuffix(msg, " |")
	if msg != "" {
		what += ": " + truncate(msg, 500)
	}
	return false, fmt.Sprintf("kvm unusable: a test VM under %s -accel kvm %s; VMs run under TCG (slow)", binary, what)
}
