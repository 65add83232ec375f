// Package compute runs virtual machines on a host. The agent decides what
// should run; a Driver makes one VM process exist, stop, pause or go away,
// and finds it again after the agent restarts. The QEMU driver (qemu.go)
// is the real one; tests of the agent's logic use a fake behind the same
// interface.
package compute

import (
	"context"
	"time"
)

// Spec is everything needed to start one VM, already resolved to paths on
// this host. The agent builds it from a VirtualMachine object.
type Spec struct {
	// ID identifies the VM for its whole life (the object's uid). The
	// driver records it with the process so Lookup can find and verify it.
	ID string
	// Name is for people and logs: "tenant/name".
	Name string
	// Dir is the VM's runtime directory on the host (created by the agent):
	// the driver keeps its pid file, QMP socket, console socket and
	// console log there.
	Dir       string
	CPUs      int
	MemoryMiB int64
	// Firmware is "bios" (SeaBIOS) or "uefi" (OVMF).
	Firmware string
	// MachineType is QEMU's machine: "q35" (the default) or "pc".
	MachineType string
	// LocalTime starts the guest's clock at local time rather than UTC
	// (Windows keeps local time in its real-time clock).
	LocalTime bool
	// KVM uses hardware virtualisation; false runs under TCG.
	KVM   bool
	Boot  Boot
	Disks []Disk
	NICs  []NIC
	// Seed is the path of a NoCloud seed image (label "cidata"), attached
	// read-only; "" for none.
	Seed string
	// Incoming, when set, starts the VM as the destination of a live
	// migration: QEMU listens on this URI ("tcp:HOST:PORT") for the
	// source's state instead of booting, and stays paused once it has
	// it, until Resume (QEMU.Migrate on the source says when). The spec
	// must describe the same devices as the source's, with its disks on
	// shared storage.
	Incoming string
	// SMBIOS, when set, is what the firmware's system information
	// (SMBIOS type 1) says the machine is: how some guests tell the
	// platform they run on (cloud-init's OpenStack datasource looks for
	// the product "OpenStack Nova"). Nil leaves QEMU's own.
	SMBIOS *SMBIOSSystem
}

// SMBIOSSystem is SMBIOS type 1's manufacturer and product name.
type SMBIOSSystem struct {
	Manufacturer, Product string
}

// Boot says how the VM boots.
type Boot struct {
	// From is "disk", "kernel" or "network".
	From    string
	Kernel  string // path, for From == "kernel"
	Initrd  string // path, optional
	Cmdline string
}

// Disk is one block device: a file on this host (Path), or a volume on
// shared storage that QEMU opens itself (Protocol).
type Disk struct {
	Path string
	// Protocol, when set, replaces Path: the options of the format
	// node's protocol node, as -blockdev's JSON form takes them
	// ({"driver": "rbd", …}, {"driver": "nfs", …}; storage.Attachment),
	// and Secrets the secret objects it names, whose values QEMU reads
	// from files so that no key is on its command line.
	Protocol map[string]any `json:",omitempty"`
	Secrets  []Secret       `json:",omitempty"`
	Format   string         // "qcow2" or "raw"
	ReadOnly bool
	// Bus is "virtio" (the default), "scsi" (a virtio-scsi controller)
	// or "ide" (the machine's own IDE/AHCI ports).
	Bus string
	// CDROM makes the disk a read-only CD-ROM drive (on scsi or ide).
	CDROM     bool
	BootIndex int // 0: not a boot device
}

// Secret is a QEMU secret object read from a file (base64, mode 0600).
type Secret struct {
	ID, File string
}

// NIC is one network interface.
type NIC struct {
	// Tap is an existing tap device to attach to. Empty means no backend
	// on the host (the NIC exists but is unplugged), which the agent uses
	// until the VM's network is wired.
	Tap string
	MAC string
	// Model is the device the guest sees: "virtio" (the default),
	// "e1000" or "rtl8139" — the API's names (NICModels).
	Model     string
	BootIndex int // > 0 to PXE-boot from this NIC
}

// State is a VM's run state as the hypervisor sees it.
type State string

const (
	Running State = "running"
	Paused  State = "paused"
	// Stopped: no process (never started, shut down, or crashed).
	Stopped State = "stopped"
)

// Info.Status of a VM whose guest stopped by itself. The QEMU driver
// keeps such a process (its State is Paused) rather than let it end, so
// that how the guest stopped can be told, also of a process an earlier
// agent started (there is no exit status to go by then). The guest will
// not run again in it: Shutdown or Kill ends the process, at once. Wait
// returns when a VM reaches one of them (GuestStopped).
const (
	// StatusShutdown: the guest powered itself off.
	StatusShutdown = "shutdown"
	// StatusGuestPanicked: the guest's kernel panicked and said so
	// through the pvpanic device: a crash.
	StatusGuestPanicked = "guest-panicked"
	// StatusInternalError: QEMU could not go on running the guest (an
	// emulation failure under KVM, for one) and stopped it. Like a panic
	// it is a crash: "cont" cannot resume such a guest.
	StatusInternalError = "internal-error"
)

// GuestStopped reports whether a VM in status (Info.Status) has a guest
// that stopped and cannot run again in its process: StatusShutdown,
// StatusGuestPanicked or StatusInternalError.
func GuestStopped(status string) bool {
	return status == StatusShutdown || status == StatusGuestPanicked || status == StatusInternalError
}

// Info describes a VM process.
type Info struct {
	PID       int
	State     State
	StartedAt time.Time
	// Accelerator is "kvm" or "tcg".
	Accelerator string
	// Status is the hypervisor's own word for the run state when it says
	// more than State ("prelaunch", "internal-error", "guest-panicked",
	// ...): worth showing a person next to a Paused VM.
	Status string
}

// Driver runs VMs. Every method is safe to call again after a failure or
// a restart of the agent: the VM's directory and its process are the only
// state, so a new Driver finds what an old one started.
type Driver interface {
	// Start launches the VM, detached from the agent so it outlives it,
	// and returns once its control socket answers. Starting a VM that is
	// already running is an error.
	Start(ctx context.Context, spec Spec) (Info, error)
	// Lookup finds the VM whose runtime directory is dir. ok is false when
	// no process runs for it (or the process there is not the VM with id).
	Lookup(ctx context.Context, id, dir string) (info Info, ok bool, err error)
	// Shutdown asks the guest to power off (ACPI), waits up to timeout,
	// then kills the process; a process whose guest stopped by itself
	// (GuestStopped) ends at once. It returns once the process is gone.
	Shutdown(ctx context.Context, id, dir string, timeout time.Duration) error
	// Kill stops the process at once.
	Kill(ctx context.Context, id, dir string) error
	// Pause and Resume freeze and thaw the VM's CPUs.
	Pause(ctx context.Context, id, dir string) error
	Resume(ctx context.Context, id, dir string) error
	// Wait returns when the VM's process exits or its guest stopped by
	// itself (Lookup then says so: GuestStopped), or ctx ends, whoever
	// started it.
	Wait(ctx context.Context, id, dir string) error
}

// KVMDetector is a Driver that can say whether its VMs may use KVM on
// this host, and why or why not (see DetectKVM). The agent asks its
// driver when the driver is one; a driver that runs no hypervisor (a
// simulated host) answers without probing anything.
type KVMDetector interface {
	DetectKVM(ctx context.Context) (ok bool, reason string)
}

var _ KVMDetector = (*QEMU)(nil)

// Runtime file names inside a VM's directory, shared by the driver, the
// agent (which serves the console) and tests.
const (
	PIDFile       = "qemu.pid"
	QMPSocket     = "qmp.sock"
	ConsoleSocket = "console.sock"
	ConsoleLog    = "console.log"
	// ConsoleLogPrevious is what the agent keeps of the console log when
	// it caps it: the log as it was at the last rotation. The log a person
	// sees is this file followed by ConsoleLog.
	ConsoleLogPrevious = "console.log.1"
)

// Migrator is a Driver that can live-migrate a VM to a destination
// started with Spec.Incoming (QEMU.Migrate).
type Migrator interface {
	Migrate(ctx context.Context, id, dir, uri string) (Migration, error)
}

var _ Migrator = (*QEMU)(nil)
