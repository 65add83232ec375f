package dataplane

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"hearth.dev/hearth/netns"
)

// convergeNetwork makes one network on the host what n says and returns
// its model. k is what the Plane last made of it (nil if nothing); with
// read, or without k, the host is read first, otherwise k's model stands
// for it. A network that did not exist at all and fails half-way is
// removed again.
func (p *Linux) convergeNetwork(n *Network, k *applied, read bool, links map[string]netlink.Link) (*netModel, error) {
	extMTU := 0
	if x := n.External; x != nil {
		l, err := p.nl.LinkByName(x.Device)
		if err != nil {
			return nil, fmt.Errorf("external.device: no link %s on this host: %w", x.Device, err)
		}
		if l.Type() != "bridge" {
			return nil, fmt.Errorf("external.device: %s is a %s; the router's external leg plugs into a bridge", x.Device, l.Type())
		}
		extMTU = l.Attrs().MTU
		p.ifnames[l.Attrs().Index] = x.Device
	}
	want := p.model(n, Underlay{Device: p.ul.device, Address: p.ul.address}, p.ul.index, extMTU)
	var prev *netModel
	if k != nil {
		prev = k.model
	}
	var have *netModel
	fresh := false
	if read || prev == nil {
		var err error
		if have, err = p.observe(n.VNI, want, prev, links); err != nil {
			return nil, err
		}
		fresh = prev == nil && len(have.links) == 0 && !have.router.exists && have.l2Rules == nil
	} else {
		have = prev.clone()
	}
	c := &converger{p: p, n: n, vni: n.VNI, want: want, have: have}
	err := c.run()
	if err != nil {
		if fresh {
			ports := []string{}
			for _, port := range n.Ports {
				ports = append(ports, port.Name)
			}
			if uerr := p.teardown(map[uint32][]string{n.VNI: ports})[n.VNI]; uerr != nil {
				err = fmt.Errorf("%w (and undoing: %v)", err, uerr)
			}
		}
		return nil, err
	}
	// What is now there, with the ifindexes a later change needs.
	return c.have, nil
}

// converger makes one network's have into its want, step by step, each
// step keeping have true to what it did.
type converger struct {
	p          *Linux
	n          *Network
	vni        uint32
	want, have *netModel
	r          *routerNS
	garps      []netip.Addr
}

func (c *converger) run() error {
	steps := []func() error{
		c.routerNamespace,
		c.removedLinks,
		c.links,
		c.fdb,
		c.gatewayFDB,
		c.sysctls,
		c.tables,
		c.linksUp,
		c.routerAddrs,
		c.routerNeigh,
		c.routerRoutes,
		c.routerProxy,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	for _, a := range c.garps {
		c.p.sendGARP(c.r.ns, externalLink, a)
	}
	return nil
}

func (c *converger) logf(format string, args ...any) {
	c.p.logf("dataplane: network %s (VNI %d): "+format, append([]any{c.n.Name, c.vni}, args...)...)
}

// routerNamespace opens the router namespace, making it if it is missing.
func (c *converger) routerNamespace() error {
	r, err := c.p.router(c.vni)
	if err != nil {
		return err
	}
	if r != nil && !c.have.router.exists {
		// Known as missing, yet there: read it.
		if c.have.router, err = c.p.observeRouter(r, &c.want.router); err != nil {
			return err
		}
	}
	if r == nil {
		if r, err = c.p.createRouter(c.vni); err != nil {
			return err
		}
		c.have.router = routerModel{
			exists:  true,
			links:   map[string]linkModel{"lo": {kind: "device"}},
			addrs:   map[addrKey]bool{},
			routes:  map[string]string{},
			neigh:   map[addrKey]string{},
			sysctls: map[string]string{},
		}
	}
	c.r = r
	return nil
}

// removedLinks deletes the links the network no longer has (ports, the
// external leg).
func (c *converger) removedLinks() error {
	for _, name := range slices.Sorted(maps.Keys(c.have.links)) {
		if _, ok := c.want.links[name]; ok {
			continue
		}
		if err := c.deleteLink(name); err != nil {
			return err
		}
	}
	return nil
}

func (c *converger) deleteLink(name string) error {
	h := c.have.links[name]
	err := c.p.nl.LinkDel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name, Index: h.index}})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("deleting link %s: %w", name, err)
	}
	c.logf("deleted link %s", name)
	delete(c.have.links, name)
	delete(c.have.ipv6Off, name)
	c.forget(name)
	return nil
}

// forget drops from have what goes away with a link.
func (c *converger) forget(name string) {
	switch name {
	case bridgeName(c.vni):
		for n, l := range c.have.links {
			if l.master == name {
				l.master = ""
				c.have.links[n] = l
			}
		}
		c.have.gwFDB = false
	case vxlanName(c.vni):
		c.have.fdb = map[fdbEntry]bool{}
	case routerLink(c.vni):
		c.have.gwFDB = false
		c.forgetRouterLink(internalLink)
	case externalLeg(c.vni):
		c.forgetRouterLink(externalLink)
	}
}

func (c *converger) forgetRouterLink(link string) {
	r := &c.have.router
	delete(r.links, link)
	for k := range r.addrs {
		if k.link == link {
			delete(r.addrs, k)
		}
	}
	for k := range r.neigh {
		if k.link == link {
			delete(r.neigh, k)
		}
	}
	for k, v := range r.routes {
		if strings.HasSuffix(v, " dev "+link) {
			delete(r.routes, k)
		}
	}
	for k := range r.sysctls {
		if strings.Contains(k, "/"+link+"/") {
			delete(r.sysctls, k)
		}
	}
	if link == externalLink {
		r.proxy = nil
	}
}

// links makes each host link and sets what may change in place (MTU,
// master, MAC); links come up later, once IPv6 is off on them.
func (c *converger) links() error {
	for _, name := range c.want.linkNames(c.vni) {
		w := c.want.links[name]
		h, ok := c.have.links[name]
		if ok && c.mustRecreate(name, w, h) {
			if err := c.deleteLink(name); err != nil {
				return err
			}
			ok = false
		}
		if !ok {
			if err := c.createLink(name, w); err != nil {
				return err
			}
			h = c.have.links[name]
		}
		dev := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name, Index: h.index}}
		if w.mtu != 0 && h.mtu != w.mtu {
			if err := c.p.nl.LinkSetMTU(dev, w.mtu); err != nil {
				return fmt.Errorf("setting the MTU of %s to %d: %w", name, w.mtu, err)
			}
			c.logf("set MTU of %s to %d", name, w.mtu)
			h.mtu = w.mtu
		}
		if w.mac != "" && h.mac != w.mac {
			mac, _ := net.ParseMAC(w.mac)
			if err := c.p.nl.LinkSetHardwareAddr(dev, mac); err != nil {
				return fmt.Errorf("setting the MAC of %s: %w", name, err)
			}
			c.logf("set MAC of %s to %s", name, w.mac)
			h.mac = w.mac
		}
		if h.master != w.master {
			var err error
			if w.master == "" {
				err = c.p.nl.LinkSetNoMaster(dev)
			} else {
				var idx int
				if idx, err = c.indexOf(w.master); err == nil {
					err = c.p.nl.LinkSetMasterByIndex(dev, idx)
				}
			}
			if err != nil {
				return fmt.Errorf("plugging %s into %s: %w", name, w.master, err)
			}
			c.logf("plugged %s into %s", name, w.master)
			h.master = w.master
		}
		c.have.links[name] = h
	}
	return nil
}

// mustRecreate tells a link that cannot be fixed in place: of the wrong
// kind, a VXLAN device with other parameters, a router leg whose other
// end is not in the router namespace.
func (c *converger) mustRecreate(name string, w, h linkModel) bool {
	if w.kind != "" && h.kind != w.kind {
		return true
	}
	if w.kind == "vxlan" && h.vxlan != w.vxlan {
		return true
	}
	var peer string
	switch name {
	case routerLink(c.vni):
		peer = internalLink
	case externalLeg(c.vni):
		peer = externalLink
	default:
		return false
	}
	rl, ok := c.have.router.links[peer]
	return !ok || rl.peerIndex != h.index || h.peerIndex != rl.index
}

func (c *converger) indexOf(name string) (int, error) {
	if h, ok := c.have.links[name]; ok && h.index != 0 {
		return h.index, nil
	}
	l, err := c.p.nl.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("link %s: %w", name, err)
	}
	return l.Attrs().Index, nil
}

func (c *converger) createLink(name string, w linkModel) error {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.MTU = w.mtu
	if w.master != "" {
		idx, err := c.indexOf(w.master)
		if err != nil {
			return fmt.Errorf("creating %s: %w", name, err)
		}
		attrs.MasterIndex = idx
	}
	made := linkModel{kind: w.kind, mtu: w.mtu, master: w.master, mac: w.mac}
	var link netlink.Link
	switch name {
	case bridgeName(c.vni):
		attrs.HardwareAddr, _ = net.ParseMAC(w.mac)
		link = &netlink.Bridge{LinkAttrs: attrs}
	case vxlanName(c.vni):
		link = &netlink.Vxlan{
			LinkAttrs:    attrs,
			VxlanId:      w.vxlan.vni,
			VtepDevIndex: w.vxlan.dev,
			SrcAddr:      net.ParseIP(w.vxlan.local),
			Port:         w.vxlan.port,
			Learning:     w.vxlan.learning,
		}
		made.vxlan = w.vxlan
	case routerLink(c.vni), externalLeg(c.vni):
		peer, rw := internalLink, c.want.router.links[internalLink]
		if name == externalLeg(c.vni) {
			peer, rw = externalLink, c.want.router.links[externalLink]
		}
		// A stale end left in the router (its pair half-deleted) would
		// take the name.
		if l, err := c.r.nl.LinkByName(peer); err == nil {
			c.r.nl.LinkDel(l)
		}
		mac, _ := net.ParseMAC(rw.mac)
		link = &netlink.Veth{
			LinkAttrs:        attrs,
			PeerName:         peer,
			PeerHardwareAddr: mac,
			PeerNamespace:    netlink.NsFd(c.r.ns),
			PeerTxQLen:       -1,
		}
	default:
		port := c.port(name)
		if port == nil {
			return fmt.Errorf("creating %s: no such port", name)
		}
		if port.Veth == nil {
			return c.createTap(name, attrs.MasterIndex, w)
		}
		peerNS, err := netns.OpenPath(port.Veth.Netns)
		if err != nil {
			return fmt.Errorf("port %s: veth.netns: %w", name, err)
		}
		defer peerNS.Close()
		link = &netlink.Veth{
			LinkAttrs:        attrs,
			PeerName:         port.Veth.Name,
			PeerHardwareAddr: port.MAC,
			PeerNamespace:    netlink.NsFd(peerNS),
			PeerTxQLen:       -1,
		}
	}
	if err := c.p.nl.LinkAdd(link); err != nil {
		return fmt.Errorf("creating %s %s: %w", w.kind, name, err)
	}
	l, err := c.p.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("reading %s back: %w", name, err)
	}
	made.index, made.peerIndex = l.Attrs().Index, l.Attrs().ParentIndex
	made.mac = l.Attrs().HardwareAddr.String()
	c.p.ifnames[made.index] = name
	c.have.links[name] = made
	delete(c.have.ipv6Off, name)
	c.forget(name)
	if peer, ok := map[string]string{routerLink(c.vni): internalLink, externalLeg(c.vni): externalLink}[name]; ok {
		// The other end: record the pairing so it is not taken for stale.
		pl, err := c.r.nl.LinkByName(peer)
		if err != nil {
			return fmt.Errorf("reading %s back in %s: %w", peer, c.r.name, err)
		}
		rl := c.have.router.links[peer]
		rl.kind, rl.index, rl.peerIndex, rl.mtu = "veth", pl.Attrs().Index, pl.Attrs().ParentIndex, pl.Attrs().MTU
		rl.mac, rl.up = pl.Attrs().HardwareAddr.String(), pl.Attrs().Flags&net.FlagUp != 0
		c.have.router.links[peer] = rl
		c.r.ifnames[rl.index] = peer
	}
	c.logf("created %s %s", w.kind, name)
	return nil
}

// createTap makes a persistent tap. The ioctl that makes it acts in the
// network namespace of the thread that opens /dev/net/tun, so it runs
// on a thread in the host namespace.
func (c *converger) createTap(name string, master int, w linkModel) error {
	err := netns.Do(c.p.host, func() error {
		return c.p.nl.LinkAdd(&netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: name, TxQLen: -1},
			Mode:      netlink.TUNTAP_MODE_TAP,
			// QEMU sets its own flags when it attaches; only
			// multi-queue must match what it asks for (one queue).
			Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
		})
	})
	if err != nil {
		return fmt.Errorf("creating tap %s: %w", name, err)
	}
	l, err := c.p.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("reading %s back: %w", name, err)
	}
	c.p.ifnames[l.Attrs().Index] = name
	c.have.links[name] = linkModel{kind: "tuntap", mtu: l.Attrs().MTU, index: l.Attrs().Index, mac: l.Attrs().HardwareAddr.String()}
	delete(c.have.ipv6Off, name)
	c.logf("created tap %s", name)
	return nil
}

func (c *converger) port(name string) *Port {
	for i := range c.n.Ports {
		if c.n.Ports[i].Name == name {
			return &c.n.Ports[i]
		}
	}
	return nil
}

// fdb programs the VXLAN device's forwarding table: an all-zero entry per
// peer (flooding) and one per remote NIC.
func (c *converger) fdb() error {
	vx := c.have.links[vxlanName(c.vni)].index
	neigh := func(e fdbEntry) *netlink.Neigh {
		mac, _ := net.ParseMAC(e.mac)
		return &netlink.Neigh{
			LinkIndex: vx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT | netlink.NUD_NOARP, IP: e.dst.AsSlice(), HardwareAddr: mac,
		}
	}
	for _, e := range sortedFDB(c.have.fdb) {
		if c.want.fdb[e] {
			continue
		}
		if err := c.p.nl.NeighDel(neigh(e)); err != nil && !isNotFound(err) {
			return fmt.Errorf("removing FDB entry %s dst %s: %w", e.mac, e.dst, err)
		}
		c.logf("removed FDB entry %s dst %s", e.mac, e.dst)
		delete(c.have.fdb, e)
	}
	for _, e := range sortedFDB(c.want.fdb) {
		if c.have.fdb[e] {
			continue
		}
		var err error
		if e.mac == zeroMAC {
			// One all-zero entry per peer: append, not replace.
			err = c.p.nl.NeighAppend(neigh(e))
		} else {
			err = c.p.nl.NeighSet(neigh(e))
		}
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding FDB entry %s dst %s: %w", e.mac, e.dst, err)
		}
		c.logf("added FDB entry %s dst %s", e.mac, e.dst)
		c.have.fdb[e] = true
	}
	return nil
}

func sortedFDB(m map[fdbEntry]bool) []fdbEntry {
	out := make([]fdbEntry, 0, len(m))
	for e := range m {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b fdbEntry) int {
		if a.mac != b.mac {
			if a.mac < b.mac {
				return -1
			}
			return 1
		}
		return a.dst.Compare(b.dst)
	})
	return out
}

// gatewayFDB pins the gateway MAC to the router's port, static and
// sticky: a VM's frame to its gateway is never flooded (so never reaches
// another host's router), and no frame claiming the gateway MAC moves it.
func (c *converger) gatewayFDB() error {
	if !c.want.gwFDB || c.have.gwFDB {
		return nil
	}
	err := c.p.nl.NeighSet(&netlink.Neigh{
		LinkIndex: c.have.links[routerLink(c.vni)].index, Family: unix.AF_BRIDGE,
		Flags: netlink.NTF_MASTER | netlink.NTF_STICKY, State: netlink.NUD_NOARP,
		HardwareAddr: GatewayMAC(c.vni),
	})
	if err != nil {
		return fmt.Errorf("pinning the gateway MAC to %s: %w", routerLink(c.vni), err)
	}
	c.logf("pinned gateway MAC %s to %s", GatewayMAC(c.vni), routerLink(c.vni))
	c.have.gwFDB = true
	return nil
}

// sysctls turns IPv6 off on the host links (they carry tenant frames
// and must not give the host an address among them) and sets the
// router's.
func (c *converger) sysctls() error {
	var off []string
	for _, name := range slices.Sorted(maps.Keys(c.want.ipv6Off)) {
		if !c.have.ipv6Off[name] {
			off = append(off, name)
		}
	}
	if len(off) > 0 {
		err := netns.Do(c.p.host, func() error {
			for _, name := range off {
				if err := netns.WriteSysctl("net/ipv6/conf/"+name+"/disable_ipv6", "1"); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, name := range off {
			c.have.ipv6Off[name] = true
		}
	}
	var set []string
	for _, k := range slices.Sorted(maps.Keys(c.want.router.sysctls)) {
		if c.have.router.sysctls[k] != c.want.router.sysctls[k] {
			set = append(set, k)
		}
	}
	if len(set) == 0 {
		return nil
	}
	err := netns.Do(c.r.ns, func() error {
		for _, k := range set {
			if err := netns.WriteSysctl(k, c.want.router.sysctls[k]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("router %s: %w", c.r.name, err)
	}
	for _, k := range set {
		c.have.router.sysctls[k] = c.want.router.sysctls[k]
	}
	c.logf("set %d sysctls in %s", len(set), c.r.name)
	return nil
}

// tables writes the network's nftables tables where they differ. They
// go in before links come up, so no packet passes unfiltered.
func (c *converger) tables() error {
	if !sameIDs(c.want.router.rules, c.have.router.rules) {
		var err error
		if c.want.router.rules == nil {
			err = deleteTable(c.r.nft, routerTable, nftables.TableFamilyINet)
		} else {
			err = writeTable(c.r.nft, routerRules(c.n))
		}
		if err != nil {
			return fmt.Errorf("router %s: %w", c.r.name, err)
		}
		c.logf("wrote nftables table %s in %s", routerTable, c.r.name)
		c.have.router.rules = c.want.router.rules
	}
	if !sameIDs(c.want.l2Rules, c.have.l2Rules) {
		if err := writeL2(c.p.nft, c.n, c.p.ul.address, c.have.l2Rules); err != nil {
			return err
		}
		c.logf("wrote chains %s, %s and %d port chains of nftables table %s", outChain(c.vni), inChain(c.vni), len(c.n.Ports), hostTable)
		c.have.l2Rules = c.want.l2Rules
	}
	return nil
}

func sameIDs(a, b []string) bool {
	return (a == nil) == (b == nil) && slices.Equal(a, b)
}

// linksUp brings up the host links, then the router's.
func (c *converger) linksUp() error {
	for _, name := range c.want.linkNames(c.vni) {
		h := c.have.links[name]
		if !c.want.links[name].up || h.up {
			continue
		}
		if err := c.p.nl.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name, Index: h.index}}); err != nil {
			return fmt.Errorf("bringing %s up: %w", name, err)
		}
		c.logf("brought %s up", name)
		h.up = true
		c.have.links[name] = h
	}
	for _, name := range []string{"lo", internalLink, externalLink} {
		w, ok := c.want.router.links[name]
		if !ok {
			continue
		}
		h := c.have.router.links[name]
		dev := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name, Index: h.index}}
		if w.mtu != 0 && h.mtu != w.mtu {
			if err := c.r.nl.LinkSetMTU(dev, w.mtu); err != nil {
				return fmt.Errorf("router %s: setting the MTU of %s: %w", c.r.name, name, err)
			}
			h.mtu = w.mtu
		}
		if w.mac != "" && h.mac != w.mac {
			mac, _ := net.ParseMAC(w.mac)
			if err := c.r.nl.LinkSetHardwareAddr(dev, mac); err != nil {
				return fmt.Errorf("router %s: setting the MAC of %s: %w", c.r.name, name, err)
			}
			h.mac = w.mac
		}
		if w.up && !h.up {
			if err := c.r.nl.LinkSetUp(dev); err != nil {
				return fmt.Errorf("router %s: bringing %s up: %w", c.r.name, name, err)
			}
			c.logf("brought %s up in %s", name, c.r.name)
			h.up = true
		}
		c.have.router.links[name] = h
	}
	return nil
}

// routerAddrs puts the gateways on the internal leg and the external
// address and floating IPs on the external one.
func (c *converger) routerAddrs() error {
	for _, k := range sortedAddrKeys(c.have.router.addrs) {
		if c.want.router.addrs[k] {
			continue
		}
		pfx := netip.MustParsePrefix(k.prefix)
		err := c.r.nl.AddrDel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: k.link}}, &netlink.Addr{IPNet: ipNet(pfx)})
		if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !isNotFound(err) {
			return fmt.Errorf("router %s: removing %s from %s: %w", c.r.name, pfx, k.link, err)
		}
		c.logf("removed %s from %s in %s", pfx, k.link, c.r.name)
		delete(c.have.router.addrs, k)
	}
	for _, k := range sortedAddrKeys(c.want.router.addrs) {
		if c.have.router.addrs[k] {
			continue
		}
		pfx := netip.MustParsePrefix(k.prefix)
		a := &netlink.Addr{IPNet: ipNet(pfx)}
		if pfx.Addr().Is6() {
			// Every host's router holds the same gateway: duplicate
			// address detection would only delay it.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := c.r.nl.AddrReplace(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: k.link}}, a); err != nil {
			return fmt.Errorf("router %s: adding %s to %s: %w", c.r.name, pfx, k.link, err)
		}
		c.logf("added %s to %s in %s", pfx, k.link, c.r.name)
		c.have.router.addrs[k] = true
		if k.link == externalLink {
			c.garps = append(c.garps, pfx.Addr())
		}
	}
	return nil
}

func sortedAddrKeys[V any](m map[addrKey]V) []addrKey {
	out := make([]addrKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b addrKey) int {
		if a.link != b.link {
			if a.link < b.link {
				return -1
			}
			return 1
		}
		if a.prefix < b.prefix {
			return -1
		}
		if a.prefix > b.prefix {
			return 1
		}
		return 0
	})
	return out
}

// routerNeigh gives the router every NIC's MAC, so it never has to ask.
func (c *converger) routerNeigh() error {
	in := c.have.router.links[internalLink].index
	neigh := func(k addrKey, mac string) *netlink.Neigh {
		a := netip.MustParseAddr(k.prefix)
		fam := netlink.FAMILY_V4
		if a.Is6() {
			fam = netlink.FAMILY_V6
		}
		hw, _ := net.ParseMAC(mac)
		return &netlink.Neigh{LinkIndex: in, Family: fam, State: netlink.NUD_PERMANENT, IP: a.AsSlice(), HardwareAddr: hw}
	}
	for _, k := range sortedAddrKeys(c.have.router.neigh) {
		if _, ok := c.want.router.neigh[k]; ok {
			continue
		}
		if err := c.r.nl.NeighDel(neigh(k, c.have.router.neigh[k])); err != nil && !isNotFound(err) {
			return fmt.Errorf("router %s: removing neighbour %s: %w", c.r.name, k.prefix, err)
		}
		c.logf("removed neighbour %s in %s", k.prefix, c.r.name)
		delete(c.have.router.neigh, k)
	}
	for _, k := range sortedAddrKeys(c.want.router.neigh) {
		mac := c.want.router.neigh[k]
		if c.have.router.neigh[k] == mac {
			continue
		}
		if err := c.r.nl.NeighSet(neigh(k, mac)); err != nil {
			return fmt.Errorf("router %s: setting neighbour %s %s: %w", c.r.name, k.prefix, mac, err)
		}
		c.logf("set neighbour %s %s in %s", k.prefix, mac, c.r.name)
		c.have.router.neigh[k] = mac
	}
	return nil
}

// routerRoutes sets the default route out of the external leg.
func (c *converger) routerRoutes() error {
	route := func(key string) *netlink.Route {
		dst := netip.MustParsePrefix(key)
		return &netlink.Route{Dst: ipNet(dst), Table: unix.RT_TABLE_MAIN}
	}
	for _, k := range slices.Sorted(maps.Keys(c.have.router.routes)) {
		if _, ok := c.want.router.routes[k]; ok {
			continue
		}
		// ENOENT: an IPv6 route goes with the leg's IPv6, turned off
		// before.
		if err := c.r.nl.RouteDel(route(k)); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("router %s: removing route %s: %w", c.r.name, k, err)
		}
		c.logf("removed route %s in %s", k, c.r.name)
		delete(c.have.router.routes, k)
	}
	for _, k := range slices.Sorted(maps.Keys(c.want.router.routes)) {
		v := c.want.router.routes[k]
		if c.have.router.routes[k] == v {
			continue
		}
		rt := route(k)
		rt.Gw = c.n.External.Gateway.AsSlice()
		if x6 := c.n.External.IPv6; x6 != nil && netip.MustParsePrefix(k).Addr().Is6() {
			rt.Gw = x6.Gateway.AsSlice()
		}
		rt.LinkIndex = c.have.router.links[externalLink].index
		if err := c.r.nl.RouteReplace(rt); err != nil {
			return fmt.Errorf("router %s: route %s %s: %w", c.r.name, k, v, err)
		}
		c.logf("set route %s %s in %s", k, v, c.r.name)
		c.have.router.routes[k] = v
	}
	return nil
}

// routerProxy makes the external leg answer neighbour solicitations for
// the routed ports' IPv6 addresses on this host, and announces each new
// one (an unsolicited neighbour advertisement), so a VM that came here
// from another host is reached here at once.
func (c *converger) routerProxy() error {
	ext := c.have.router.links[externalLink].index
	entry := func(a string) *netlink.Neigh {
		return &netlink.Neigh{LinkIndex: ext, Family: netlink.FAMILY_V6, Flags: netlink.NTF_PROXY, IP: netip.MustParseAddr(a).AsSlice()}
	}
	for _, a := range slices.Sorted(maps.Keys(c.have.router.proxy)) {
		if c.want.router.proxy[a] {
			continue
		}
		if err := c.r.nl.NeighDel(entry(a)); err != nil && !isNotFound(err) {
			return fmt.Errorf("router %s: no longer answering for %s: %w", c.r.name, a, err)
		}
		c.logf("stopped answering for %s on %s in %s", a, externalLink, c.r.name)
		delete(c.have.router.proxy, a)
	}
	for _, a := range slices.Sorted(maps.Keys(c.want.router.proxy)) {
		if c.have.router.proxy[a] {
			continue
		}
		if err := c.r.nl.NeighSet(entry(a)); err != nil {
			return fmt.Errorf("router %s: answering for %s on %s: %w", c.r.name, a, externalLink, err)
		}
		c.logf("answering for %s on %s in %s", a, externalLink, c.r.name)
		if c.have.router.proxy == nil {
			c.have.router.proxy = map[string]bool{}
		}
		c.have.router.proxy[a] = true
		c.garps = append(c.garps, netip.MustParseAddr(a))
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// clone deep-copies a model, which converging then changes.
func (m *netModel) clone() *netModel {
	c := *m
	c.links = maps.Clone(m.links)
	c.fdb = maps.Clone(m.fdb)
	c.l2Rules = slices.Clone(m.l2Rules)
	c.ipv6Off = maps.Clone(m.ipv6Off)
	c.router.links = maps.Clone(m.router.links)
	c.router.addrs = maps.Clone(m.router.addrs)
	c.router.routes = maps.Clone(m.router.routes)
	c.router.neigh = maps.Clone(m.router.neigh)
	c.router.sysctls = maps.Clone(m.router.sysctls)
	c.router.rules = slices.Clone(m.router.rules)
	c.router.proxy = maps.Clone(m.router.proxy)
	return &c
}
