package agent

import (
	"context"
	"fmt"
	"strings"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/storage"
)

// fenceDisks fences, at the storage, the lost host a highly available VM
// is failing over from, when the failover controller left that to the
// host the VM restarts on (status.failover.storage: no power driver can
// switch the lost host off, and every disk is an RBD volume). Before
// this host opens the disks, Ceph blocklists every client that has one
// open: the lost host's QEMU, running, frozen or dead, can never write
// to them again. Only then does the VM start here.
//
// It runs before every start while the failover is recorded; a second
// run finds no client but this host's own dead QEMU, if any.
func (v *vmController) fenceDisks(ctx context.Context, vm *api.VirtualMachine) error {
	fo := vm.Status.Failover
	if fo == nil || !fo.Storage || fo.FencedAt != nil || fo.From == v.a.cfg.Name {
		return nil
	}
	var fenced, vols []string
	for i, d := range vm.Spec.Disks {
		if d.Device == api.DeviceCDROM {
			continue
		}
		field := fmt.Sprintf("spec.disks[%d]", i)
		if d.Volume == "" {
			return fmt.Errorf("%s: cannot fence host %s at the storage: the disk is not a volume", field, fo.From)
		}
		vol, err := v.a.volume(ctx, vm.Metadata.Tenant, d.Volume)
		if err != nil {
			return fmt.Errorf("%s.volume: %w", field, err)
		}
		drv, err := v.a.pools.forVolume(ctx, vol)
		if err != nil {
			return fmt.Errorf("%s.volume %s: %w", field, d.Volume, err)
		}
		f, ok := drv.(storage.Fencer)
		if !ok {
			return fmt.Errorf("%s.volume %s: cannot fence host %s at the storage: pool %s (%s) cannot cut clients off", field, d.Volume, fo.From, vol.Spec.Pool, drv.Kind())
		}
		got, err := f.Fence(ctx, vol.Metadata.UID)
		if err != nil {
			return fmt.Errorf("%s.volume %s: fencing host %s at the storage: %w", field, d.Volume, fo.From, err)
		}
		fenced = append(fenced, got...)
		vols = append(vols, d.Volume)
	}
	clients := "no client had them open"
	if len(fenced) > 0 {
		clients = "blocklisted " + strings.Join(fenced, ", ")
	}
	v.a.rec.Eventf(ctx, vm, api.EventNormal, api.ReasonFenced, "host %s is fenced at the storage: Ceph refuses every earlier client of volume %s (%s)",
		fo.From, strings.Join(vols, ", "), clients)
	return nil
}
