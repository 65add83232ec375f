package ipam

import (
	"context"
	"fmt"
	"net/netip"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/store"
)

// Subnets refuses to delete a subnet while NICs hold addresses in it.
type Subnets struct {
	hints *ipHints // the NICs', which forget a deleted subnet
}

// OnCreate holds nothing.
func (Subnets) OnCreate(context.Context, clientv3.KV, api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	return nil, nil, nil
}

// OnDelete refuses while any address of the subnet is held (409 naming
// the VMs, which are the subnet's tenant's own).
func (s Subnets) OnDelete(ctx context.Context, kv clientv3.KV, obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	m := obj.GetMetadata()
	cmps, err := refuseInUse(ctx, kv, IPPrefix+m.UID+"/", func(hs []Holder) error {
		return api.NewInUse("subnet %q is in use by VMs %s: delete them, or move their NICs to another subnet, first", m.Name, vmNames(hs))
	})
	if err == nil {
		// Its uid is never used again; the hints are only memory.
		s.hints.forget(m.UID)
	}
	return cmps, nil, err
}

func vmNames(hs []Holder) string {
	var names []string
	for _, h := range hs {
		names = append(names, h.Name)
	}
	return listNames(names)
}

// Networks keeps what the server allocates for a network and no one else
// writes: its VNI (allocated at create by the VNI allocator) and the
// external address of its router on each host. The network controller
// lists the routers (one per host with a VM on the network); in that
// write, and in any other, each router keeps the address it had while the
// network names the same external network, a new one gets the lowest free
// address of the external network's range (none if the external network
// does not exist, serves another site than the host's, or is full), and
// the addresses of routers that went are released. A network is not
// deleted while VMs have NICs on it.
type Networks struct{}

// OnCreate writes the network's anchor (netanchor.go); a new network has
// no routers yet.
func (Networks) OnCreate(_ context.Context, _ clientv3.KV, obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	n := obj.(*api.Network)
	return nil, []clientv3.Op{clientv3.OpPut(anchorKey(n.Metadata.Tenant, n.Metadata.Name), anchorOf(n))}, nil
}

// OnUpdate keeps the VNI and settles the routers' external addresses.
func (Networks) OnUpdate(ctx context.Context, kv clientv3.KV, old, next api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	o, n := old.(*api.Network), next.(*api.Network)
	n.Status.VNI = o.Status.VNI
	t := newTxn()
	if err := routerAddresses(ctx, kv, t, o, n); err != nil {
		return nil, nil, err
	}
	cmps, ops := t.result()
	aops, err := anchorOps(ctx, kv, n)
	if err != nil {
		return nil, nil, err
	}
	return cmps, append(ops, aops...), nil
}

// OnDelete refuses while VMs have NICs on the network (their MACs are
// held under it), and releases the routers' external addresses.
func (Networks) OnDelete(ctx context.Context, kv clientv3.KV, obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	n := obj.(*api.Network)
	cmps, err := refuseInUse(ctx, kv, MACPrefix+n.Metadata.UID+"/", func(hs []Holder) error {
		return api.NewInUse("network %q is in use by VMs %s: delete them, or remove their NICs on it, first", n.Metadata.Name, vmNames(hs))
	})
	if err != nil {
		return nil, nil, err
	}
	t := newTxn()
	gone := *n
	gone.Status.Routers = nil
	if err := routerAddresses(ctx, kv, t, n, &gone); err != nil {
		return nil, nil, err
	}
	c, ops := t.result()
	ops = append(ops, clientv3.OpDelete(anchorKey(n.Metadata.Tenant, n.Metadata.Name)))
	return append(cmps, c...), ops, nil
}

// externalNetwork reads an external network by name; nil if it does not
// exist or is being deleted.
func externalNetwork(ctx context.Context, kv clientv3.KV, name string) (*found[*api.ExternalNetwork], error) {
	if name == "" {
		return nil, nil
	}
	obj, rev, err := getObject(ctx, kv, "ExternalNetwork", "", name)
	if err != nil || obj == nil || obj.GetMetadata().DeletionTimestamp != nil {
		return nil, err
	}
	return &found[*api.ExternalNetwork]{obj: obj.(*api.ExternalNetwork), rev: rev}, nil
}

// routerAddresses settles next's routers' external addresses against
// old's: kept, released or newly allocated.
func routerAddresses(ctx context.Context, kv clientv3.KV, t *txn, o, n *api.Network) error {
	x, err := externalNetwork(ctx, kv, n.Spec.ExternalNetwork)
	if err != nil {
		return err
	}
	// The old routers' addresses are in the external network the old
	// version named; it cannot be gone while they are held (its delete
	// refuses), though it may be being deleted.
	var oldX *found[*api.ExternalNetwork]
	if o.Spec.ExternalNetwork != "" {
		obj, _, err := getObject(ctx, kv, "ExternalNetwork", "", o.Spec.ExternalNetwork)
		if err != nil {
			return err
		}
		if obj != nil {
			oldX = &found[*api.ExternalNetwork]{obj: obj.(*api.ExternalNetwork)}
		}
	}

	// One router per host, the first listed.
	var routers []api.NetworkRouter
	seen := map[string]bool{}
	for _, r := range n.Status.Routers {
		if !seen[r.Host] {
			seen[r.Host] = true
			routers = append(routers, api.NetworkRouter{Host: r.Host})
		}
	}

	kept := map[string]string{}
	for _, r := range o.Status.Routers {
		a, err := netip.ParseAddr(r.ExternalAddress)
		if err != nil || oldX == nil {
			continue
		}
		key := extKey(oldX.obj.Metadata.UID, a)
		if x != nil && x.obj.Metadata.UID == oldX.obj.Metadata.UID && seen[r.Host] && kept[r.Host] == "" {
			kept[r.Host] = r.ExternalAddress
			t.keep(key, "")
		} else {
			t.release(key)
		}
	}

	var held map[string]bool
	attempt := store.Attempt(ctx)
	for i := range routers {
		r := &routers[i]
		if a, ok := kept[r.Host]; ok {
			r.ExternalAddress = a
			continue
		}
		if x == nil {
			continue
		}
		ok, err := servesHost(ctx, kv, x.obj, r.Host)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if held == nil {
			if held, err = heldUnder(ctx, kv, ExternalPrefix+x.obj.Metadata.UID+"/"); err != nil {
				return err
			}
		}
		a, ok := pickExternal(t, x.obj, held, attempt)
		if !ok {
			continue // full: the network controller's Routed condition says so
		}
		t.take(extKey(x.obj.Metadata.UID, a), Holder{Kind: "Network", Tenant: n.Metadata.Tenant, Name: n.Metadata.Name,
			UID: n.Metadata.UID, Host: r.Host}.value())
		t.exists(objectKey("ExternalNetwork", "", x.obj.Metadata.Name), x.rev)
		r.ExternalAddress = a.String()
	}
	n.Status.Routers = routers
	return nil
}

// servesHost reports whether an external network reaches a host: every
// host when it names no site, else the hosts of its site.
func servesHost(ctx context.Context, kv clientv3.KV, x *api.ExternalNetwork, host string) (bool, error) {
	if x.Spec.Site == "" {
		return true, nil
	}
	obj, _, err := getObject(ctx, kv, "Host", "", host)
	if err != nil || obj == nil {
		return false, err
	}
	return obj.(*api.Host).Spec.Site == x.Spec.Site, nil
}

// pickExternal picks a free address of an external network's range.
func pickExternal(t *txn, x *api.ExternalNetwork, held map[string]bool, attempt int) (netip.Addr, bool) {
	p, err := netip.ParsePrefix(x.Spec.CIDR)
	if err != nil {
		return netip.Addr{}, false
	}
	p = p.Masked()
	uid := x.Metadata.UID
	first, last := api.AddressRange(p, x.Spec.RangeStart, x.Spec.RangeEnd)
	return pickFree(first, last, func(a netip.Addr) bool {
		key := extKey(uid, a)
		return api.Reserved(p, x.Spec.Gateway, a) || t.busy(key) || (held[a.String()] && !t.released[key])
	}, attempt)
}

// ExternalNetworks refuses to delete an external network while routers
// or floating IPs hold addresses on it.
type ExternalNetworks struct{}

// OnCreate holds nothing.
func (ExternalNetworks) OnCreate(context.Context, clientv3.KV, api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	return nil, nil, nil
}

// OnDelete refuses while any address is held, naming the holders (only
// cluster admins delete external networks, and they see every tenant).
func (ExternalNetworks) OnDelete(ctx context.Context, kv clientv3.KV, obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	m := obj.GetMetadata()
	cmps, err := refuseInUse(ctx, kv, ExternalPrefix+m.UID+"/", func(hs []Holder) error {
		var names []string
		for _, h := range sortedHolders(hs) {
			names = append(names, h.String())
		}
		return api.NewInUse("external network %q holds addresses of %s: delete those floating IPs, and detach those networks (spec.externalNetwork), first",
			m.Name, listNames(names))
	})
	return cmps, nil, err
}

// FloatingIPs gives a floating IP its address on its external network in
// its create transaction (spec.address if it is in the range Hearth may
// use and free, else the lowest free one) and releases it in its delete
// transaction. Tenants may name any external network but cannot read
// them, so refusals say no more than that the external network was not
// found, that an address is not one it hands out, or that it is taken:
// never its range or who holds an address.
type FloatingIPs struct{}

// OnCreate allocates the address.
func (FloatingIPs) OnCreate(ctx context.Context, kv clientv3.KV, obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	f := obj.(*api.FloatingIP)
	f.Status.Address = ""
	name := f.Spec.ExternalNetwork
	invalid := func(field, format string, args ...any) error {
		return api.NewInvalid("FloatingIP", f.Metadata.Name, api.FieldErrors{{Field: field, Detail: fmt.Sprintf(format, args...)}})
	}
	x, err := externalNetwork(ctx, kv, name)
	if err != nil {
		return nil, nil, err
	}
	if x == nil {
		return nil, nil, invalid("spec.externalNetwork", "external network %q not found", name)
	}
	p, err := netip.ParsePrefix(x.obj.Spec.CIDR)
	if err != nil {
		return nil, nil, invalid("spec.externalNetwork", "external network %q has no valid CIDR", name)
	}
	p = p.Masked()
	uid := x.obj.Metadata.UID
	t := newTxn()
	var a netip.Addr
	if f.Spec.Address != "" {
		a, err = netip.ParseAddr(f.Spec.Address)
		first, last := api.AddressRange(p, x.obj.Spec.RangeStart, x.obj.Spec.RangeEnd)
		if err != nil || !p.Contains(a) || a.Less(first) || last.Less(a) || api.Reserved(p, x.obj.Spec.Gateway, a) {
			return nil, nil, invalid("spec.address", "%s is not an address external network %q hands out; leave it empty to get one", f.Spec.Address, name)
		}
		_, held, err := holderOf(ctx, kv, extKey(uid, a))
		if err != nil {
			return nil, nil, err
		}
		if held {
			return nil, nil, invalid("spec.address", "%s is already in use; leave it empty to get a free address", f.Spec.Address)
		}
	} else {
		held, err := heldUnder(ctx, kv, ExternalPrefix+uid+"/")
		if err != nil {
			return nil, nil, err
		}
		var ok bool
		if a, ok = pickExternal(t, x.obj, held, store.Attempt(ctx)); !ok {
			return nil, nil, invalid("spec.externalNetwork", "external network %q has no free address left", name)
		}
	}
	t.take(extKey(uid, a), Holder{Kind: "FloatingIP", Tenant: f.Metadata.Tenant, Name: f.Metadata.Name, UID: f.Metadata.UID}.value())
	t.exists(objectKey("ExternalNetwork", "", name), x.rev)
	f.Status.Address = a.String()
	if f.Status.Phase == "" {
		f.Status.Phase = api.FloatingIPAllocated
	}
	cmps, ops := t.result()
	return cmps, ops, nil
}

// OnUpdate keeps the address as allocated, whoever writes the status.
func (FloatingIPs) OnUpdate(_ context.Context, _ clientv3.KV, old, next api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	next.(*api.FloatingIP).Status.Address = old.(*api.FloatingIP).Status.Address
	return nil, nil, nil
}

// OnDelete releases the address.
func (FloatingIPs) OnDelete(ctx context.Context, kv clientv3.KV, obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	f := obj.(*api.FloatingIP)
	a, err := netip.ParseAddr(f.Status.Address)
	if err != nil {
		return nil, nil, nil
	}
	// The external network cannot be gone while the address is held.
	o, _, err := getObject(ctx, kv, "ExternalNetwork", "", f.Spec.ExternalNetwork)
	if err != nil || o == nil {
		return nil, nil, err
	}
	return nil, []clientv3.Op{clientv3.OpDelete(extKey(o.GetMetadata().UID, a))}, nil
}
