package controllers

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/reconcile"
)

// Networks publishes what hosts need to carry tenant networks, from where
// the VMs are: the addresses themselves are allocated by the server's
// store hooks (package server/ipam) in the writes of the objects that
// hold them; this controller keeps the status that follows.
//
//   - Network.status.hosts, ports and routers: every NIC on the network of
//     a VM placed on a host, the hosts that carry the network, and a
//     router per host. Writing the routers is what makes the server
//     allocate (or release) each router's address on the network's
//     external network; the Routed condition says when a router has none
//     and why.
//   - Subnet.status.allocated and available, and ExternalNetwork.status
//     .allocated and available: what is held and what is left.
//   - FloatingIP.status.targetIP, host and phase: Associated once its
//     target NIC exists, has its address, runs on a host the external
//     network reaches and is on a network that routes to it (else
//     Allocated, with the Associated condition saying why). Of two
//     floating IPs pointed at one NIC, the older keeps it.
//
// A change costs what it touches: informers are indexed (a VM's networks,
// subnets and floating IPs; a network's and a floating IP's external
// network), so a VM's change recomputes only its own networks, subnets
// and floating IPs, and only a change that matters to them (placement,
// interfaces) enqueues anything. Every write is conditional on the
// version read and made only when the status differs.
//
// A network's status lists every port on it, so each write of it costs
// O(ports) to encode, store and send to every watcher: two writes of one
// network are at least PortWriteGap per port apart (100 ms at 10,000
// ports, 1 ms at 100). The changes of a burst of creates are published
// together, a little later, instead of one O(ports) write each, which
// made a run of creates on one network cost O(ports²).
type Networks struct {
	Client   *client.Client
	Recorder *client.Recorder
	// Resync is how often everything is looked at again (default 5m).
	Resync time.Duration
	Now    func() time.Time
	// Informers, when set, are shared with the other controllers.
	Informers *Informers
	// PortWriteGap is the least time between two status writes of a
	// network, per port its status lists (default 10µs).
	PortWriteGap time.Duration

	vms, nets, subnets, fips, exts, hosts *client.Informer
	ctl                                   *reconcile.Controller

	// vmNets: VM → its networks; vmSubnets: VM → its subnets; fipVM:
	// floating IP → its target VM; netExt and fipExt: network or floating
	// IP → its external network. All keys are informer keys.
	vmNets, vmSubnets, fipVM, netExt, fipExt *index

	mu sync.Mutex
	// seen is what of a VM, network or floating IP was last looked at,
	// so a change that does not matter here enqueues nothing.
	seen map[string]string
	// tried is, per network with routers that have no external address,
	// the external network's resourceVersion when the server was last
	// asked for addresses: asked again only once that moved (an address
	// was freed, the range grew).
	tried map[string]string
	// written is when each network's status was last written.
	written map[string]time.Time
}

// Run runs the controller until ctx ends.
func (c *Networks) Run(ctx context.Context) error {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Resync == 0 {
		c.Resync = 5 * time.Minute
	}
	if c.PortWriteGap == 0 {
		c.PortWriteGap = 10 * time.Microsecond
	}
	c.vms = c.Informers.informer(ctx, c.Client, "VirtualMachine")
	c.nets = c.Informers.informer(ctx, c.Client, "Network")
	c.subnets = c.Informers.informer(ctx, c.Client, "Subnet")
	c.fips = c.Informers.informer(ctx, c.Client, "FloatingIP")
	c.exts = c.Informers.informer(ctx, c.Client, "ExternalNetwork")
	c.hosts = c.Informers.informer(ctx, c.Client, "Host")
	c.vmNets, c.vmSubnets, c.fipVM, c.netExt, c.fipExt = newIndex(), newIndex(), newIndex(), newIndex(), newIndex()
	c.seen, c.tried, c.written = map[string]string{}, map[string]string{}, map[string]time.Time{}
	c.ctl = &reconcile.Controller{Name: "networks", Reconciler: reconcile.ReconcilerFunc(c.reconcile), Resync: c.Resync,
		List: func(context.Context) ([]string, error) {
			var keys []string
			for prefix, inf := range map[string]*client.Informer{"net:": c.nets, "subnet:": c.subnets, "ext:": c.exts, "fip:": c.fips} {
				for _, k := range inf.Keys() {
					keys = append(keys, prefix+k)
				}
			}
			return keys, nil
		}}
	c.vms.OnChangeUntil(ctx, c.vmChanged)
	c.nets.OnChangeUntil(ctx, c.networkChanged)
	c.subnets.OnChangeUntil(ctx, func(key string, _ api.Object) { c.ctl.Enqueue("subnet:" + key) })
	c.fips.OnChangeUntil(ctx, c.floatingIPChanged)
	c.exts.OnChangeUntil(ctx, func(key string, _ api.Object) {
		c.ctl.Enqueue("ext:" + key)
		// Routers may get addresses now (it appeared, or freed some).
		for _, n := range c.netExt.of(key) {
			c.ctl.Enqueue("net:" + n)
		}
	})
	for _, inf := range []*client.Informer{c.vms, c.nets, c.subnets, c.fips, c.exts, c.hosts} {
		if inf.WaitSynced(ctx) != nil {
			return nil
		}
	}
	return c.ctl.Run(ctx)
}

// changed records what of key matters here and reports whether it moved.
func (c *Networks) changed(key, what string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if what == "" {
		_, had := c.seen[key]
		delete(c.seen, key)
		return had
	}
	if c.seen[key] == what {
		return false
	}
	c.seen[key] = what
	return true
}

func (c *Networks) vmChanged(key string, obj api.Object) {
	var nets, subnets []string
	what := ""
	if obj != nil {
		vm := obj.(*api.VirtualMachine)
		t := vm.Metadata.Tenant
		for _, ifc := range vm.Status.Interfaces {
			nets = append(nets, t+"/"+ifc.Network)
			subnets = append(subnets, t+"/"+ifc.Subnet)
			if ifc.IPv6Subnet != "" {
				subnets = append(subnets, t+"/"+ifc.IPv6Subnet)
			}
		}
		var groups [][]string
		for _, nic := range vm.Spec.NICs {
			groups = append(groups, nic.SecurityGroups)
		}
		what = fmt.Sprintf("%s|%s|%v|%t|%v", vm.Spec.Host, api.VMPortHost(vm), vm.Status.Interfaces, vm.Metadata.DeletionTimestamp != nil, groups)
	}
	if !c.changed("vm:"+key, what) {
		return // an agent's status write: nothing here depends on it
	}
	for _, n := range union(c.vmNets.set(key, nets), nets) {
		c.ctl.Enqueue("net:" + n)
	}
	for _, s := range union(c.vmSubnets.set(key, subnets), subnets) {
		c.ctl.Enqueue("subnet:" + s)
	}
	for _, f := range c.fipVM.of(key) {
		c.ctl.Enqueue("fip:" + f)
	}
}

func (c *Networks) networkChanged(key string, obj api.Object) {
	c.ctl.Enqueue("net:" + key)
	var ext []string
	what := ""
	if obj != nil {
		n := obj.(*api.Network)
		if n.Spec.ExternalNetwork != "" {
			ext = []string{n.Spec.ExternalNetwork}
		}
		var addrs []string
		for _, r := range n.Status.Routers {
			addrs = append(addrs, r.ExternalAddress)
		}
		what = n.Spec.ExternalNetwork + "|" + strings.Join(addrs, ",")
	}
	if !c.changed("net:"+key, what) {
		return
	}
	old := c.netExt.set(key, ext)
	for _, e := range union(old, ext) {
		c.ctl.Enqueue("ext:" + e)
	}
	if !slices.Equal(old, ext) {
		// Floating IPs pointed at the network's NICs may route now, or
		// no longer.
		for _, vm := range c.vmNets.of(key) {
			for _, f := range c.fipVM.of(vm) {
				c.ctl.Enqueue("fip:" + f)
			}
		}
	}
}

func (c *Networks) floatingIPChanged(key string, obj api.Object) {
	c.ctl.Enqueue("fip:" + key)
	var target, ext []string
	what := ""
	if obj != nil {
		f := obj.(*api.FloatingIP)
		if f.Spec.Target != nil {
			target = []string{f.Metadata.Tenant + "/" + f.Spec.Target.VM}
		}
		ext = []string{f.Spec.ExternalNetwork}
		what = fmt.Sprintf("%v|%s|%s", target, f.Spec.ExternalNetwork, f.Status.Address)
	}
	if !c.changed("fip:"+key, what) {
		return
	}
	// Other floating IPs pointed at the same VM: one may take over the
	// NIC this one let go.
	for _, vm := range union(c.fipVM.set(key, target), target) {
		for _, f := range c.fipVM.of(vm) {
			c.ctl.Enqueue("fip:" + f)
		}
	}
	for _, e := range union(c.fipExt.set(key, ext), ext) {
		c.ctl.Enqueue("ext:" + e)
	}
}

func (c *Networks) reconcile(ctx context.Context, key string) (reconcile.Result, error) {
	kind, k, _ := strings.Cut(key, ":")
	switch kind {
	case "net":
		return c.reconcileNetwork(ctx, k)
	case "subnet":
		return c.reconcileSubnet(ctx, k)
	case "ext":
		return c.reconcileExternal(ctx, k)
	case "fip":
		return c.reconcileFloatingIP(ctx, k)
	}
	return reconcile.Result{}, nil
}

// writeStatus writes obj's status, conditional on the version it was read
// at; a conflict or a vanished object is not an error (the watch brings
// what changed, and it is decided again).
func (c *Networks) writeStatus(ctx context.Context, inf *client.Informer, obj api.Object) (api.Object, reconcile.Result, error) {
	out, err := c.Client.UpdateStatus(ctx, obj)
	switch {
	case api.IsNotFound(err):
		return nil, reconcile.Result{}, nil
	case api.IsConflict(err):
		return nil, reconcile.Result{RequeueAfter: 200 * time.Millisecond}, nil
	case err != nil:
		return nil, reconcile.Result{}, fmt.Errorf("writing the status of %s %s: %w", obj.GetTypeMeta().Kind, client.Key(obj), err)
	}
	inf.Observe(out)
	if n, ok := out.(*api.Network); ok {
		c.mu.Lock()
		c.written[client.Key(n)] = c.Now()
		c.mu.Unlock()
	}
	return out, reconcile.Result{}, nil
}

// networkWait is how long a network's next status write must wait: its
// last one was less than PortWriteGap per port ago.
func (c *Networks) networkWait(key string, ports int) time.Duration {
	c.mu.Lock()
	last, ok := c.written[key]
	c.mu.Unlock()
	if !ok {
		return 0
	}
	return c.PortWriteGap*time.Duration(ports) - c.Now().Sub(last)
}

func (c *Networks) reconcileNetwork(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := c.nets.Get(key)
	if !ok || obj.GetMetadata().DeletionTimestamp != nil {
		c.mu.Lock()
		delete(c.tried, key)
		delete(c.written, key)
		c.mu.Unlock()
		return reconcile.Result{}, nil
	}
	n := obj.(*api.Network)
	if wait := c.networkWait(key, len(n.Status.Ports)); wait > 0 {
		// Whatever changes meanwhile is published in one write then.
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	var ports []api.NetworkPort
	hostSet := map[string]bool{}
	for _, vk := range c.vmNets.of(key) {
		o, ok := c.vms.Get(vk)
		if !ok {
			continue
		}
		vm := o.(*api.VirtualMachine)
		if vm.Spec.Host == "" || vm.Metadata.DeletionTimestamp != nil {
			continue
		}
		for i, ifc := range vm.Status.Interfaces {
			if ifc.Network != n.Metadata.Name || ifc.MAC == "" {
				continue
			}
			// A VM moving live keeps its ports where it runs until the
			// destination has it (api.VMPortHost).
			p := api.NetworkPort{VM: vm.Metadata.Name, NIC: i, Host: api.VMPortHost(vm), MAC: ifc.MAC}
			if i < len(vm.Spec.NICs) {
				p.SecurityGroups = slices.Clone(vm.Spec.NICs[i].SecurityGroups)
			}
			p.IPs = ifc.Addresses()
			ports = append(ports, p)
			hostSet[api.VMPortHost(vm)] = true
		}
	}
	slices.SortFunc(ports, func(a, b api.NetworkPort) int {
		if c := strings.Compare(a.VM, b.VM); c != 0 {
			return c
		}
		return a.NIC - b.NIC
	})
	hosts := slices.Sorted(maps.Keys(hostSet))
	current := map[string]string{}
	for _, r := range n.Status.Routers {
		current[r.Host] = r.ExternalAddress
	}
	routers := make([]api.NetworkRouter, len(hosts))
	for i, h := range hosts {
		routers[i] = api.NetworkRouter{Host: h, ExternalAddress: current[h]}
	}
	ext, extOK := c.externalNetwork(n.Spec.ExternalNetwork)
	// Routers the server could give an address now: asked for once per
	// version of the external network.
	retry := false
	if extOK {
		for _, r := range routers {
			if r.ExternalAddress == "" && c.serves(ext, r.Host) {
				c.mu.Lock()
				retry = c.tried[key] != ext.Metadata.ResourceVersion
				c.tried[key] = ext.Metadata.ResourceVersion
				c.mu.Unlock()
				break
			}
		}
	}
	if retry || !slices.Equal(hosts, n.Status.Hosts) || !reflect.DeepEqual(ports, n.Status.Ports) || !sameHosts(routers, n.Status.Routers) {
		next := api.DeepCopy(n).(*api.Network)
		next.Status.Hosts, next.Status.Ports, next.Status.Routers = nilIfEmpty(hosts), nilIfEmpty(ports), nilIfEmpty(routers)
		out, res, err := c.writeStatus(ctx, c.nets, next)
		if out == nil {
			return res, err
		}
		n = out.(*api.Network)
	}
	return c.routedCondition(ctx, n, ext, extOK)
}

// routedCondition says whether every router of a network that names an
// external network has its address there.
func (c *Networks) routedCondition(ctx context.Context, n *api.Network, ext *api.ExternalNetwork, extOK bool) (reconcile.Result, error) {
	old := n.Status.Condition(api.ConditionRouted)
	var cond *api.Condition
	if name := n.Spec.ExternalNetwork; name != "" {
		var unserved, full []string
		for _, r := range n.Status.Routers {
			if r.ExternalAddress != "" {
				continue
			}
			if extOK && !c.serves(ext, r.Host) {
				unserved = append(unserved, r.Host)
			} else {
				full = append(full, r.Host)
			}
		}
		switch {
		case !extOK:
			cond = &api.Condition{Type: api.ConditionRouted, Status: api.ConditionFalse, Reason: "ExternalNetworkNotFound",
				Message: fmt.Sprintf("external network %q not found: the network's VMs have no way out", name)}
		case len(unserved) > 0:
			cond = &api.Condition{Type: api.ConditionRouted, Status: api.ConditionFalse, Reason: "HostNotServed",
				Message: fmt.Sprintf("external network %q does not reach host %s, where VMs of the network run", name, strings.Join(unserved, ", "))}
		case len(full) > 0:
			cond = &api.Condition{Type: api.ConditionRouted, Status: api.ConditionFalse, Reason: "NoFreeAddress",
				Message: fmt.Sprintf("external network %q has no free address for the router on host %s", name, strings.Join(full, ", "))}
		default:
			cond = &api.Condition{Type: api.ConditionRouted, Status: api.ConditionTrue, Reason: "Routed",
				Message: fmt.Sprintf("routes out through external network %q", name)}
		}
	}
	next := api.DeepCopy(n).(*api.Network)
	changed := false
	if cond == nil {
		if old == nil {
			return reconcile.Result{}, nil
		}
		next.Status.Conditions = slices.DeleteFunc(next.Status.Conditions, func(x api.Condition) bool { return x.Type == api.ConditionRouted })
		changed = true
	} else {
		cond.ObservedGeneration = n.Metadata.Generation
		changed = next.Status.SetCondition(*cond, c.Now().UTC())
	}
	if !changed {
		return reconcile.Result{}, nil
	}
	out, res, err := c.writeStatus(ctx, c.nets, next)
	if out != nil && cond != nil && cond.Status == api.ConditionFalse && (old == nil || old.Message != cond.Message) {
		c.Recorder.Eventf(ctx, out, api.EventWarning, "NotRouted", "%s", cond.Message)
	}
	return res, err
}

// externalNetwork finds an external network in the cache.
func (c *Networks) externalNetwork(name string) (*api.ExternalNetwork, bool) {
	if name == "" {
		return nil, false
	}
	o, ok := c.exts.Get(name)
	if !ok || o.GetMetadata().DeletionTimestamp != nil {
		return nil, false
	}
	return o.(*api.ExternalNetwork), true
}

// serves reports whether an external network reaches a host (the same
// rule as the server's allocation).
func (c *Networks) serves(x *api.ExternalNetwork, host string) bool {
	if x.Spec.Site == "" {
		return true
	}
	o, ok := c.hosts.Get(host)
	return ok && o.(*api.Host).Spec.Site == x.Spec.Site
}

// servesName is serves for an external network by name; one that is not
// (yet) in the cache is taken to reach every host, so a floating IP is not
// held back by a cache that is late.
func (c *Networks) servesName(name, host string) bool {
	x, ok := c.externalNetwork(name)
	return !ok || c.serves(x, host)
}

func (c *Networks) reconcileSubnet(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := c.subnets.Get(key)
	if !ok || obj.GetMetadata().DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	sn := obj.(*api.Subnet)
	p, err := netip.ParsePrefix(sn.Spec.CIDR)
	if err != nil {
		return reconcile.Result{}, nil
	}
	var held []netip.Addr
	for _, vk := range c.vmSubnets.of(key) {
		o, ok := c.vms.Get(vk)
		if !ok {
			continue
		}
		for _, ifc := range o.(*api.VirtualMachine).Status.Interfaces {
			if ifc.Network != sn.Spec.Network {
				continue
			}
			for _, h := range [][2]string{{ifc.Subnet, ifc.IP}, {ifc.IPv6Subnet, ifc.IPv6}} {
				if a, err := netip.ParseAddr(h[1]); err == nil && h[0] == sn.Metadata.Name {
					held = append(held, a)
				}
			}
		}
	}
	first, last := api.AddressRange(p, sn.Spec.DHCP.RangeStart, sn.Spec.DHCP.RangeEnd)
	allocated, available := len(held), freeAddresses(p, first, last, sn.Spec.Gateway, held)
	if sn.Status.Allocated == allocated && sn.Status.Available == available {
		return reconcile.Result{}, nil
	}
	next := api.DeepCopy(sn).(*api.Subnet)
	next.Status.Allocated, next.Status.Available = allocated, available
	_, res, err := c.writeStatus(ctx, c.subnets, next)
	return res, err
}

func isIPv4(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Unmap().Is4()
}

// freeAddresses counts the addresses from first to last that are neither the
// gateway nor held.
func freeAddresses(p netip.Prefix, first, last netip.Addr, gateway string, held []netip.Addr) int {
	n := api.RangeSize(first, last)
	in := func(a netip.Addr) bool { return !a.Less(first) && !last.Less(a) }
	if g, err := netip.ParseAddr(gateway); err == nil && in(g) {
		n--
	}
	for _, a := range held {
		if in(a) && !api.Reserved(p, gateway, a) {
			n--
		}
	}
	return max(n, 0)
}

func (c *Networks) reconcileExternal(ctx context.Context, name string) (reconcile.Result, error) {
	x, ok := c.externalNetwork(name)
	if !ok {
		return reconcile.Result{}, nil
	}
	p, err := netip.ParsePrefix(x.Spec.CIDR)
	if err != nil {
		return reconcile.Result{}, nil
	}
	var held []netip.Addr
	for _, fk := range c.fipExt.of(name) {
		if o, ok := c.fips.Get(fk); ok {
			if a, err := netip.ParseAddr(o.(*api.FloatingIP).Status.Address); err == nil {
				held = append(held, a)
			}
		}
	}
	for _, nk := range c.netExt.of(name) {
		if o, ok := c.nets.Get(nk); ok {
			for _, r := range o.(*api.Network).Status.Routers {
				if a, err := netip.ParseAddr(r.ExternalAddress); err == nil {
					held = append(held, a)
				}
			}
		}
	}
	first, last := api.AddressRange(p, x.Spec.RangeStart, x.Spec.RangeEnd)
	allocated, available := len(held), freeAddresses(p, first, last, x.Spec.Gateway, held)
	if x.Status.Allocated == allocated && x.Status.Available == available {
		return reconcile.Result{}, nil
	}
	next := api.DeepCopy(x).(*api.ExternalNetwork)
	next.Status.Allocated, next.Status.Available = allocated, available
	_, res, err := c.writeStatus(ctx, c.exts, next)
	return res, err
}

func (c *Networks) reconcileFloatingIP(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := c.fips.Get(key)
	if !ok || obj.GetMetadata().DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	f := obj.(*api.FloatingIP)
	phase, targetIP, host := api.FloatingIPAllocated, "", ""
	var cond *api.Condition
	if tg := f.Spec.Target; tg != nil {
		why, reason := "", ""
		tenant := f.Metadata.Tenant
		o, ok := c.vms.Get(tenant + "/" + tg.VM)
		var vm *api.VirtualMachine
		if ok {
			vm = o.(*api.VirtualMachine)
		}
		switch {
		case vm == nil:
			// Looked up in the floating IP's tenant only: another
			// tenant's VM of that name is never a target.
			reason, why = "TargetNotFound", fmt.Sprintf("VM %q does not exist in tenant %s", tg.VM, tenant)
		case tg.NIC >= len(vm.Status.Interfaces) || vm.Status.Interfaces[tg.NIC].IP == "":
			reason, why = "NICNotFound", fmt.Sprintf("VM %q has no nics[%d] with an address", tg.VM, tg.NIC)
		default:
			ifc := vm.Status.Interfaces[tg.NIC]
			no, ok := c.nets.Get(tenant + "/" + ifc.Network)
			switch {
			case !ok || no.(*api.Network).Spec.ExternalNetwork != f.Spec.ExternalNetwork:
				reason, why = "NotRouted", fmt.Sprintf("VM %q nics[%d] is on network %q, which does not route to external network %q",
					tg.VM, tg.NIC, ifc.Network, f.Spec.ExternalNetwork)
			case !isIPv4(ifc.IP):
				// Floating IPs are IPv4 NAT; an IPv6 NIC is reached
				// without one.
				reason, why = "NotIPv4", fmt.Sprintf("VM %q nics[%d] has the IPv6 address %s; floating IPs translate to IPv4 addresses only", tg.VM, tg.NIC, ifc.IP)
			case vm.Spec.Host == "":
				reason, why = "NotPlaced", fmt.Sprintf("VM %q is not placed on a host yet", tg.VM)
			case !c.servesName(f.Spec.ExternalNetwork, api.VMPortHost(vm)):
				reason, why = "HostNotServed", fmt.Sprintf("external network %q does not reach host %s, where VM %q runs", f.Spec.ExternalNetwork, api.VMPortHost(vm), tg.VM)
			default:
				if other := c.olderClaim(f); other != "" {
					reason, why = "TargetTaken", fmt.Sprintf("VM %q nics[%d] already has floating IP %q", tg.VM, tg.NIC, other)
				} else {
					phase, targetIP, host = api.FloatingIPAssociated, ifc.IP, api.VMPortHost(vm)
					cond = &api.Condition{Type: api.ConditionAssociated, Status: api.ConditionTrue, Reason: "Associated",
						Message: fmt.Sprintf("translated to VM %s nics[%d] (%s) on host %s", tg.VM, tg.NIC, ifc.IP, host)}
				}
			}
		}
		if cond == nil {
			cond = &api.Condition{Type: api.ConditionAssociated, Status: api.ConditionFalse, Reason: reason, Message: why}
		}
		cond.ObservedGeneration = f.Metadata.Generation
	}
	next := api.DeepCopy(f).(*api.FloatingIP)
	changed := next.Status.Phase != phase || next.Status.TargetIP != targetIP || next.Status.Host != host
	next.Status.Phase, next.Status.TargetIP, next.Status.Host = phase, targetIP, host
	old := f.Status.Condition(api.ConditionAssociated)
	if cond != nil {
		changed = next.Status.SetCondition(*cond, c.Now().UTC()) || changed
	} else if old != nil {
		next.Status.Conditions = slices.DeleteFunc(next.Status.Conditions, func(x api.Condition) bool { return x.Type == api.ConditionAssociated })
		changed = true
	}
	if !changed {
		return reconcile.Result{}, nil
	}
	out, res, err := c.writeStatus(ctx, c.fips, next)
	if out != nil && cond != nil && (old == nil || old.Message != cond.Message) {
		if cond.Status == api.ConditionTrue {
			c.Recorder.Eventf(ctx, out, api.EventNormal, "Associated", "%s", cond.Message)
		} else {
			c.Recorder.Eventf(ctx, out, api.EventWarning, "NotAssociated", "%s", cond.Message)
		}
	}
	return res, err
}

// olderClaim names an older floating IP of the tenant pointed at the same
// NIC, if there is one: the NIC is that one's.
func (c *Networks) olderClaim(f *api.FloatingIP) string {
	older := func(a, b *api.FloatingIP) bool {
		ta, tb := a.Metadata.CreationTimestamp, b.Metadata.CreationTimestamp
		if ta != nil && tb != nil && !ta.Equal(*tb) {
			return ta.Before(*tb)
		}
		return a.Metadata.Name < b.Metadata.Name
	}
	for _, k := range c.fipVM.of(f.Metadata.Tenant + "/" + f.Spec.Target.VM) {
		o, ok := c.fips.Get(k)
		if !ok {
			continue
		}
		other := o.(*api.FloatingIP)
		if other.Metadata.Name == f.Metadata.Name || other.Metadata.Tenant != f.Metadata.Tenant ||
			other.Spec.Target == nil || *other.Spec.Target != *f.Spec.Target || other.Metadata.DeletionTimestamp != nil {
			continue
		}
		if older(other, f) {
			return other.Metadata.Name
		}
	}
	return ""
}

func sameHosts(a, b []api.NetworkRouter) bool {
	return slices.EqualFunc(a, b, func(x, y api.NetworkRouter) bool { return x.Host == y.Host })
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

// union returns the distinct keys of a and b.
func union(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// index relates objects to the keys of others they name, from the last
// version of each object seen, both ways: so a change finds what it
// affects without a scan.
type index struct {
	mu  sync.Mutex
	fwd map[string][]string
	rev map[string]map[string]bool
}

func newIndex() *index { return &index{fwd: map[string][]string{}, rev: map[string]map[string]bool{}} }

// set records the keys obj names now (none: it is gone) and returns the
// ones it named before.
func (x *index) set(obj string, keys []string) []string {
	keys = union(keys, nil)
	x.mu.Lock()
	defer x.mu.Unlock()
	old := x.fwd[obj]
	for _, k := range old {
		if m := x.rev[k]; m != nil {
			delete(m, obj)
			if len(m) == 0 {
				delete(x.rev, k)
			}
		}
	}
	if len(keys) == 0 {
		delete(x.fwd, obj)
	} else {
		x.fwd[obj] = keys
	}
	for _, k := range keys {
		if x.rev[k] == nil {
			x.rev[k] = map[string]bool{}
		}
		x.rev[k][obj] = true
	}
	return old
}

// of returns the objects that name key, sorted.
func (x *index) of(key string) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Sorted(maps.Keys(x.rev[key]))
}
