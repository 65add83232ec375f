package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/cloudinit"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/storage"
)

// prepare resolves a VirtualMachine into a compute.Spec with everything on
// this host: images downloaded and verified, disks cloned from them, the
// kernel and initrd fetched (from their Images or URLs), and the NoCloud
// seed written. Every step is
// idempotent, so a retry after a failure picks up where it stopped.
func (a *Agent) prepare(ctx context.Context, vm *api.VirtualMachine, dir string) (compute.Spec, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return compute.Spec{}, err
	}
	m := vm.Metadata
	spec := compute.Spec{
		ID:          m.UID,
		Name:        m.Tenant + "/" + m.Name,
		Dir:         dir,
		CPUs:        vm.Spec.CPUs,
		MemoryMiB:   int64(vm.Spec.Memory >> 20),
		Firmware:    vm.Spec.Firmware,
		MachineType: vm.Spec.MachineType,
		KVM:         a.kvm,
		Boot:        compute.Boot{From: bootFrom(vm), Cmdline: vm.Spec.Boot.Cmdline},
	}
	if spec.Boot.From == api.BootFromKernel {
		k, err := a.fetchBoot(ctx, vm, vm.Spec.Boot.Kernel, "spec.boot.kernel")
		if err != nil {
			return spec, err
		}
		spec.Boot.Kernel = k
		if vm.Spec.Boot.Initrd != nil {
			if spec.Boot.Initrd, err = a.fetchBoot(ctx, vm, vm.Spec.Boot.Initrd, "spec.boot.initrd"); err != nil {
				return spec, err
			}
		}
	}
	for i, d := range vm.Spec.Disks {
		disk, err := a.prepareDisk(ctx, vm, dir, i, d)
		if err != nil {
			return spec, err
		}
		spec.Disks = append(spec.Disks, disk)
	}
	removeDetachedClones(dir, vm.Spec.Disks)
	spec.LocalTime = a.guestOS(ctx, vm) == api.OSWindows
	spec.SMBIOS = smbiosOf(vm)
	// With tenant networking on, each NIC is plugged into its port (a tap
	// the data plane made on the network's bridge): the VM waits until
	// they are all there. Without it, NICs are unplugged.
	var taps []string
	if a.net != nil {
		var err error
		if taps, err = a.net.ports(vm); err != nil {
			return spec, err
		}
	}
	for i, n := range vm.Spec.NICs {
		// The server's allocation is the NIC's address: it is what DHCP
		// and the other hosts know it by.
		mac := n.MAC
		if i < len(vm.Status.Interfaces) && vm.Status.Interfaces[i].MAC != "" {
			mac = vm.Status.Interfaces[i].MAC
		} else if mac == "" {
			mac = stableMAC(m.UID, i)
		}
		boot := 0
		if spec.Boot.From == api.BootFromNetwork && i == 0 {
			boot = 1
		}
		nic := compute.NIC{MAC: mac, Model: n.Model, BootIndex: boot}
		if taps != nil {
			nic.Tap = taps[i]
		}
		spec.NICs = append(spec.NICs, nic)
	}
	if !vm.Spec.CloudInit.Disabled {
		keys, err := a.sshKeys(ctx, vm)
		if err != nil {
			return spec, err
		}
		seed := cloudinit.Seed{InstanceID: m.UID, Hostname: m.Name, SSHKeys: keys,
			UserData: vm.Spec.CloudInit.UserData, NetworkConfig: vm.Spec.CloudInit.NetworkConfig}
		spec.Seed = filepath.Join(dir, "seed.iso")
		if err := seed.WriteISO(spec.Seed); err != nil {
			return spec, fmt.Errorf("writing the cloud-init seed: %w", err)
		}
	}
	return spec, nil
}

// guestOS is the OS type of the image the VM's first disk came from
// (directly, or through the Volume cloned from it), "" when unknown. It
// only chooses guest settings such as the clock, so a lookup that fails
// is no error.
func (a *Agent) guestOS(ctx context.Context, vm *api.VirtualMachine) string {
	if len(vm.Spec.Disks) == 0 {
		return ""
	}
	name := vm.Spec.Disks[0].Image
	if v := vm.Spec.Disks[0].Volume; v != "" {
		vol, err := a.volume(ctx, vm.Metadata.Tenant, v)
		if err != nil {
			return ""
		}
		name = vol.Spec.Source.Image
	}
	if name == "" {
		return ""
	}
	img, err := a.image(ctx, vm.Metadata.Tenant, name)
	if err != nil {
		return ""
	}
	return img.Spec.OSType
}

// imageDiskFormat is the block format of an image's cached file: QEMU
// reads ISO and raw images as raw.
func imageDiskFormat(img *api.Image) string {
	if img.Spec.Format == api.FormatQCOW2 {
		return storage.FormatQCOW2
	}
	return storage.FormatRaw
}

func bootFrom(vm *api.VirtualMachine) string {
	if vm.Spec.Boot.From == "" {
		return api.BootFromDisk
	}
	return vm.Spec.Boot.From
}

// prepareDisk makes disk i: a thin clone of an image in the VM's own
// directory (it goes with the VM), or a named Volume on this host, grown
// first if its spec asks for more than it has (a running VM's volume
// waits for this, its next start, to grow).
func (a *Agent) prepareDisk(ctx context.Context, vm *api.VirtualMachine, dir string, i int, d api.VMDisk) (compute.Disk, error) {
	field := fmt.Sprintf("spec.disks[%d]", i)
	disk := compute.Disk{Format: storage.FormatQCOW2, ReadOnly: d.ReadOnly, BootIndex: d.BootIndex,
		Bus: d.Bus, CDROM: d.Device == api.DeviceCDROM}
	switch {
	case d.Image != "":
		img, err := a.image(ctx, vm.Metadata.Tenant, d.Image)
		if err != nil {
			return disk, fmt.Errorf("%s.image: %w", field, err)
		}
		a.imgs.mu.RLock()
		defer a.imgs.mu.RUnlock()
		base, err := a.ensureImage(ctx, img, nil)
		if err != nil {
			return disk, fmt.Errorf("%s.image %s: %w", field, d.Image, err)
		}
		if disk.CDROM {
			// A CD-ROM is the image itself, read-only: nothing to clone.
			disk.Path, disk.Format = base, imageDiskFormat(img)
			return disk, nil
		}
		disk.Path = filepath.Join(dir, fmt.Sprintf("disk%d.qcow2", i))
		if err := cloneDisk(ctx, disk.Path, int64(d.Size), base); err != nil {
			return disk, fmt.Errorf("%s: %w", field, err)
		}
	case d.Volume != "":
		vol, err := a.volume(ctx, vm.Metadata.Tenant, d.Volume)
		if err != nil {
			return disk, fmt.Errorf("%s.volume: %w", field, err)
		}
		if vol.Spec.Host != "" && vol.Spec.Host != a.cfg.Name && !vol.Spec.Shared() {
			return disk, fmt.Errorf("%s.volume: volume %s lives on host %s, not %s", field, d.Volume, vol.Spec.Host, a.cfg.Name)
		}
		if vol.Spec.Pool != "" {
			return disk, a.preparePoolDisk(ctx, vol, field, &disk)
		}
		disk.Path, disk.Format = a.volumePath(vol), volumeFormat(vol)
		info, err := storage.VolumeInfo(ctx, disk.Path)
		if err != nil {
			why := "its phase is " + vol.Status.Phase
			if c := vol.Status.Condition(api.ConditionReady); c != nil && c.Message != "" {
				why = c.Message
			}
			return disk, waitingFor(api.ReasonVolumeNotReady, "%s.volume: volume %s is not made on this host yet (%s)", field, d.Volume, why)
		}
		if want := int64(vol.Spec.Size); want > info.VirtualSize {
			if err := storage.ResizeVolume(ctx, disk.Path, want); err != nil {
				return disk, fmt.Errorf("%s.volume %s: %w", field, d.Volume, err)
			}
		}
	default:
		return disk, fmt.Errorf("%s: names neither an image nor a volume", field)
	}
	return disk, nil
}

// cloneDisk makes a VM's disk a thin clone of the image base, or grows
// the clone made at an earlier start if the disk asks for more now. A
// clone of another image is refused, not replaced: it holds what the
// guest wrote.
func cloneDisk(ctx context.Context, path string, size int64, base string) error {
	have, err := storage.VolumeInfo(ctx, path)
	if errors.Is(err, fs.ErrNotExist) {
		return storage.CreateVolume(ctx, path, storage.FormatQCOW2, size, base)
	}
	if err != nil {
		return err
	}
	if abs, _ := filepath.Abs(base); have.BackingFile != abs {
		return fmt.Errorf("the disk was cloned from another image (%s) and holds what the guest wrote; a disk's image cannot change: delete and re-create the VM, or attach a new Volume", have.BackingFile)
	}
	if size > have.VirtualSize {
		return storage.ResizeVolume(ctx, path, size)
	}
	return nil
}

// removeDetachedClones deletes the image clones in the VM's directory
// whose disk the VM no longer has (disk N is "diskN.qcow2").
func removeDetachedClones(dir string, disks []api.VMDisk) {
	files, _ := filepath.Glob(filepath.Join(dir, "disk*.qcow2"))
	for _, f := range files {
		var i int
		if _, err := fmt.Sscanf(filepath.Base(f), "disk%d.qcow2", &i); err != nil {
			continue
		}
		if i >= len(disks) || disks[i].Image == "" || disks[i].Device == api.DeviceCDROM {
			os.Remove(f)
		}
	}
}

// sshKeys returns the public keys for the VM's seed: the SSHKeys it names,
// or every SSHKey of its tenant.
func (a *Agent) sshKeys(ctx context.Context, vm *api.VirtualMachine) ([]string, error) {
	objs, _, err := a.c.List(ctx, "SSHKey", vm.Metadata.Tenant, client.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading the tenant's SSH keys: %w", err)
	}
	byName := map[string]string{}
	for _, o := range objs {
		byName[o.GetMetadata().Name] = o.(*api.SSHKey).Spec.PublicKey
	}
	keys, _, err := vmSSHKeys(vm, byName)
	if err != nil {
		return nil, err
	}
	return keys, nil
}

// stableMAC derives a locally administered MAC from the VM's uid, so a NIC
// keeps its address across restarts and hosts.
func stableMAC(uid string, i int) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", uid, i)))
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", h[0], h[1], h[2])
}

// volume finds a Volume of the tenant: in the cache when it is placed on
// this host, else from the API (one not placed yet). One that does not
// exist is a *notFoundError.
func (a *Agent) volume(ctx context.Context, tenant, name string) (*api.Volume, error) {
	if o, ok := a.cache.volumes.Get(tenant + "/" + name); ok {
		return o.(*api.Volume), nil
	}
	obj, err := a.c.Get(ctx, "Volume", tenant, name)
	if api.IsNotFound(err) {
		return nil, &notFoundError{kind: "Volume", tenant: tenant, name: name}
	}
	if err != nil {
		return nil, err
	}
	return obj.(*api.Volume), nil
}

// reasonWait is a wait with the reason a VM's conditions give it.
type reasonWait struct {
	reason string
	waitError
}

func (e *reasonWait) Unwrap() error { return &e.waitError }

// waitingFor is a wait that a VM reports with reason.
func waitingFor(reason, format string, args ...any) error {
	return &reasonWait{reason: reason, waitError: waitError{msg: fmt.Sprintf(format, args...)}}
}

// classify says how a VM reports an error of prepare: a missing object by
// its kind, a wait (a volume being made, an upload to come) as a wait, a
// failed download as such, anything else as PrepareFailed. The message
// is the error's, which names the field.
func classify(err error) vmFailure {
	f := vmFailure{Reason: api.ReasonPrepareFailed, Message: err.Error()}
	var rw *reasonWait
	switch kind := missingKind(err); {
	case kind == "Image":
		f.Reason = api.ReasonImageNotFound
	case kind == "Volume":
		f.Reason = api.ReasonVolumeNotFound
	case kind == "SSHKey":
		f.Reason = api.ReasonSSHKeyNotFound
	case errors.As(err, &rw):
		f.Reason, f.Wait = rw.reason, true
	case errors.Is(err, errWaiting):
		f.Reason, f.Wait = api.ReasonWaitingForImage, true
	case errors.Is(err, errFetch):
		f.Reason = api.ReasonImageFetchFailed
	}
	return f
}

// smbiosOf is what the VM's firmware says it is: for
// cloudInit.datasource openstack, what cloud-init's OpenStack datasource
// (and ds-identify, and cloudbase-init) look for in SMBIOS type 1 on x86
// before they ask the metadata service, as Nova sets it.
func smbiosOf(vm *api.VirtualMachine) *compute.SMBIOSSystem {
	if vm.Spec.CloudInit.Datasource == api.DatasourceOpenStack {
		return &compute.SMBIOSSystem{Manufacturer: "OpenStack Foundation", Product: "OpenStack Nova"}
	}
	return nil
}
