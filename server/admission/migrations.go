package admission

import (
	"context"
	"fmt"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/store"
)

// Migrations checks a change of a placed VM's spec.host, which asks to
// move the VM there (live, when it runs: the agents move it over QMP).
// A VM can move only if the new host can open everything it uses: every
// disk a Volume in a shared pool (rbd, nfs), no disk cloned from an image
// into the VM's directory, and no UEFI variable store (a file on the
// host). NICs move with the VM: its ports stay on the host it runs on
// until the destination has it (api.VMPortHost). The volumes
// are looked up in the VM's own tenant.
//
// One change is not a move: the failover controller (only the server's
// own controllers, never a person) unbinding a highly available VM from
// a lost host it has fenced, so the scheduler places it again and it
// starts afresh elsewhere (see controllers.Failover).
type Migrations struct {
	store *store.Store
}

// NewMigrations returns the migration check over a store.
func NewMigrations(st *store.Store) *Migrations { return &Migrations{store: st} }

// Admit refuses a move that cannot work, with a 422 on spec.host that
// names what keeps the VM where it is.
func (m *Migrations) Admit(ctx context.Context, p *auth.Principal, obj, old api.Object) error {
	vm, ok := obj.(*api.VirtualMachine)
	o, ok2 := old.(*api.VirtualMachine)
	if !ok || !ok2 || o.Spec.Host == "" || vm.Spec.Host == o.Spec.Host {
		return nil
	}
	if FailoverUnbind(p, vm, o) {
		return nil
	}
	refuse := func(format string, args ...any) error {
		var es api.FieldErrors
		es.Add("spec.host", "cannot change from %q to %q: %s", o.Spec.Host, vm.Spec.Host, fmt.Sprintf(format, args...))
		return api.NewInvalid("VirtualMachine", vm.Metadata.Name, es)
	}
	if vm.Spec.Host == "" {
		return refuse("name the host to move the VM to")
	}
	if o.Status.Migration != nil {
		return refuse("the VM is still moving from %s", o.Status.Migration.From)
	}
	if vm.Spec.Firmware == api.FirmwareUEFI {
		return refuse("a UEFI VM's variable store is a file on its host")
	}
	vk, _ := api.KindByName("Volume")
	for i, d := range vm.Spec.Disks {
		switch {
		case d.Image != "" && d.Device != api.DeviceCDROM:
			return refuse("disks[%d] is a clone of image %s on %s; only VMs whose disks are Volumes in shared pools move", i, d.Image, o.Spec.Host)
		case d.Volume == "":
			continue
		}
		vo, err := m.store.Get(ctx, vk, vm.Metadata.Tenant, d.Volume)
		if api.IsNotFound(err) {
			return refuse("disks[%d]: volume %s does not exist", i, d.Volume)
		}
		if err != nil {
			return err
		}
		if vol := vo.(*api.Volume); !vol.Spec.Shared() {
			return refuse("disks[%d]: volume %s lives on %s's disk; only volumes in shared pools (rbd, nfs) move with a VM", i, d.Volume, o.Spec.Host)
		}
	}
	return nil
}

// FailoverUnbind reports whether a change of a VM's spec.host from old to
// vm is the failover controller's unbinding of a VM from the host it
// fenced: by the server's own controllers, to no host, from the host
// status.failover names, after it was fenced (or for the next host to
// fence it at the storage before it starts the VM).
func FailoverUnbind(p *auth.Principal, vm, old *api.VirtualMachine) bool {
	f := old.Status.Failover
	return p != nil && p.Internal && vm.Spec.Host == "" && old.Spec.HighAvailability &&
		f != nil && f.From == old.Spec.Host && (f.FencedAt != nil || f.Storage)
}
