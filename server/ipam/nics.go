package ipam

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/store"
)

// NICs gives every NIC of a VM an IP in its subnet and a MAC unique on its
// network, in the VM's create transaction and in every update that
// changes its NICs, and releases them in its delete transaction. The
// result is the VM's status.interfaces, which no one else writes.
//
//   - The NIC's network must exist in the VM's tenant, and so must its
//     subnet (spec.nics[i].subnet, or the network's only subnet): IPAM
//     needs the subnet, so a VM naming either before it exists is refused
//     with a field error saying to create it first. Names are looked up in
//     the VM's tenant only, so no message tells anything of another's.
//   - A static spec.nics[i].ip is honoured if it is in the subnet (not its
//     network, broadcast or gateway address) and free; anywhere in the
//     subnet, since the DHCP range bounds what IPAM picks, not what a
//     person may ask for. Without one, the lowest free address of the
//     subnet's DHCP range.
//   - A static spec.nics[i].mac is honoured if no other NIC on the network
//     has it; without one, 52:54:00 and three random bytes.
//   - An update keeps each NIC's addresses while the NIC still asks for
//     what it has (same network and subnet, no other static address),
//     wherever it moved in the list; the rest are released and allocated
//     again, in the same transaction.
type NICs struct {
	// hints make finding the lowest free address O(1) (iphints.go);
	// without them (the zero NICs) every dynamic address reads the
	// subnet's keys.
	hints *ipHints
}

// nicRequest is what of a NIC decides its addresses.
type nicRequest struct{ Network, Subnet, IP, MAC, IPv6Subnet string }

func requests(nics []api.VMNIC) []nicRequest {
	out := make([]nicRequest, len(nics))
	for i, n := range nics {
		out[i] = nicRequest{n.Network, n.Subnet, n.IP, n.MAC, n.IPv6Subnet}
	}
	return out
}

// OnCreate allocates every NIC's addresses.
func (n NICs) OnCreate(ctx context.Context, kv clientv3.KV, obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	vm := obj.(*api.VirtualMachine)
	vm.Status.Interfaces = nil
	return allocateNICs(ctx, kv, n.hints, vm, nil)
}

// OnUpdate keeps the allocations of NICs that did not change and
// reallocates the others; whatever the writer sent as
// status.interfaces is replaced.
func (n NICs) OnUpdate(ctx context.Context, kv clientv3.KV, old, next api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	o, nv := old.(*api.VirtualMachine), next.(*api.VirtualMachine)
	nv.Status.Interfaces = slices.Clone(o.Status.Interfaces)
	unchanged := slices.Equal(requests(o.Spec.NICs), requests(nv.Spec.NICs))
	if unchanged && len(o.Status.Interfaces) == len(nv.Spec.NICs) {
		return nil, nil, nil // the common case: a status write
	}
	cmps, ops, err := allocateNICs(ctx, kv, n.hints, nv, o)
	if err != nil && unchanged && api.ReasonOf(err) == api.ReasonInvalid {
		// A VM stored before NICs were allocated, whose network is
		// gone: its agent's status writes must still go through.
		nv.Status.Interfaces = slices.Clone(o.Status.Interfaces)
		return nil, nil, nil
	}
	return cmps, ops, err
}

// OnDelete releases every NIC's addresses.
func (n NICs) OnDelete(ctx context.Context, kv clientv3.KV, obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	vm := obj.(*api.VirtualMachine)
	t := newTxn()
	r := &resolver{ctx: ctx, kv: kv, tenant: vm.Metadata.Tenant, hints: n.hints}
	if err := r.release(t, vm.Status.Interfaces, nil); err != nil {
		return nil, nil, err
	}
	cmps, ops := t.result()
	return cmps, ops, nil
}

// resolver reads, once per write, the networks and subnets a VM's NICs
// name, in the VM's tenant.
type resolver struct {
	ctx    context.Context
	kv     clientv3.KV
	tenant string
	hints  *ipHints

	networks map[string]*found[*api.Network]
	subnets  map[string]*found[*api.Subnet] // every subnet of the tenant
	held     map[string]map[string]bool     // subnet uid → held IPs
}

type found[T any] struct {
	obj T
	rev int64 // create revision
	// cmp, when set, is the comparison that obj is still as read (a
	// network's anchor: netanchor.go); else its create revision is rev.
	cmp clientv3.Cmp
}

func (r *resolver) network(name string) (*found[*api.Network], error) {
	if f, ok := r.networks[name]; ok {
		return f, nil
	}
	if r.networks == nil {
		r.networks = map[string]*found[*api.Network]{}
	}
	f, err := readNetwork(r.ctx, r.kv, r.tenant, name)
	if err != nil {
		return nil, err
	}
	r.networks[name] = f
	return f, nil
}

func (r *resolver) loadSubnets() error {
	if r.subnets != nil {
		return nil
	}
	k, _ := api.KindByName("Subnet")
	resp, err := r.kv.Get(r.ctx, store.TenantPrefix(k, r.tenant), clientv3.WithPrefix())
	if err != nil {
		return api.NewUnavailable("etcd: %v", err)
	}
	r.subnets = map[string]*found[*api.Subnet]{}
	for _, kv := range resp.Kvs {
		var cache *subnetCache
		if r.hints != nil {
			cache = &r.hints.decoded
		}
		sn, err := cache.decode(string(kv.Key), kv.ModRevision, kv.Value)
		if err != nil {
			return fmt.Errorf("decoding stored subnet %s: %w", kv.Key, err)
		}
		r.subnets[sn.Metadata.Name] = &found[*api.Subnet]{obj: sn, rev: kv.CreateRevision}
	}
	return nil
}

func (r *resolver) subnet(name string) (*found[*api.Subnet], error) {
	if err := r.loadSubnets(); err != nil {
		return nil, err
	}
	return r.subnets[name], nil
}

// subnetsOf lists the names of the subnets on a network, sorted.
func (r *resolver) subnetsOf(network string) ([]string, error) {
	if err := r.loadSubnets(); err != nil {
		return nil, err
	}
	var out []string
	for name, f := range r.subnets {
		if f.obj.Spec.Network == network {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (r *resolver) heldIPs(subnetUID string) (map[string]bool, error) {
	if h, ok := r.held[subnetUID]; ok {
		return h, nil
	}
	if r.held == nil {
		r.held = map[string]map[string]bool{}
	}
	h, err := heldUnder(r.ctx, r.kv, IPPrefix+subnetUID+"/")
	if err != nil {
		return nil, err
	}
	r.held[subnetUID] = h
	return h, nil
}

// release lets go of the addresses of interfaces whose index is not in
// keep (an interface without a MAC or IP holds none of it).
func (r *resolver) release(t *txn, ifs []api.VMInterfaceStatus, keep map[int]bool) error {
	for j, ifc := range ifs {
		if keep[j] {
			continue
		}
		if ifc.MAC != "" {
			n, err := r.network(ifc.Network)
			if err != nil {
				return err
			}
			if n != nil {
				t.release(macKey(n.obj.Metadata.UID, ifc.MAC))
			}
		}
		for _, held := range [][2]string{{ifc.Subnet, ifc.IP}, {ifc.IPv6Subnet, ifc.IPv6}} {
			a, err := netip.ParseAddr(held[1])
			if err != nil {
				continue
			}
			sn, err := r.subnet(held[0])
			if err != nil {
				return err
			}
			if sn != nil {
				t.release(ipKey(sn.obj.Metadata.UID, a))
				// A hint: a reader checks before it believes it.
				r.hints.mark(sn.obj.Metadata.UID, a, false)
			}
		}
	}
	return nil
}

// resolved is a NIC's network and subnet, and on a dual-stack network
// the IPv6 subnet it also takes an address in.
type resolved struct {
	net *found[*api.Network]
	sn  *found[*api.Subnet]
	sn6 *found[*api.Subnet]
}

func allocateNICs(ctx context.Context, kv clientv3.KV, hints *ipHints, vm *api.VirtualMachine, old *api.VirtualMachine) ([]clientv3.Cmp, []clientv3.Op, error) {
	tenant := vm.Metadata.Tenant
	r := &resolver{ctx: ctx, kv: kv, tenant: tenant, hints: hints}
	var es api.FieldErrors
	targets := make([]resolved, len(vm.Spec.NICs))
	for i, nic := range vm.Spec.NICs {
		np := fmt.Sprintf("spec.nics[%d]", i)
		n, err := r.network(nic.Network)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case n == nil:
			es.Add(np+".network", "network %q does not exist in tenant %s; create it (and a subnet on it) first", nic.Network, tenant)
			continue
		case n.obj.Metadata.DeletionTimestamp != nil:
			es.Add(np+".network", "network %q is being deleted", nic.Network)
			continue
		}
		var sn *found[*api.Subnet]
		if nic.Subnet != "" {
			if sn, err = r.subnet(nic.Subnet); err != nil {
				return nil, nil, err
			}
			switch {
			case sn == nil:
				es.Add(np+".subnet", "subnet %q does not exist in tenant %s; create it first", nic.Subnet, tenant)
				continue
			case sn.obj.Spec.Network != nic.Network:
				es.Add(np+".subnet", "subnet %q is on network %q, not %q", nic.Subnet, sn.obj.Spec.Network, nic.Network)
				continue
			}
		} else {
			names, err := r.subnetsOf(nic.Network)
			if err != nil {
				return nil, nil, err
			}
			if v4, v6 := r.byFamily(names); len(names) == 2 && len(v4) == 1 && len(v6) == 1 {
				names = v4 // dual-stack: the IPv4 subnet, and the IPv6 one below
			}
			switch len(names) {
			case 0:
				es.Add(np+".subnet", "network %q has no subnet to take an address from; create one first", nic.Network)
				continue
			case 1:
				sn, _ = r.subnet(names[0])
			default:
				es.Add(np+".subnet", "is required: network %q has several subnets (%s)", nic.Network, listNames(names))
				continue
			}
		}
		if sn.obj.Metadata.DeletionTimestamp != nil {
			es.Add(np+".subnet", "subnet %q is being deleted", sn.obj.Metadata.Name)
			continue
		}
		targets[i] = resolved{net: n, sn: sn}
		sn6, err := r.dualStack(np, nic, sn.obj, &es)
		if err != nil {
			return nil, nil, err
		}
		targets[i].sn6 = sn6
	}
	if len(es) > 0 {
		return nil, nil, api.NewInvalid("VirtualMachine", vm.Metadata.Name, es)
	}

	// Match each NIC with an interface it had on the same network, so
	// it keeps its MAC, and its IP too while it asks for nothing else:
	// at its own index first, then anywhere.
	var oldIfs []api.VMInterfaceStatus
	if old != nil {
		oldIfs = old.Status.Interfaces
	}
	// level: 2 keeps both addresses, 1 the MAC only, 0 neither.
	level := func(i, j int) int {
		nic, ifc := vm.Spec.NICs[i], oldIfs[j]
		if ifc.MAC == "" || ifc.Network != nic.Network || (nic.MAC != "" && nic.MAC != ifc.MAC) {
			return 0
		}
		if ifc.IP != "" && ifc.Subnet == targets[i].sn.obj.Metadata.Name && (nic.IP == "" || sameAddr(nic.IP, ifc.IP)) &&
			ifc.IPv6Subnet == targets[i].sn6Name() {
			return 2
		}
		return 1
	}
	match := make([]int, len(vm.Spec.NICs))
	for i := range match {
		match[i] = -1
	}
	used := map[int]bool{}
	for _, want := range []int{2, 1} {
		for i := range match {
			if match[i] < 0 && i < len(oldIfs) && !used[i] && level(i, i) >= want {
				match[i], used[i] = i, true
			}
		}
		for i := range match {
			for j := 0; match[i] < 0 && j < len(oldIfs); j++ {
				if !used[j] && level(i, j) >= want {
					match[i], used[j] = j, true
				}
			}
		}
	}

	t := newTxn()
	ifs := make([]api.VMInterfaceStatus, len(vm.Spec.NICs))
	holder := func(i int) string {
		return Holder{Kind: "VirtualMachine", Tenant: tenant, Name: vm.Metadata.Name, UID: vm.Metadata.UID, NIC: i}.value()
	}
	keepIP := map[int]bool{} // by new index
	for i, j := range match {
		if j < 0 {
			continue
		}
		value := ""
		if i != j {
			value = holder(i) // the holder's NIC index moved
		}
		ifs[i] = oldIfs[j]
		t.keep(macKey(targets[i].net.obj.Metadata.UID, ifs[i].MAC), value)
		if level(i, j) == 2 {
			a, _ := netip.ParseAddr(ifs[i].IP)
			t.keep(ipKey(targets[i].sn.obj.Metadata.UID, a), value)
			if a6, err := netip.ParseAddr(ifs[i].IPv6); err == nil && targets[i].sn6 != nil {
				t.keep(ipKey(targets[i].sn6.obj.Metadata.UID, a6), value)
			}
			keepIP[i] = true
		}
	}
	// Release what no NIC keeps: every address of an unmatched
	// interface, and the IP of a matched one that asks for another.
	var gone []api.VMInterfaceStatus
	for j, ifc := range oldIfs {
		if !used[j] {
			gone = append(gone, ifc)
		}
	}
	for i, j := range match {
		if j >= 0 && !keepIP[i] {
			o := oldIfs[j]
			gone = append(gone, api.VMInterfaceStatus{Subnet: o.Subnet, IP: o.IP, IPv6Subnet: o.IPv6Subnet, IPv6: o.IPv6})
		}
	}
	if err := r.release(t, gone, nil); err != nil {
		return nil, nil, err
	}

	attempt := store.Attempt(ctx)
	for i, nic := range vm.Spec.NICs {
		if keepIP[i] {
			continue
		}
		np := fmt.Sprintf("spec.nics[%d]", i)
		tg := targets[i]
		mac := ifs[i].MAC
		if match[i] < 0 {
			var ok bool
			var err error
			if mac, ok, err = takeMAC(ctx, kv, t, np, tg.net.obj.Metadata.UID, nic.MAC, holder(i), &es); err != nil {
				return nil, nil, err
			} else if !ok {
				continue
			}
		}
		ip, ok, err := takeIP(r, t, np, tg.sn.obj, nic.IP, mac, holder(i), attempt, &es)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			continue
		}
		var ip6 netip.Addr
		if tg.sn6 != nil {
			if ip6, ok, err = takeIP(r, t, np, tg.sn6.obj, "", mac, holder(i), attempt, &es); err != nil {
				return nil, nil, err
			} else if !ok {
				continue
			}
			t.exists(objectKey("Subnet", tenant, tg.sn6.obj.Metadata.Name), tg.sn6.rev)
		}
		// The network and subnet must still be the ones read when
		// this commits: a delete that came first fails this.
		t.cmps = append(t.cmps, tg.net.cmp)
		t.exists(objectKey("Subnet", tenant, tg.sn.obj.Metadata.Name), tg.sn.rev)
		ifs[i] = api.VMInterfaceStatus{Network: nic.Network, Subnet: tg.sn.obj.Metadata.Name, IP: ip.String(), MAC: mac}
		if ip6.IsValid() {
			ifs[i].IPv6Subnet, ifs[i].IPv6 = tg.sn6.obj.Metadata.Name, ip6.String()
		}
	}
	if len(es) > 0 {
		return nil, nil, api.NewInvalid("VirtualMachine", vm.Metadata.Name, es)
	}
	if len(ifs) == 0 {
		ifs = nil
	}
	vm.Status.Interfaces = ifs
	cmps, ops := t.result()
	return cmps, ops, nil
}

func sameAddr(a, b string) bool {
	x, err1 := netip.ParseAddr(a)
	y, err2 := netip.ParseAddr(b)
	return err1 == nil && err2 == nil && x == y
}

// takeMAC takes the static MAC asked for, or a random one in QEMU's
// 52:54:00 range, on a network.
func takeMAC(ctx context.Context, kv clientv3.KV, t *txn, np, netUID, want, holder string, es *api.FieldErrors) (string, bool, error) {
	if want != "" {
		key := macKey(netUID, want)
		if t.busy(key) {
			es.Add(np+".mac", "%s is asked for by another NIC of this VM on the same network", want)
			return "", false, nil
		}
		if !t.released[key] {
			h, held, err := holderOf(ctx, kv, key)
			if err != nil {
				return "", false, err
			}
			if held {
				// Networks are the tenant's own, so the holder is a VM
				// of the same tenant: naming it tells nothing new.
				es.Add(np+".mac", "%s is already used on this network by %s", want, h)
				return "", false, nil
			}
		}
		t.take(key, holder)
		return want, true, nil
	}
	for range 16 {
		var b [3]byte
		_, _ = rand.Read(b[:])
		mac := fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
		key := macKey(netUID, mac)
		if t.busy(key) {
			continue
		}
		_, held, err := holderOf(ctx, kv, key)
		if err != nil {
			return "", false, err
		}
		if !held {
			t.take(key, holder)
			return mac, true, nil
		}
	}
	return "", false, api.NewUnavailable("could not find a free MAC address on the network; try again")
}

// hintedAttempts is how many tries of a write pick a dynamic address
// from the hints before the write reads every key of the subnet.
const hintedAttempts = 3

// takeIP takes the static address asked for, or the lowest free one in
// the subnet's DHCP range.
func takeIP(r *resolver, t *txn, np string, sn *api.Subnet, want, mac, holder string, attempt int, es *api.FieldErrors) (netip.Addr, bool, error) {
	p, err := netip.ParsePrefix(sn.Spec.CIDR)
	if err != nil {
		es.Add(np+".subnet", "subnet %q has no valid CIDR (%q)", sn.Metadata.Name, sn.Spec.CIDR)
		return netip.Addr{}, false, nil
	}
	p = p.Masked()
	uid := sn.Metadata.UID
	if slaac(sn) {
		return takeSLAAC(r, t, np, sn, p, want, mac, holder, es)
	}
	if want != "" {
		a, err := netip.ParseAddr(want)
		switch {
		case err != nil:
			es.Add(np+".ip", "%q is not an IP address", want)
			return a, false, nil
		case !p.Contains(a):
			es.Add(np+".ip", "%s is outside subnet %s (%s)", want, sn.Metadata.Name, sn.Spec.CIDR)
			return a, false, nil
		case api.Reserved(p, sn.Spec.Gateway, a):
			es.Add(np+".ip", "%s is the network, broadcast or gateway address of subnet %s", want, sn.Metadata.Name)
			return a, false, nil
		}
		key := ipKey(uid, a)
		if t.busy(key) {
			es.Add(np+".ip", "%s is asked for by another NIC of this VM", want)
			return a, false, nil
		}
		if !t.released[key] {
			h, held, err := holderOf(r.ctx, r.kv, key)
			if err != nil {
				return a, false, err
			}
			if held {
				// Subnets are the tenant's own: the holder is its VM.
				es.Add(np+".ip", "%s is already used in subnet %s by %s", want, sn.Metadata.Name, h)
				return a, false, nil
			}
		}
		t.take(key, holder)
		return a, true, nil
	}
	first, last := api.AddressRange(p, sn.Spec.DHCP.RangeStart, sn.Spec.DHCP.RangeEnd)
	if attempt < hintedAttempts {
		// The hints first. A retry (another write, maybe on another
		// server whose allocations these hints have not seen, took what
		// this one picked) starts at a random one of the lowest few free
		// addresses, as pickFree does, so that racing writers spread out;
		// only a write that lost hintedAttempts races reads every key
		// of the subnet, and the hints from it.
		skip := func(a netip.Addr) bool { return api.Reserved(p, sn.Spec.Gateway, a) || t.busy(ipKey(uid, a)) }
		isHeld := func(a netip.Addr) (bool, error) {
			key := ipKey(uid, a)
			if t.released[key] {
				return false, nil
			}
			_, held, err := holderOf(r.ctx, r.kv, key)
			return held, err
		}
		spread := 0
		if attempt > 0 {
			spread = mrand.IntN(min(16*attempt, 256))
		}
		a, found, ok, err := r.hints.pick(uid, first, last, spread, skip, isHeld)
		if err != nil {
			return a, false, err
		}
		if ok && found {
			t.take(ipKey(uid, a), holder)
			return a, true, nil
		}
	}
	held, err := r.heldIPs(uid)
	if err != nil {
		return netip.Addr{}, false, err
	}
	r.hints.build(uid, first, last, held)
	a, ok := pickFree(first, last, func(a netip.Addr) bool {
		key := ipKey(uid, a)
		return api.Reserved(p, sn.Spec.Gateway, a) || t.busy(key) || (held[a.String()] && !t.released[key])
	}, attempt)
	if !ok {
		es.Add(np+".subnet", "subnet %s has no free address left in %s-%s; free some, widen spec.dhcp's range or use another subnet",
			sn.Metadata.Name, first, last)
		return a, false, nil
	}
	t.take(ipKey(uid, a), holder)
	return a, true, nil
}
