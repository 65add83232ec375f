package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"hearth.dev/hearth/netns"
)

// observe reads from the kernel what the network has on the host, for
// the links of want and of prev (what it had last time, whose leftovers
// must go). links, when not nil, is a listing of the host's links made
// in this Apply.
func (p *Linux) observe(vni uint32, want, prev *netModel, links map[string]netlink.Link) (*netModel, error) {
	m := &netModel{
		links:   map[string]linkModel{},
		fdb:     map[fdbEntry]bool{},
		ipv6Off: map[string]bool{},
	}
	names := map[string]bool{}
	for name := range want.links {
		names[name] = true
	}
	if prev != nil {
		for name := range prev.links {
			names[name] = true
		}
	}
	for name := range names {
		var l netlink.Link
		if links != nil {
			l = links[name]
		} else {
			var err error
			l, err = p.nl.LinkByName(name)
			if err != nil && !isNotFound(err) {
				return nil, fmt.Errorf("reading link %s: %w", name, err)
			}
		}
		if l == nil {
			continue
		}
		p.ifnames[l.Attrs().Index] = name
		lm, err := p.linkModelOf(l, p.nameOfHostIndex)
		if err != nil {
			return nil, err
		}
		m.links[name] = lm
	}
	err := netns.Do(p.host, func() error {
		for name := range m.links {
			v, err := netns.ReadSysctl("net/ipv6/conf/" + name + "/disable_ipv6")
			if err != nil {
				return err
			}
			m.ipv6Off[name] = v == "1"
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if vx, ok := m.links[vxlanName(vni)]; ok {
		entries, err := p.fdbOf(vx.index)
		if err != nil {
			return nil, fmt.Errorf("reading the FDB of %s: %w", vxlanName(vni), err)
		}
		for _, e := range entries {
			if e.LinkIndex != vx.index || e.Flags&netlink.NTF_SELF == 0 || e.IP == nil {
				continue
			}
			dst, ok := netip.AddrFromSlice(e.IP)
			if !ok {
				continue
			}
			m.fdb[fdbEntry{mac: e.HardwareAddr.String(), dst: dst.Unmap()}] = true
		}
	}
	if rl, ok := m.links[routerLink(vni)]; ok {
		entries, err := p.fdbOf(rl.index)
		if err != nil {
			return nil, fmt.Errorf("reading the FDB of %s: %w", routerLink(vni), err)
		}
		gw := GatewayMAC(vni).String()
		for _, e := range entries {
			if e.LinkIndex == rl.index && e.HardwareAddr.String() == gw && gatewayPinned(e.State, e.Flags) {
				m.gwFDB = true
			}
		}
	}
	maps, err := readMaps(p.nft)
	if err != nil {
		return nil, err
	}
	if m.l2Rules, err = readL2(p.nft, vni, maps); err != nil {
		return nil, err
	}
	r, err := p.router(vni)
	if err != nil {
		return nil, err
	}
	if r != nil {
		if m.router, err = p.observeRouter(r, &want.router); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// gatewayPinned tells a bridge FDB entry made static and sticky (what
// the Plane makes) from one the bridge learned.
func gatewayPinned(state, flags int) bool {
	return state&netlink.NUD_NOARP != 0 && flags&netlink.NTF_MASTER != 0 && flags&netlink.NTF_STICKY != 0
}

func (p *Linux) nameOfHostIndex(index int) (string, error) {
	if name, ok := p.ifnames[index]; ok {
		return name, nil
	}
	l, err := p.nl.LinkByIndex(index)
	if err != nil {
		return "", fmt.Errorf("link %d: %w", index, err)
	}
	p.ifnames[index] = l.Attrs().Name
	return l.Attrs().Name, nil
}

func (p *Linux) linkModelOf(l netlink.Link, nameOf func(int) (string, error)) (linkModel, error) {
	a := l.Attrs()
	lm := linkModel{
		kind:      l.Type(),
		mtu:       a.MTU,
		up:        a.Flags&net.FlagUp != 0,
		mac:       a.HardwareAddr.String(),
		index:     a.Index,
		peerIndex: a.ParentIndex,
	}
	if a.MasterIndex != 0 {
		name, err := nameOf(a.MasterIndex)
		if err != nil {
			return lm, err
		}
		lm.master = name
	}
	if vx, ok := l.(*netlink.Vxlan); ok {
		local := ""
		if a, ok := netip.AddrFromSlice(vx.SrcAddr); ok {
			local = a.Unmap().String()
		}
		lm.vxlan = vxlanModel{vni: vx.VxlanId, port: vx.Port, dev: vx.VtepDevIndex, local: local, learning: vx.Learning}
	}
	return lm, nil
}

// observeRouter reads a router namespace; want says which sysctls to
// read.
func (p *Linux) observeRouter(r *routerNS, want *routerModel) (routerModel, error) {
	m := routerModel{
		exists:  true,
		links:   map[string]linkModel{},
		addrs:   map[addrKey]bool{},
		routes:  map[string]string{},
		neigh:   map[addrKey]string{},
		sysctls: map[string]string{},
	}
	links, err := r.nl.LinkList()
	if err != nil {
		return m, fmt.Errorf("router %s: listing links: %w", r.name, err)
	}
	r.ifnames = map[int]string{}
	for _, l := range links {
		r.ifnames[l.Attrs().Index] = l.Attrs().Name
	}
	nameOf := func(i int) (string, error) { return r.ifnames[i], nil }
	for _, l := range links {
		lm, err := p.linkModelOf(l, nameOf)
		if err != nil {
			return m, err
		}
		m.links[l.Attrs().Name] = lm
	}
	addrs, err := r.nl.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return m, fmt.Errorf("router %s: listing addresses: %w", r.name, err)
	}
	for _, a := range addrs {
		if k, ok := routerAddrKey(r.ifnames[a.LinkIndex], a.IPNet); ok {
			m.addrs[k] = true
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := r.nl.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return m, fmt.Errorf("router %s: listing routes: %w", r.name, err)
		}
		for _, rt := range routes {
			if k, v, ok := routerRouteKey(rt, r.ifnames); ok {
				m.routes[k] = v
			}
		}
	}
	if in, ok := m.links[internalLink]; ok {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			entries, err := r.nl.NeighList(in.index, fam)
			if err != nil {
				return m, fmt.Errorf("router %s: listing neighbours: %w", r.name, err)
			}
			for _, e := range entries {
				if e.State&netlink.NUD_PERMANENT == 0 {
					continue
				}
				if a, ok := netip.AddrFromSlice(e.IP); ok {
					m.neigh[addrKey{internalLink, a.Unmap().String()}] = e.HardwareAddr.String()
				}
			}
		}
	}
	if x, ok := m.links[externalLink]; ok {
		entries, err := r.nl.NeighProxyList(x.index, netlink.FAMILY_V6)
		if err != nil {
			return m, fmt.Errorf("router %s: listing proxied neighbours: %w", r.name, err)
		}
		for _, e := range entries {
			if a, ok := netip.AddrFromSlice(e.IP); ok && e.LinkIndex == x.index {
				if m.proxy == nil {
					m.proxy = map[string]bool{}
				}
				m.proxy[a.String()] = true
			}
		}
	}
	err = netns.Do(r.ns, func() error {
		for k := range want.sysctls {
			v, err := netns.ReadSysctl(k)
			if err != nil {
				continue // a per-link key whose link is missing: written after it is made
			}
			m.sysctls[k] = v
		}
		return nil
	})
	if err != nil {
		return m, err
	}
	if m.rules, err = readTable(r.nft, routerTable, nftables.TableFamilyINet, routerChains); err != nil {
		return m, err
	}
	return m, nil
}

// routerAddrKey is how a router address is compared, or false for the
// ones the kernel makes (loopback, IPv6 link-local).
func routerAddrKey(link string, ipn *net.IPNet) (addrKey, bool) {
	a, ok := netip.AddrFromSlice(ipn.IP)
	if !ok || link == "lo" || link == "" {
		return addrKey{}, false
	}
	a = a.Unmap()
	// The kernel's own link-local addresses are not the Plane's; the
	// metadata address, link-local too, is.
	if (a.IsLinkLocalUnicast() && a != MetadataAddress && a != MetadataAddress6) || a.IsLoopback() {
		return addrKey{}, false
	}
	bits, _ := ipn.Mask.Size()
	return addrKey{link, netip.PrefixFrom(a, bits).String()}, true
}

// routerRouteKey is how a default route is compared; other routes (the
// kernel's connected ones) are not the Plane's.
func routerRouteKey(rt netlink.Route, ifnames map[int]string) (string, string, bool) {
	if rt.Dst != nil {
		if ones, _ := rt.Dst.Mask.Size(); ones != 0 {
			return "", "", false
		}
	}
	if rt.Type != unix.RTN_UNICAST {
		return "", "", false
	}
	gw, ok := netip.AddrFromSlice(rt.Gw)
	key := "0.0.0.0/0"
	if rt.Family == netlink.FAMILY_V6 {
		key = "::/0"
	}
	if !ok {
		return key, "dev " + ifnames[rt.LinkIndex], true
	}
	return key, routeValue(gw.Unmap(), ifnames[rt.LinkIndex]), true
}

// fdbOf dumps the bridge FDB entries of one device. The request carries
// an ifinfomsg naming the device, as `bridge fdb show dev X` sends it, so
// the kernel filters (an ndmsg would dump every device's entries, and a
// strictly checked one is refused); vishvananda/netlink only sends
// ndmsg, so the request is made here, on a socket opened in the host
// namespace.
func (p *Linux) fdbOf(index int) ([]netlink.Neigh, error) {
	var out []netlink.Neigh
	err := netns.Do(p.host, func() error {
		req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, unix.NLM_F_DUMP)
		msg := nl.NewIfInfomsg(unix.AF_BRIDGE)
		msg.Index = int32(index)
		req.AddData(msg)
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNEIGH)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
		for _, m := range msgs {
			n, err := netlink.NeighDeserialize(m)
			if err != nil || n.LinkIndex != index {
				continue
			}
			out = append(out, *n)
		}
		if err != nil {
			return err // interrupted: the caller reads again later
		}
		return nil
	})
	return out, err
}
