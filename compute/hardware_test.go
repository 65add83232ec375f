package compute

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TestEveryHardwareChoiceStarts starts a real QEMU with every NIC model,
// disk bus and device, machine type and firmware the API accepts (its
// lists, so a value added there is tried here), and asks QEMU over QMP
// which devices the guest got. The API once defaulted NICs to "virtio",
// which QEMU refused as a device name.
func TestEveryHardwareChoiceStarts(t *testing.T) {
	requireQEMU(t)
	for _, machine := range api.MachineTypes {
		for _, fw := range api.Firmwares {
			t.Run(machine+"/"+fw, func(t *testing.T) {
				spec, want := everyDevice(t, machine, fw)
				if machine == api.MachineVirt {
					_, err := NewQEMU(QEMUOptions{}).Start(context.Background(), spec)
					if err == nil || !strings.Contains(err.Error(), "arm64") {
						t.Fatalf("Start with machine type virt on x86_64 = %v, want an error that says it is for arm64 hosts", err)
					}
					return
				}
				start(t, NewQEMU(QEMUOptions{}), spec)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				c, err := DialQMP(ctx, filepath.Join(spec.Dir, QMPSocket))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				for id, typ := range want {
					var got string
					if err := c.Execute(ctx, "qom-get", map[string]any{"path": "/machine/peripheral/" + id, "property": "type"}, &got); err != nil {
						t.Errorf("device %s: %v", id, err)
					} else if got != typ {
						t.Errorf("device %s is a %s, want %s", id, got, typ)
					}
				}
				var machineType string
				if err := c.Execute(ctx, "qom-get", map[string]any{"path": "/machine", "property": "type"}, &machineType); err != nil {
					t.Fatal(err)
				}
				if prefix := map[string]string{api.MachineQ35: "pc-q35-", api.MachinePC: "pc-i440fx-"}[machine]; !strings.HasPrefix(machineType, prefix) {
					t.Errorf("machine is %s, want a %s* machine", machineType, prefix)
				}
			})
		}
	}
}

// everyDevice is a VM with one NIC of every model and one disk of every
// bus and device the API allows together, and the QEMU device type each
// must become.
func everyDevice(t *testing.T, machine, firmware string) (Spec, map[string]string) {
	dir := t.TempDir()
	spec := Spec{ID: newUUID(t), Name: "test/hardware", Dir: dir, CPUs: 1, MemoryMiB: 128,
		Firmware: firmware, MachineType: machine, Boot: Boot{From: "disk"}}
	t.Cleanup(func() { killForCleanup(t, spec) })
	want := map[string]string{}
	qemuNIC := map[string]string{api.NICVirtio: "virtio-net-pci", api.NICE1000: "e1000", api.NICRTL8139: "rtl8139"}
	for i, model := range api.NICModels {
		spec.NICs = append(spec.NICs, NIC{MAC: fmt.Sprintf("52:54:00:00:00:%02x", i+1), Model: model})
		want[nicID(i)] = qemuNIC[model]
	}
	qemuDisk := map[[2]string]string{
		{api.BusVirtio, api.DeviceDisk}: "virtio-blk-pci",
		{api.BusSCSI, api.DeviceDisk}:   "scsi-hd", {api.BusSCSI, api.DeviceCDROM}: "scsi-cd",
		{api.BusIDE, api.DeviceDisk}: "ide-hd", {api.BusIDE, api.DeviceCDROM}: "ide-cd",
	}
	for _, bus := range api.DiskBuses {
		for _, dev := range api.DiskDevices {
			if bus == api.BusVirtio && dev == api.DeviceCDROM {
				continue // refused by the API's validation
			}
			typ, ok := qemuDisk[[2]string{bus, dev}]
			if !ok {
				t.Fatalf("no QEMU device expected for bus %s device %s: add it to the test", bus, dev)
			}
			path := filepath.Join(dir, fmt.Sprintf("%s-%s.raw", bus, dev))
			if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			want[fmt.Sprintf("disk%d-dev", len(spec.Disks))] = typ
			spec.Disks = append(spec.Disks, Disk{Path: path, Format: "raw", Bus: bus, CDROM: dev == api.DeviceCDROM})
		}
	}
	if !slices.Contains([]string{api.MachineQ35, api.MachinePC, api.MachineVirt}, machine) {
		t.Fatalf("machine type %s is new: say in the test what QEMU machine it must become", machine)
	}
	return spec, want
}
