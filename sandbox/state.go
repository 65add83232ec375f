package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"hearth.dev/hearth/atomicfile"
	"hearth.dev/hearth/flock"
)

// State is DIR/sandbox.json: everything a sandbox made, written after
// every step of Up, so Down removes exactly that even when Up stopped
// half-way.
type State struct {
	Dir      string `json:"dir"`
	Prefix   string `json:"prefix"`
	Underlay string `json:"underlay"`
	// CreatedDir says Up created Dir, so Down may remove it once empty.
	CreatedDir bool `json:"createdDir,omitempty"`
	// Namespaces are the network namespaces made, in order (under
	// /run/netns).
	Namespaces []string `json:"namespaces,omitempty"`
	// RootLinks are the links made in the root namespace.
	RootLinks []string `json:"rootLinks,omitempty"`
	// Bridge is the underlay bridge, inside the underlay namespace.
	Bridge string `json:"bridge,omitempty"`
	// Paths are the files and directories made under Dir.
	Paths []string `json:"paths,omitempty"`
	// Server is the `hearth server` process, ServerURL where the hosts
	// and the CLI reach it, AdminConfig its admin client config.
	Server      *Process `json:"server,omitempty"`
	ServerURL   string   `json:"serverURL,omitempty"`
	AdminConfig string   `json:"adminConfig,omitempty"`
	Hosts       []Host   `json:"hosts,omitempty"`
	// TestGuest is the test guest's kernel and initrd, and their shared
	// Images.
	TestGuest *Guest `json:"testGuest,omitempty"`
	// DebianImage is the Debian image's files and their shared Images.
	DebianImage *DebianImage `json:"debianImage,omitempty"`
	// Provisioning is the network machines network-boot on, with its
	// boot service; Machines are the machines on it.
	Provisioning *Provisioning `json:"provisioning,omitempty"`
	Machines     []Machine     `json:"machines,omitempty"`
	// Internet is the namespace standing for the internet, with its
	// HTTP server (internet.go).
	Internet *Internet `json:"internet,omitempty"`
	// Storage is the shared storage (--shared-storage; storage.go).
	Storage *Storage `json:"storage,omitempty"`
}

// Provisioning is the provisioning network and its boot service.
type Provisioning struct {
	CIDR string `json:"cidr"`
	// Netns holds Bridge, the machines' taps and their QEMU processes.
	Netns  string `json:"netns"`
	Bridge string `json:"bridge"`
	// BootNetns is the boot service's namespace. Its link BootInterface
	// has BootAddress on the provisioning network, its link
	// BootUnderlayLink has BootUnderlayAddress on the underlay.
	BootNetns           string `json:"bootNetns"`
	BootInterface       string `json:"bootInterface"`
	BootAddress         string `json:"bootAddress"`
	BootUnderlayLink    string `json:"bootUnderlayLink"`
	BootUnderlayAddress string `json:"bootUnderlayAddress"`
	// BootMetrics is where the boot service serves Prometheus metrics
	// (HOST:PORT on its underlay leg).
	BootMetrics string `json:"bootMetrics,omitempty"`
	// DHCPMode is the boot service's DHCP mode: "full" (PoolStart to
	// PoolEnd), or "proxy" beside the home router (Router).
	DHCPMode string `json:"dhcpMode,omitempty"`
	// Router is the home router (--home-router), if any.
	Router *Router `json:"router,omitempty"`
	// PoolStart and PoolEnd bound the addresses the boot service's DHCP
	// hands out in full mode; HTTPListen is where it serves HTTP.
	PoolStart  string `json:"poolStart"`
	PoolEnd    string `json:"poolEnd"`
	HTTPListen string `json:"httpListen"`
	// Site is the boot service's site, which the machines on the network
	// join.
	Site string `json:"site,omitempty"`
	// BootDir is the boot service's data directory; its log is
	// BootDir/boot.log.
	BootDir string `json:"bootDir"`
	// Boot is the boot service's process; BootSkipped says why there is
	// none when Up did not start one.
	Boot        *Process `json:"boot,omitempty"`
	BootSkipped string   `json:"bootSkipped,omitempty"`
}

// Router is the provisioning network's home router: dnsmasq handing out
// addresses, with no PXE options, like the DHCP server of a home router.
type Router struct {
	// Netns holds Interface, a veth on the provisioning bridge with
	// Address.
	Netns     string `json:"netns"`
	Interface string `json:"interface"`
	Address   string `json:"address"`
	// RangeStart and RangeEnd bound the addresses dnsmasq hands out.
	RangeStart string `json:"rangeStart"`
	RangeEnd   string `json:"rangeEnd"`
	// Dir holds dnsmasq's lease file, pid file and logs.
	Dir     string   `json:"dir"`
	DNSMasq *Process `json:"dnsmasq,omitempty"`
}

// Leases is the path of the home router's lease file.
func (r Router) Leases() string { return filepath.Join(r.Dir, routerLeases) }

// Log is the path of dnsmasq's own log (--log-facility).
func (r Router) Log() string { return filepath.Join(r.Dir, routerDNSMasq) }

// BootLog is the path of the boot service's log.
func (p Provisioning) BootLog() string { return filepath.Join(p.BootDir, bootLog) }

// Machine is a QEMU machine on the provisioning network that boots like
// a real one: from the network first, then from its disk.
type Machine struct {
	Name string `json:"name"`
	MAC  string `json:"mac"`
	// Firmware is "bios" (SeaBIOS with QEMU's iPXE option ROM) or "uefi"
	// (OVMF).
	Firmware string `json:"firmware"`
	// Memory is QEMU's -m (512M), DiskSize the disk's virtual size (8G).
	Memory   string `json:"memory"`
	DiskSize string `json:"diskSize"`
	// Tap is the machine's link on the provisioning bridge, in
	// Provisioning.Netns.
	Tap string `json:"tap"`
	// Dir holds the disk, the UEFI variables, the console log and QEMU's
	// own log.
	Dir  string   `json:"dir"`
	QEMU *Process `json:"qemu,omitempty"`
}

// Console is the path of the machine's serial console log.
func (m Machine) Console() string { return filepath.Join(m.Dir, machineConsole) }

// Disk is the path of the machine's disk.
func (m Machine) Disk() string { return filepath.Join(m.Dir, machineDisk) }

// Host is one sandbox host: a network namespace with an agent.
type Host struct {
	// Name is the Host object's name (h1, h2, …).
	Name    string `json:"name"`
	Netns   string `json:"netns"`
	Address string `json:"address"`
	// Dir is the agent's data directory; its log is Dir/agent.log.
	Dir   string   `json:"dir"`
	Agent *Process `json:"agent,omitempty"`
	// Metrics is where the agent serves Prometheus metrics (HOST:PORT on
	// the underlay; empty in a sandbox made before it did).
	Metrics string `json:"metrics,omitempty"`
}

// Log is the path of the host's agent log.
func (h Host) Log() string { return filepath.Join(h.Dir, agentLog) }

// Guest is the test guest's kernel and initrd, and the shared Images
// that stand for them (VMs boot those by name).
type Guest struct {
	Kernel      string `json:"kernel"`
	Initrd      string `json:"initrd"`
	KernelImage string `json:"kernelImage,omitempty"`
	InitrdImage string `json:"initrdImage,omitempty"`
	// Disk is a disk image that boots the guest, and DiskImage its
	// shared Image (with --shared-storage).
	Disk      string `json:"disk,omitempty"`
	DiskImage string `json:"diskImage,omitempty"`
}

// images names the guest's shared Images.
func (g Guest) images() []string {
	out := []string{g.KernelImage, g.InitrdImage}
	if g.DiskImage != "" {
		out = append(out, g.DiskImage)
	}
	return out
}

// DebianImage is the Debian image with cloud-init: its kernel, initramfs
// and root disk (qcow2), and the shared Images of each ("" until made).
type DebianImage struct {
	Kernel      string `json:"kernel"`
	Initrd      string `json:"initrd"`
	Disk        string `json:"disk"`
	KernelImage string `json:"kernelImage,omitempty"`
	InitrdImage string `json:"initrdImage,omitempty"`
	DiskImage   string `json:"diskImage,omitempty"`
}

// Process is a daemon the sandbox started.
type Process struct {
	PID int `json:"pid"`
	// StartTime is the process's start in clock ticks after boot
	// (/proc/PID/stat field 22). With the pid it names the process for
	// good: a pid reused after a reboot or a crash is not mistaken for it.
	StartTime uint64 `json:"startTime"`
	Log       string `json:"log"`
}

func statePath(dir string) string { return filepath.Join(dir, stateFile) }

// LoadState reads DIR/sandbox.json. A missing file is an error wrapping
// os.ErrNotExist.
func LoadState(dir string) (*State, error) {
	data, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(dir), err)
	}
	return &st, nil
}

// save writes the state atomically, so a crash never leaves half a record.
func (st *State) save() error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(statePath(st.Dir), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("recording the sandbox: %w", err)
	}
	return nil
}

// addPath records a file or directory made under Dir.
func (st *State) addPath(p string) error {
	if !slices.Contains(st.Paths, p) {
		st.Paths = append(st.Paths, p)
	}
	return st.save()
}

// lockState takes an exclusive lock on the sandbox's directory, so that
// Up and the commands that change a sandbox after it is up (machine add,
// machine rm) do not overwrite each other's sandbox.json. The lock is a
// flock on the directory itself: it leaves no file behind, and it goes
// with the process, however that ends. Down does not take it: it must
// work whatever else runs.
func lockState(ctx context.Context, dir string) (unlock func(), err error) {
	unlock, err = flock.Lock(ctx, dir, 100*time.Millisecond)
	if errors.Is(err, flock.ErrBusy) {
		return nil, fmt.Errorf("waiting for another sandbox command on %s: %w", dir, ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	return unlock, nil
}
