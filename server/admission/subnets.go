package admission

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/store"
)

// SubnetGuardPrefix is where the per-tenant guard keys of subnet
// admission live; TenantHooks deletes a tenant's with it.
const SubnetGuardPrefix = "/hearth/guards/subnets/"

// Subnets refuses a Subnet whose CIDR overlaps that of another subnet on
// the same network: the network's router holds a gateway in each, and
// IPAM hands out addresses per subnet, so one address would belong to two
// subnets. Subnets of different networks, and of different tenants, may
// overlap freely. A subnet being deleted still holds its range until it
// is gone.
//
// As with quotas, two creates at once cannot both pass on the same free
// range: each is guarded (store.Guard) by a per-tenant key it touches, so
// the second of two racing creates fails its transaction and is checked
// again, against the first.
type Subnets struct {
	store *store.Store
}

// NewSubnets returns the subnet check over a store.
func NewSubnets(st *store.Store) *Subnets { return &Subnets{store: st} }

// Admit refuses a Subnet that overlaps another on its network, with a 422
// naming spec.cidr and the subnet it overlaps.
func (s *Subnets) Admit(ctx context.Context, _ *auth.Principal, obj, old api.Object) error {
	sn, ok := obj.(*api.Subnet)
	if !ok || sn.Metadata.DeletionTimestamp != nil {
		return nil
	}
	if o, ok := old.(*api.Subnet); ok && o.Spec.CIDR == sn.Spec.CIDR && o.Spec.Network == sn.Spec.Network {
		return nil // nothing that could overlap changed
	}
	p, err := netip.ParsePrefix(sn.Spec.CIDR)
	if err != nil {
		return nil // validation has said so
	}
	p = p.Masked()
	guard := SubnetGuardPrefix + sn.Metadata.Tenant
	rev, err := s.store.GuardRevision(ctx, guard)
	if err != nil {
		return err
	}
	store.Guard(ctx, guard, rev)
	k, _ := api.KindByName("Subnet")
	objs, _, err := s.store.List(ctx, k, store.TenantPrefix(k, sn.Metadata.Tenant), nil)
	if err != nil {
		return err
	}
	for _, o := range objs {
		other := o.(*api.Subnet)
		if other.Metadata.Name == sn.Metadata.Name || other.Spec.Network != sn.Spec.Network {
			continue
		}
		q, err := netip.ParsePrefix(other.Spec.CIDR)
		if err != nil || !p.Overlaps(q.Masked()) {
			continue
		}
		return api.NewInvalid("Subnet", sn.Metadata.Name, api.FieldErrors{{Field: "spec.cidr",
			Detail: fmt.Sprintf("%s overlaps subnet %s (%s) on network %s; subnets of one network must not share addresses",
				sn.Spec.CIDR, strconv.Quote(other.Metadata.Name), other.Spec.CIDR, strconv.Quote(sn.Spec.Network))}})
	}
	return nil
}
