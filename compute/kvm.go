package compute

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DetectKVM reports whether QEMU can run a VM with KVM on this host, and a
// sentence for the Host's status saying why or why not. It does not trust
// /dev/kvm's presence (nested or restricted hosts have the device and still
// fail to run a vCPU): it boots a tiny guest that switches to long mode under KVM with the
// same machine and CPU model the driver uses and checks that the guest ran.
// Where KVM works it takes well under a second; where a vCPU hangs it gives
// up after kvmProbeTimeout. The answer is kept for the life of the process
// (a restarted agent probes again), so tests and sandboxes that start many
// agents in one process pay for one probe.
func DetectKVM(ctx context.Context) (ok bool, reason string) {
	return detectKVMOnce(ctx, "qemu-system-x86_64")
}

// DetectKVM is the package's DetectKVM with this driver's QEMU binary.
func (q *QEMU) DetectKVM(ctx context.Context) (ok bool, reason string) {
	return detectKVMOnce(ctx, q.opts.Binary)
}

// kvmProbeTimeout bounds the probe: QEMU starts and runs it in a few
// hundred milliseconds where KVM works, even on a busy machine.
const kvmProbeTimeout = 5 * time.Second

type kvmAnswer struct {
	ok     bool
	reason string
}

var (
	kvmMu      sync.Mutex
	kvmAnswers = map[string]kvmAnswer{} // by QEMU binary
)

func detectKVMOnce(ctx context.Context, binary string) (bool, string) {
	kvmMu.Lock()
	defer kvmMu.Unlock()
	if a, ok := kvmAnswers[binary]; ok {
		return a.ok, a.reason
	}
	ok, reason := detectKVM(ctx, binary)
	if ctx.Err() == nil { // an answer cut short by the caller is no answer
		kvmAnswers[binary] = kvmAnswer{ok, reason}
	}
	return ok, reason
}

// kvmProbeExit is the status QEMU exits with when the probe guest writes
// 0x2a to the isa-debug-exit port: (0x2a << 1) | 1.
const kvmProbeExit = 85

// kvmProbeFirmware is a 64 KiB firmware that does what every guest kernel
// does first: it leaves real mode for protected mode and then for long mode
// (a GDT, PAE paging of the first 2 MiB, EFER.LME), and only then writes
// 0x2a to port 0xf4. A probe that stays in real mode is not enough: on some
// nested hosts a vCPU runs real-mode code under KVM and hangs at the first
// switch to protected mode, where Linux hangs too, right after "Probing
// EDD". The reset vector (the last 16 bytes) jumps to F000:0000, where the
// code below sits; it was assembled with GNU as from this source:
//
//		.code16                         ; at 0xF0000
//		cli
//		lgdtd cs:[gdtr]
//		mov eax, cr0; or al, 1; mov cr0, eax
//		jmp dword 0x08:pm32
//		.code32
//	pm32:	mov ax, 0x10; mov ds, ax; mov es, ax; mov ss, ax
//		mov edi, 0x1000; mov ecx, 0xc00; xor eax, eax; rep stosd
//		mov dword [0x1000], 0x2003     ; PML4[0] → PDPT
//		mov dword [0x2000], 0x3003     ; PDPT[0] → PD
//		mov dword [0x3000], 0x83       ; PD[0]: 2 MiB page at 0
//		mov eax, cr4; or eax, 0x20; mov cr4, eax          ; PAE
//		mov eax, 0x1000; mov cr3, eax
//		mov ecx, 0xc0000080; rdmsr; or eax, 0x100; wrmsr  ; EFER.LME
//		mov eax, cr0; or eax, 0x80000000; mov cr0, eax    ; paging
//		jmp 0x18:lm64
//		.code64
//	lm64:	mov al, 0x2a; out 0xf4, al
//	1:	hlt; jmp 1b
//	gdt:	null, 32-bit code 0x00CF9A000000FFFF, data 0x00CF92000000FFFF,
//		64-bit code 0x00AF9A000000FFFF; gdtr: limit, base
func kvmProbeFirmware() []byte {
	code, err := hex.DecodeString(kvmProbeCode)
	if err != nil {
		panic(err)
	}
	b := bytes.Repeat([]byte{0xf4}, 64<<10) // hlt
	copy(b, code)
	copy(b[len(b)-16:], []byte{0xea, 0x00, 0x00, 0x00, 0xf0}) // jmp far F000:0000
	return b
}

// kvmProbeCode is the assembled source above, placed at the firmware's start.
const kvmProbeCode = "fa2e660f0116a8000f20c00c010f22c066ea18000f00080066b810008ed88ec08ed0bf00100000" +
	"b9000c000031c0f3abc7050010000003200000c7050020000003300000c70500300000830000000f20" +
	"e083c8200f22e0b8001000000f22d8b9800000c00f320d000100000f300f20c00d000000800f22c0ea" +
	"7f000f001800b02ae6f4f4ebfd66900000000000000000ffff0000009acf00ffff00000092cf00ffff" +
	"0000009aaf001f0088000f00"

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

	ctx, cancel := context.WithTimeout(ctx, kvmProbeTimeout)
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
		what = "did not finish it within " + kvmProbeTimeout.String()
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
