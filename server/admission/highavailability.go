package admission

import (
	"context"
	"fmt"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/store"
)

// HighAvailability checks a VM that asks to be restarted elsewhere when
// its host is lost (spec.highAvailability): everything it runs from must
// be reachable from every host, so a restart on another host finds its
// disks as they were. Every disk must be a Volume of the VM's tenant in a
// shared pool (rbd, nfs), or a cdrom (an Image, which any host fetches);
// a disk cloned from an image lives in the VM's directory on its host,
// and a UEFI VM's variable store too.
type HighAvailability struct {
	store *store.Store
}

// NewHighAvailability returns the check over a store.
func NewHighAvailability(st *store.Store) *HighAvailability { return &HighAvailability{store: st} }

// Admit refuses a highly available VM that could not be restarted on
// another host, with a 422 naming the disk or field in the way.
func (h *HighAvailability) Admit(ctx context.Context, _ *auth.Principal, obj, old api.Object) error {
	vm, ok := obj.(*api.VirtualMachine)
	if !ok || !vm.Spec.HighAvailability {
		return nil
	}
	var es api.FieldErrors
	if vm.Spec.Firmware == api.FirmwareUEFI {
		es.Add("spec.highAvailability", "a UEFI VM's variable store is a file on its host, which a restart elsewhere would lose; use firmware bios")
	}
	vk, _ := api.KindByName("Volume")
	for i, d := range vm.Spec.Disks {
		p := fmt.Sprintf("spec.disks[%d]", i)
		switch {
		case d.Device == api.DeviceCDROM:
			continue
		case d.Image != "":
			es.Add(p+".image", "a clone of image %s lives on its host's disk, so a highly available VM cannot use it: make a Volume of it in a shared pool (rbd, nfs) and name that", d.Image)
			continue
		case d.Volume == "":
			continue // refused by validation already
		}
		vo, err := h.store.Get(ctx, vk, vm.Metadata.Tenant, d.Volume)
		if api.IsNotFound(err) {
			es.Add(p+".volume", "volume %s does not exist: a highly available VM's volumes must exist, in a shared pool, before it", d.Volume)
			continue
		}
		if err != nil {
			return err
		}
		if vol := vo.(*api.Volume); !vol.Spec.Shared() {
			es.Add(p+".volume", "volume %s is %s, on one host's disk; a highly available VM needs every volume in a shared pool (rbd, nfs)", d.Volume, vol.Spec.Backend)
		}
	}
	if len(es) > 0 {
		return api.NewInvalid("VirtualMachine", vm.Metadata.Name, es)
	}
	return nil
}
