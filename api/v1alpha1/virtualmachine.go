package v1alpha1

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// VirtualMachine is a QEMU virtual machine on one host. The scheduler picks
// the host (spec.host) by capacity, nodeSelector and affinity unless the
// spec names one; that host's agent runs the VM, one QEMU process per VM,
// and keeps it in spec.powerState. VMs outlive the agent: a restarted agent
// adopts the VMs it finds running.
type VirtualMachine = Resource[VirtualMachineSpec, VirtualMachineStatus]

type VirtualMachineSpec struct {
	// Host runs the VM. Empty until the scheduler places it; set it to pin
	// the VM to a host. Changing it asks to move the VM there (live when
	// it runs: hearth vm migrate), which only a VM whose disks are all on
	// shared pools and that has no NICs yet can do; otherwise it cannot
	// change once set. A highly available VM whose
	// host was lost and fenced is unbound by the server and placed again.
	Host string `json:"host,omitempty"`
	// CPUs is the number of virtual CPUs (default 1).
	CPUs int `json:"cpus,omitempty"`
	// Memory is the guest's RAM (default 512Mi).
	Memory Bytes `json:"memory,omitempty"`
	// PowerState is what the agent keeps the VM in: Running, Stopped or
	// Paused (default Running).
	PowerState string `json:"powerState,omitempty"`
	// RestartRequested asks for a restart: when it changes, the host's
	// agent shuts the running VM down (ACPI, then a kill after its
	// shutdown timeout) and starts it again, once. A time rather than a
	// flag (`hearth vm restart` sets it to now), so nothing has to clear
	// it afterwards; only a change counts, so clocks need not agree. A
	// stopped VM ignores it.
	RestartRequested *time.Time `json:"restartRequested,omitempty"`
	// RestartPolicy says what happens when the VM stops by itself
	// (default Always): Always starts it again, OnFailure only when QEMU
	// failed or the guest crashed (its kernel panicked), not when the
	// guest powered itself off, and Never in neither case. A VM so left
	// is Stopped with reason GuestShutdown after a power-off, Failed with
	// reason Crashed after a crash, until a person asks (`hearth vm start`
	// or `restart`, a changed spec). Restarts by the policy count in
	// status.restartCount and back off when they come soon after a start.
	RestartPolicy string `json:"restartPolicy,omitempty"`
	// MachineType is QEMU's machine type: q35 or pc on x86_64, virt on
	// arm64 (default: the host architecture's usual one).
	MachineType string `json:"machineType,omitempty"`
	// Firmware is bios or uefi (default bios).
	Firmware string   `json:"firmware,omitempty"`
	Boot     VMBoot   `json:"boot,omitempty"`
	Disks    []VMDisk `json:"disks,omitempty"`
	NICs     []VMNIC  `json:"nics,omitempty"`
	// CloudInit is handed to the guest as a NoCloud seed and through the
	// metadata service.
	CloudInit CloudInit `json:"cloudInit,omitempty"`
	// NodeSelector restricts the VM to hosts carrying these labels.
	NodeSelector LabelSelector `json:"nodeSelector,omitempty"`
	// Affinity places the VM on a host that already runs, for every
	// selector, a VM of the same tenant it matches.
	Affinity []LabelSelector `json:"affinity,omitempty"`
	// AntiAffinity keeps the VM off hosts that run a VM of the same tenant
	// matching any selector (the VM itself aside): give a set's VMs their
	// own labels here to spread them over hosts. Both are hard rules; a VM
	// no host satisfies stays Pending.
	AntiAffinity []LabelSelector `json:"antiAffinity,omitempty"`
	// HighAvailability restarts the VM on another host when its host's
	// lease runs out, once the host is fenced, so the old QEMU cannot
	// write to the disks any more: the Machine backing the host (the
	// Host's spec.machine, else the Machine of the host's name) is
	// powered off through its power driver, or, without one, when every
	// disk is an RBD volume, Ceph cuts the old host's clients off them.
	// Without a way to fence the host the VM is not restarted, and its
	// HighAvailability condition says why. Every disk must be a Volume in a shared pool (rbd, nfs)
	// or a cdrom, and the firmware bios: nothing of the VM may live on
	// the lost host alone.
	HighAvailability bool `json:"highAvailability,omitempty"`
}

// VMBoot says what the VM boots.
type VMBoot struct {
	// From is disk, kernel or network (default disk). kernel boots
	// Kernel and Initrd directly (QEMU -kernel); network PXE-boots from the
	// first NIC. Kernel and Initrd come from an http(s) URL or an Image
	// (never file://: a shared Image with a file:// URL, made by an
	// administrator, is how a VM boots a file that lives on the hosts).
	From string `json:"from,omitempty"`
	// Kernel and Initrd are the files a kernel boot loads (from:
	// kernel): a URL or an Image each.
	Kernel *BootFile `json:"kernel,omitempty"`
	Initrd *BootFile `json:"initrd,omitempty"` // see Kernel
	// Cmdline is the kernel command line.
	Cmdline string `json:"cmdline,omitempty"`
}

// VMDisk is a disk of the VM: an existing Volume, or a volume the VM owns,
// cloned from an image when the VM is created and deleted with it (what a
// VirtualMachineSet's template needs, since replicas cannot share a volume).
type VMDisk struct {
	// Volume names a Volume of the same tenant.
	Volume string `json:"volume,omitempty"`
	// Image names an Image to clone a volume from (the tenant's own, else
	// a shared one, as for a Volume's source); the volume is named
	// VM-diskN after the disk's index. A cdrom disk uses the image itself,
	// read-only.
	Image string `json:"image,omitempty"`
	// Size of the volume cloned from Image (default the image's size).
	Size Bytes `json:"size,omitempty"`
	// Bus is virtio, scsi or ide (default virtio; ide for a cdrom).
	Bus string `json:"bus,omitempty"`
	// Device is disk or cdrom (default disk).
	Device string `json:"device,omitempty"`
	// BootIndex orders boot devices, 1 first; 0 leaves the disk out of the
	// boot order.
	BootIndex int `json:"bootIndex,omitempty"`
	// ReadOnly attaches the disk read-only (a cdrom always is).
	ReadOnly bool `json:"readOnly,omitempty"`
}

// VMNIC is a network interface of the VM.
type VMNIC struct {
	// Network names a Network of the same tenant.
	Network string `json:"network"`
	// Subnet names the subnet of Network the address comes from; empty
	// means the network's only subnet.
	Subnet string `json:"subnet,omitempty"`
	// IP asks for this address; empty lets IPAM pick one.
	IP string `json:"ip,omitempty"`
	// MAC asks for this address; empty lets Hearth allocate one in
	// 52:54:00:xx:xx:xx. Stored in lowercase.
	MAC string `json:"mac,omitempty"`
	// SecurityGroups name SecurityGroups of the same tenant that filter
	// the NIC's traffic. With none, only anti-spoofing applies.
	SecurityGroups []string `json:"securityGroups,omitempty"`
	// Model is the emulated device: virtio, e1000 or rtl8139 (default virtio).
	Model string `json:"model,omitempty"`
	// IPv6Subnet names the IPv6 subnet of Network in which a NIC whose
	// address is IPv4 also takes an IPv6 address (status.interfaces[i].ipv6);
	// empty means the network's only IPv6 subnet, if it has exactly one.
	IPv6Subnet string `json:"ipv6Subnet,omitempty"`
}

// CloudInit is the VM's cloud-init data.
type CloudInit struct {
	// Disabled gives the VM no NoCloud seed disk (for images without
	// cloud-init, or ones that read only a metadata service). The
	// metadata service of its networks still serves userData,
	// networkConfig and sshKeys, so a VM with them needs a NIC on a
	// network.
	Disabled bool `json:"disabled,omitempty"`
	// UserData is the user-data document (#cloud-config, a script, …).
	UserData string `json:"userData,omitempty"`
	// NetworkConfig is a network-config document (version 2); empty means
	// DHCP on every NIC.
	NetworkConfig string `json:"networkConfig,omitempty"`
	// SSHKeys names SSHKeys of the tenant to install; empty installs all of
	// the tenant's keys.
	SSHKeys []string `json:"sshKeys,omitempty"`
	// Datasource makes the VM look like the platform of a cloud-init
	// datasource, for images that look for one: openstack gives it the
	// SMBIOS product name "OpenStack Nova", which cloud-init's OpenStack
	// datasource (and cloudbase-init's) need before they read the
	// metadata service's OpenStack documents. Empty (the default) says
	// nothing: cloud-init finds the NoCloud seed, or the metadata
	// service's EC2 tree when told to (ci.ds=Ec2 on the kernel command
	// line).
	Datasource string `json:"datasource,omitempty"`
}

// DatasourceOpenStack is cloudInit.datasource's value for OpenStack's.
const DatasourceOpenStack = "openstack"

type VirtualMachineStatus struct {
	CommonStatus `json:",inline"`
	// Host the VM runs on, as the agent reports it.
	Host string `json:"host,omitempty"`
	// PID of the QEMU process, and its QMP socket, for the agent to adopt
	// the VM after a restart.
	PID       int    `json:"pid,omitempty"`
	QMPSocket string `json:"qmpSocket,omitempty"`
	// Accelerator is kvm or tcg: KVM where it really works on the host.
	Accelerator string `json:"accelerator,omitempty"`
	// Interfaces are the VM's NICs in the order of spec.nics, with the
	// addresses the server allocated to them in the transaction that
	// created the VM or changed its NICs. Only the server writes them: a
	// status write by anyone else keeps them as they are.
	Interfaces []VMInterfaceStatus `json:"interfaces,omitempty"`
	StartedAt  *time.Time          `json:"startedAt,omitempty"`
	// RestartCount counts restarts by the restart policy.
	RestartCount int `json:"restartCount,omitempty"`
	// FirstOutputAt is when the guest first wrote to its serial console
	// after the last start: proof it runs, not just that QEMU does.
	FirstOutputAt *time.Time `json:"firstOutputAt,omitempty"`
	// ConsoleLog is the path of the serial console log on the host.
	ConsoleLog string `json:"consoleLog,omitempty"`
	// Migration is set while the VM moves to its new spec.host, live:
	// the destination's agent writes it when its QEMU listens, and the
	// source's agent, which reads it, sends the VM there.
	Migration *VMMigration `json:"migration,omitempty"`
	// Failover is set while the VM is restarted elsewhere because its
	// host was lost (spec.highAvailability): the failover controller
	// writes it at each step, and only the server may.
	Failover *VMFailover `json:"failover,omitempty"`
}

// VMFailover is a restart of a highly available VM on another host after
// its own was lost.
type VMFailover struct {
	// From is the host that was lost.
	From string `json:"from"`
	// LostAt is when the failover controller found the host's lease
	// expired.
	LostAt *time.Time `json:"lostAt,omitempty"`
	// Machine is the Machine that was powered off to fence From, and
	// FencedAt when its power driver confirmed it (or, for drivers that
	// cannot read the state, when the off call succeeded). The VM is
	// restarted only once FencedAt is set.
	Machine  string     `json:"machine,omitempty"`
	FencedAt *time.Time `json:"fencedAt,omitempty"`
	// Storage says From is fenced at the storage instead: no power
	// driver can switch it off, but every disk is an RBD volume, so the
	// host the VM restarts on has Ceph blocklist every client that has
	// one open before it starts the VM (FencedAt stays empty).
	Storage bool `json:"storage,omitempty"`
}

// VMMigration is a live migration under way.
type VMMigration struct {
	// From is the host the VM runs on until the move is done.
	From string `json:"from"`
	// Incoming is where the destination's QEMU listens for the VM's
	// state ("tcp:ADDRESS:PORT", on the destination host's address).
	Incoming string `json:"incoming,omitempty"`
	// StartedAt is when the destination started waiting.
	StartedAt *time.Time `json:"startedAt,omitempty"`
}

// VMInterfaceStatus is one NIC as allocated. The host derives the NIC's
// tap device from the VM's uid and the NIC's index.
type VMInterfaceStatus struct {
	// Network is the NIC's network (spec.nics[i].network).
	Network string `json:"network,omitempty"`
	// Subnet is the subnet the address came from: spec.nics[i].subnet,
	// or the network's only subnet.
	Subnet string `json:"subnet,omitempty"`
	// IP is the NIC's address in Subnet: spec.nics[i].ip, or the lowest
	// free one in the subnet's DHCP range.
	IP string `json:"ip,omitempty"`
	// MAC is the NIC's Ethernet address, unique on its network:
	// spec.nics[i].mac, or one picked at random in 52:54:00:xx:xx:xx.
	MAC string `json:"mac,omitempty"`
	// IPv6Subnet and IPv6 are the NIC's second address on a dual-stack
	// network: when IP is an IPv4 address and the network has exactly one
	// IPv6 subnet, the NIC also has an address there (by the subnet's
	// ipv6Mode: the EUI-64 of MAC, or IPAM's pick for DHCPv6).
	IPv6Subnet string `json:"ipv6Subnet,omitempty"`
	IPv6       string `json:"ipv6,omitempty"` // see IPv6Subnet
}

// Addresses are the NIC's addresses: IP, then IPv6 on a dual-stack
// network.
func (i VMInterfaceStatus) Addresses() []string {
	var out []string
	for _, a := range []string{i.IP, i.IPv6} {
		if a != "" {
			out = append(out, a)
		}
	}
	return out
}

// VM phases.
const (
	VMPending   = "Pending"
	VMScheduled = "Scheduled"
	VMStarting  = "Starting"
	VMRunning   = "Running"
	VMStopped   = "Stopped"
	VMPaused    = "Paused"
	VMFailed    = "Failed"
	// VMMigrating: moving to another host, live; it runs on status.host
	// until the destination has it.
	VMMigrating = "Migrating"
)

// Power states a VM is kept in (spec.powerState).
const (
	PowerRunning = "Running"
	PowerStopped = "Stopped"
	PowerPaused  = "Paused"
)

// Restart policies.
const (
	RestartAlways    = "Always"
	RestartOnFailure = "OnFailure"
	RestartNever     = "Never"
)

// Boot sources.
const (
	BootFromDisk    = "disk"
	BootFromKernel  = "kernel"
	BootFromNetwork = "network"
)

// NIC models (spec.nics[].model): the device the guest sees.
const (
	NICVirtio  = "virtio"
	NICE1000   = "e1000"
	NICRTL8139 = "rtl8139"
)

// Disk buses and devices (spec.disks[].bus and .device).
const (
	BusVirtio   = "virtio"
	BusSCSI     = "scsi"
	BusIDE      = "ide"
	DeviceDisk  = "disk"
	DeviceCDROM = "cdrom"
)

// Machine types (spec.machineType).
const (
	MachineQ35  = "q35"
	MachinePC   = "pc"
	MachineVirt = "virt"
)

// What the API accepts for each choice of a VM's hardware. Hosts must run
// every one of them: the compute driver's tests start a real QEMU with
// each (compute TestEveryHardwareChoiceStarts).
var (
	NICModels    = []string{NICVirtio, NICE1000, NICRTL8139}
	DiskBuses    = []string{BusVirtio, BusSCSI, BusIDE}
	DiskDevices  = []string{DeviceDisk, DeviceCDROM}
	MachineTypes = []string{MachineQ35, MachinePC, MachineVirt}
	Firmwares    = []string{FirmwareBIOS, FirmwareUEFI}
)

// Limits on a VM's size.
const (
	MinVMMemory = 64 << 20
	MaxVMCPUs   = 256
	// MaxCloudInitBytes caps user data and network config: the whole VM is
	// one etcd value.
	MaxCloudInitBytes = 64 << 10
)

func (s *VirtualMachineSpec) Default() {
	if s.CPUs == 0 {
		s.CPUs = 1
	}
	if s.Memory == 0 {
		s.Memory = 512 << 20
	}
	if s.PowerState == "" {
		s.PowerState = PowerRunning
	}
	if s.RestartPolicy == "" {
		s.RestartPolicy = RestartAlways
	}
	if s.Firmware == "" {
		s.Firmware = FirmwareBIOS
	}
	if s.Boot.From == "" {
		s.Boot.From = BootFromDisk
	}
	for i := range s.Disks {
		d := &s.Disks[i]
		if d.Device == "" {
			d.Device = DeviceDisk
		}
		if d.Bus == "" {
			if d.Device == DeviceCDROM {
				d.Bus = BusIDE
			} else {
				d.Bus = BusVirtio
			}
		}
	}
	for i := range s.NICs {
		n := &s.NICs[i]
		n.MAC = strings.ToLower(n.MAC)
		if n.Model == "" {
			n.Model = NICVirtio
		}
	}
}

func (s *VirtualMachineSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	if s.Host != "" {
		es = append(es, ValidateName(path+".host", s.Host)...)
	}
	if s.CPUs < 1 || s.CPUs > MaxVMCPUs {
		es.Add(path+".cpus", "%d is out of range (1 to %d)", s.CPUs, MaxVMCPUs)
	}
	switch {
	case s.Memory < MinVMMemory:
		es.Add(path+".memory", "%s is below the minimum of %s", s.Memory, Bytes(MinVMMemory))
	case s.Memory%(1<<20) != 0:
		es.Add(path+".memory", "%d bytes is not a whole number of Mi (QEMU sizes memory in MiB)", int64(s.Memory))
	}
	es = append(es, ValidateOneOf(path+".powerState", s.PowerState, PowerRunning, PowerStopped, PowerPaused)...)
	es = append(es, ValidateOneOf(path+".restartPolicy", s.RestartPolicy, RestartAlways, RestartOnFailure, RestartNever)...)
	if s.MachineType != "" {
		es = append(es, ValidateOneOf(path+".machineType", s.MachineType, MachineTypes...)...)
	}
	es = append(es, ValidateOneOf(path+".firmware", s.Firmware, Firmwares...)...)
	es = append(es, s.validateBoot(path+".boot")...)

	vols := map[string]int{}
	boots := map[int]int{}
	for i, d := range s.Disks {
		dp := fmt.Sprintf("%s.disks[%d]", path, i)
		switch {
		case d.Volume != "" && d.Image != "":
			es.Add(dp+".image", "cannot be set with volume: a disk is an existing volume or a clone of an image")
		case d.Volume == "" && d.Image == "":
			es.Add(dp+".volume", "is required (or set image to clone one)")
		case d.Volume != "":
			es = append(es, ValidateName(dp+".volume", d.Volume)...)
			if j, dup := vols[d.Volume]; dup {
				es.Add(dp+".volume", "%q is already attached as disks[%d]", d.Volume, j)
			} else {
				vols[d.Volume] = i
			}
		case d.Image != "":
			es = append(es, ValidateName(dp+".image", d.Image)...)
		}
		if d.Size != 0 && d.Image == "" {
			es.Add(dp+".size", "is only used with image; resize a volume on the Volume")
		}
		if d.Size != 0 && d.Device == DeviceCDROM {
			es.Add(dp+".size", "cannot be set for a cdrom")
		}
		es = append(es, ValidateOneOf(dp+".device", d.Device, DiskDevices...)...)
		es = append(es, ValidateOneOf(dp+".bus", d.Bus, DiskBuses...)...)
		if d.Device == DeviceCDROM && d.Bus == BusVirtio {
			es.Add(dp+".bus", "a cdrom cannot be on virtio (use scsi or ide)")
		}
		if d.ReadOnly && d.Device == DeviceDisk && d.Bus == BusIDE {
			es.Add(dp+".readOnly", "an IDE disk cannot be read-only (use bus virtio or scsi, or device cdrom)")
		}
		if d.Device == DeviceCDROM && d.Image == "" {
			es.Add(dp+".image", "is required for a cdrom: it holds the image itself, read-only")
		}
		if d.BootIndex < 0 {
			es.Add(dp+".bootIndex", "%d is negative", d.BootIndex)
		} else if d.BootIndex > 0 {
			if j, dup := boots[d.BootIndex]; dup {
				es.Add(dp+".bootIndex", "%d is already used by disks[%d]", d.BootIndex, j)
			} else {
				boots[d.BootIndex] = i
			}
		}
	}

	macs := map[string]int{}
	for i, n := range s.NICs {
		np := fmt.Sprintf("%s.nics[%d]", path, i)
		if n.Network == "" {
			es.Add(np+".network", "is required")
		} else {
			es = append(es, ValidateName(np+".network", n.Network)...)
		}
		if n.Subnet != "" {
			es = append(es, ValidateName(np+".subnet", n.Subnet)...)
		}
		if n.IPv6Subnet != "" {
			es = append(es, ValidateName(np+".ipv6Subnet", n.IPv6Subnet)...)
		}
		if n.IP != "" {
			_, e := ValidateIP(np+".ip", n.IP)
			es = append(es, e...)
		}
		if n.MAC != "" {
			m, e := ValidateMAC(np+".mac", n.MAC)
			es = append(es, e...)
			if len(e) == 0 {
				// The low bit of the first octet marks a multicast address,
				// which a NIC cannot own.
				if b, _ := strconv.ParseUint(m[:2], 16, 8); b&1 == 1 {
					es.Add(np+".mac", "%q is a multicast address", n.MAC)
				} else if ReservedMAC(m) {
					es.Add(np+".mac", "%q is in a range Hearth keeps for its routers and bridges (%s)", n.MAC, ReservedMACRanges)
				} else if m == "00:00:00:00:00:00" {
					es.Add(np+".mac", "%q is not a NIC's address", n.MAC)
				}
				if j, dup := macs[m]; dup {
					es.Add(np+".mac", "%q is already used by nics[%d]", n.MAC, j)
				} else {
					macs[m] = i
				}
			}
		}
		for j, g := range n.SecurityGroups {
			es = append(es, ValidateName(fmt.Sprintf("%s.securityGroups[%d]", np, j), g)...)
		}
		es = append(es, ValidateOneOf(np+".model", n.Model, NICModels...)...)
	}

	ci := s.CloudInit
	if len(ci.UserData) > MaxCloudInitBytes {
		es.Add(path+".cloudInit.userData", "is %d bytes; the limit is %d", len(ci.UserData), MaxCloudInitBytes)
	}
	if len(ci.NetworkConfig) > MaxCloudInitBytes {
		es.Add(path+".cloudInit.networkConfig", "is %d bytes; the limit is %d", len(ci.NetworkConfig), MaxCloudInitBytes)
	}
	for i, k := range ci.SSHKeys {
		es = append(es, ValidateName(fmt.Sprintf("%s.cloudInit.sshKeys[%d]", path, i), k)...)
	}
	if ci.Datasource != "" {
		es = append(es, ValidateOneOf(path+".cloudInit.datasource", ci.Datasource, DatasourceOpenStack)...)
	}
	if ci.Disabled && (ci.UserData != "" || ci.NetworkConfig != "" || len(ci.SSHKeys) > 0) &&
		!slices.ContainsFunc(s.NICs, func(n VMNIC) bool { return n.Network != "" }) {
		es.Add(path+".cloudInit.disabled", "is set and no NIC is on a network, so userData, networkConfig and sshKeys would reach the VM nowhere (without a seed disk, only a network's metadata service serves them)")
	}

	es = append(es, ValidateLabels(path+".nodeSelector", s.NodeSelector)...)
	for i, sel := range s.Affinity {
		p := fmt.Sprintf("%s.affinity[%d]", path, i)
		if len(sel) == 0 {
			es.Add(p, "is empty; it would match every VM")
		}
		es = append(es, ValidateLabels(p, sel)...)
	}
	for i, sel := range s.AntiAffinity {
		p := fmt.Sprintf("%s.antiAffinity[%d]", path, i)
		if len(sel) == 0 {
			es.Add(p, "is empty; it would match every VM")
		}
		es = append(es, ValidateLabels(p, sel)...)
	}
	return es
}

func (s *VirtualMachineSpec) validateBoot(path string) FieldErrors {
	var es FieldErrors
	b := s.Boot
	if e := ValidateOneOf(path+".from", b.From, BootFromDisk, BootFromKernel, BootFromNetwork); len(e) > 0 {
		return e
	}
	if b.From == BootFromKernel {
		if b.Kernel == nil {
			es.Add(path+".kernel", "is required to boot from kernel")
		} else {
			es = append(es, b.Kernel.validateVM(path+".kernel")...)
		}
		if b.Initrd != nil {
			es = append(es, b.Initrd.validateVM(path+".initrd")...)
		}
	} else {
		for _, f := range []struct {
			name string
			set  bool
		}{{"kernel", b.Kernel != nil}, {"initrd", b.Initrd != nil}, {"cmdline", b.Cmdline != ""}} {
			if f.set {
				es.Add(path+"."+f.name, "is only used with from: kernel")
			}
		}
	}
	switch b.From {
	case BootFromDisk:
		if len(s.Disks) == 0 {
			es.Add(path+".from", "is disk but the VM has no disks")
		}
	case BootFromNetwork:
		if len(s.NICs) == 0 {
			es.Add(path+".from", "is network but the VM has no NICs")
		}
	}
	return es
}

// ValidateUpdate has nothing to refuse on its own: a new host is a
// request to move the VM there (live when it runs), which admission
// (server/admission.Migrations) checks against the VM's disks.
func (s *VirtualMachineSpec) ValidateUpdate(path string, old any) FieldErrors {
	return nil
}

// ConditionScheduled is True once the VM is bound to a host.
const ConditionScheduled = "Scheduled"

// FollowSpec makes a VM that just got its host Scheduled, in the write
// that binds it (the scheduler's or its creator's, who may name the host):
// phase Scheduled until the agent takes the phase over, and the Scheduled
// condition naming the host.
func (s *VirtualMachineStatus) FollowSpec(m *ObjectMeta, spec, oldSpec any, now time.Time) {
	vs := spec.(*VirtualMachineSpec)
	if vs.Host == "" {
		return
	}
	if o, ok := oldSpec.(*VirtualMachineSpec); ok && o.Host != "" {
		return
	}
	s.SetScheduled(vs.Host, m.Generation, now)
}

// SetScheduled records that the VM was placed on host: phase Scheduled
// until the agent takes the phase over, and the Scheduled condition True
// naming the host (once True it stays as it is: placed once is placed). It
// reports whether anything changed.
func (s *VirtualMachineStatus) SetScheduled(host string, generation int64, now time.Time) bool {
	changed := false
	if s.Phase == "" || s.Phase == VMPending {
		s.Phase, changed = VMScheduled, true
	}
	if c := s.Condition(ConditionScheduled); c != nil && c.Status == ConditionTrue {
		return changed
	}
	return s.SetCondition(Condition{Type: ConditionScheduled, Status: ConditionTrue, Reason: ReasonScheduled,
		Message: "placed on " + host, ObservedGeneration: generation}, now) || changed
}

// FirstIP returns the first address allocated to the VM, for tables.
func (s *VirtualMachineStatus) FirstIP() string {
	for _, i := range s.Interfaces {
		if i.IP != "" {
			return i.IP
		}
	}
	return ""
}

// interfaceList joins one field of every interface for a table, with
// "-" for an interface that has none.
func (s *VirtualMachineStatus) interfaceList(field func(VMInterfaceStatus) string) string {
	parts := make([]string, len(s.Interfaces))
	for i, ifc := range s.Interfaces {
		if parts[i] = field(ifc); parts[i] == "" {
			parts[i] = "-"
		}
	}
	return strings.Join(parts, ",")
}

func init() {
	register[VirtualMachineSpec, VirtualMachineStatus](KindInfo{
		Kind: "VirtualMachine", Plural: "virtualmachines", ShortNames: []string{"virtualmachine", "vm", "vms"}, Scope: TenantScoped,
		Description: "A QEMU virtual machine with its CPUs, memory, disks, NICs and cloud-init, placed on one host.",
		PlacedOn:    func(o Object) string { return o.(*VirtualMachine).Spec.Host },
		Columns: []Column{
			{Name: "STATUS", Get: func(o Object) string { return o.CommonStatus().Phase }},
			{Name: "HOST", Get: func(o Object) string { return o.(*VirtualMachine).Spec.Host }},
			{Name: "CPUS", Get: func(o Object) string { return strconv.Itoa(o.(*VirtualMachine).Spec.CPUs) }},
			{Name: "MEMORY", Get: func(o Object) string { return o.(*VirtualMachine).Spec.Memory.String() }},
			{Name: "IP", Get: func(o Object) string { return o.(*VirtualMachine).Status.FirstIP() }},
			{Name: "IPS", Wide: true, Get: func(o Object) string {
				// A dual-stack NIC shows both: 10.0.0.2+fd00::5054:ff:fe00:1.
				return o.(*VirtualMachine).Status.interfaceList(func(i VMInterfaceStatus) string { return strings.Join(i.Addresses(), "+") })
			}},
			{Name: "MACS", Wide: true, Get: func(o Object) string {
				return o.(*VirtualMachine).Status.interfaceList(func(i VMInterfaceStatus) string { return i.MAC })
			}},
			{Name: "POWER", Wide: true, Get: func(o Object) string { return o.(*VirtualMachine).Spec.PowerState }},
			{Name: "RESTARTS", Wide: true, Get: func(o Object) string { return strconv.Itoa(o.(*VirtualMachine).Status.RestartCount) }},
			{Name: "ACCEL", Wide: true, Get: func(o Object) string { return o.(*VirtualMachine).Status.Accelerator }},
			// HA: "-" for a VM without spec.highAvailability, else the
			// reason of its HighAvailability condition (Protected,
			// Unprotected, Fencing, …).
			{Name: "HA", Wide: true, Get: func(o Object) string {
				vm := o.(*VirtualMachine)
				if !vm.Spec.HighAvailability {
					return "-"
				}
				if c := vm.Status.Condition(ConditionHighAvailability); c != nil {
					return c.Reason
				}
				return "Unknown"
			}},
		},
	})
}
