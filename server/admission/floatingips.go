package admission

import (
	"context"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/store"
)

// FloatingIPs checks a floating IP's target when it is set or changed: a
// VM's NIC that exists, whose network routes to the floating IP's
// external network (the network's router is what translates the
// address), and that no other floating IP of the tenant points at. A
// target VM that does not exist yet is let through (the write warns, and
// the network controller associates the address once the VM appears),
// and so is a race of two floating IPs for one NIC, which the controller
// settles (the older one wins). Everything is looked up in the floating
// IP's tenant, so a target names only the tenant's own VMs.
type FloatingIPs struct {
	store *store.Store
}

// NewFloatingIPs returns the floating IP check over a store.
func NewFloatingIPs(st *store.Store) *FloatingIPs { return &FloatingIPs{store: st} }

// Admit refuses a target that cannot work, with a 422 on spec.target.
func (f *FloatingIPs) Admit(ctx context.Context, _ *auth.Principal, obj, old api.Object) error {
	fip, ok := obj.(*api.FloatingIP)
	if !ok || fip.Spec.Target == nil || fip.Metadata.DeletionTimestamp != nil {
		return nil
	}
	tg := *fip.Spec.Target
	if o, ok := old.(*api.FloatingIP); ok && o.Spec.Target != nil && *o.Spec.Target == tg {
		return nil
	}
	tenant := fip.Metadata.Tenant
	refuse := func(field, format string, args ...any) error {
		var es api.FieldErrors
		es.Add(field, format, args...)
		return api.NewInvalid("FloatingIP", fip.Metadata.Name, es)
	}
	vk, _ := api.KindByName("VirtualMachine")
	o, err := f.store.Get(ctx, vk, tenant, tg.VM)
	if api.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	vm := o.(*api.VirtualMachine)
	if tg.NIC >= len(vm.Spec.NICs) {
		if len(vm.Spec.NICs) == 0 {
			return refuse("spec.target.nic", "VM %q has no NICs", tg.VM)
		}
		return refuse("spec.target.nic", "VM %q has %d NICs (nics[0] to nics[%d])", tg.VM, len(vm.Spec.NICs), len(vm.Spec.NICs)-1)
	}
	netName := vm.Spec.NICs[tg.NIC].Network
	nk, _ := api.KindByName("Network")
	no, err := f.store.Get(ctx, nk, tenant, netName)
	if err != nil && !api.IsNotFound(err) {
		return err
	}
	if err == nil {
		if ext := no.(*api.Network).Spec.ExternalNetwork; ext != fip.Spec.ExternalNetwork {
			routes := "routes to no external network"
			if ext != "" {
				routes = "routes to external network " + `"` + ext + `"`
			}
			return refuse("spec.target", "VM %q nics[%d] is on network %q, which %s, not %q: set the network's spec.externalNetwork to %q first",
				tg.VM, tg.NIC, netName, routes, fip.Spec.ExternalNetwork, fip.Spec.ExternalNetwork)
		}
	}
	fk, _ := api.KindByName("FloatingIP")
	others, _, err := f.store.List(ctx, fk, store.TenantPrefix(fk, tenant), nil)
	if err != nil {
		return err
	}
	for _, x := range others {
		other := x.(*api.FloatingIP)
		if other.Metadata.Name != fip.Metadata.Name && other.Spec.Target != nil && *other.Spec.Target == tg {
			return refuse("spec.target", "VM %q nics[%d] already has floating IP %q", tg.VM, tg.NIC, other.Metadata.Name)
		}
	}
	return nil
}
