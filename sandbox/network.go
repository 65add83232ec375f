package sandbox

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"hearth.dev/hearth/netns"
)

// BuildNetwork makes the underlay: a namespace holding the bridge, the
// root namespace's veth onto it, and one namespace per host with its eth0
// on the bridge; then the provisioning network (buildProvisioning). Each
// piece is recorded as soon as it exists.
func (s *Sandbox) BuildNetwork() error {
	under, err := s.newNetns(s.names.underlay())
	if err != nil {
		return err
	}
	defer under.Close()
	uh, err := netlink.NewHandleAt(under)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", s.names.underlay(), err)
	}
	defer uh.Close()
	if err := linkUp(uh, "lo"); err != nil {
		return fmt.Errorf("%s: %w", s.names.underlay(), err)
	}
	if err := uh.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}}); err != nil {
		return fmt.Errorf("creating bridge %s in %s: %w", bridgeName, s.names.underlay(), err)
	}
	s.State.Bridge = bridgeName
	if err := s.State.save(); err != nil {
		return err
	}
	if err := linkUp(uh, bridgeName); err != nil {
		return fmt.Errorf("%s: %w", s.names.underlay(), err)
	}
	if err := s.connectRoot(under, uh); err != nil {
		return err
	}
	for i := 1; i <= s.cfg.Hosts; i++ {
		if err := s.addHost(i, under, uh); err != nil {
			return err
		}
	}
	if err := s.buildInternet(); err != nil {
		return err
	}
	if s.cfg.SharedStorage {
		if err := s.buildStorage(under, uh); err != nil {
			return err
		}
	}
	return s.buildProvisioning(under, uh)
}

// connectRoot plugs the root namespace into the underlay with one veth,
// PREFIX-ctl, addressed .1 of the underlay, so the server and the CLI,
// which run in the root namespace, reach the hosts and the hosts reach the
// server.
//
// This does not connect the sandbox to the machine's real networks:
//   - the root namespace gets only the connected route of the underlay
//     (the kernel adds it with the address); nothing else is added, IPv6 is
//     off on the veth so not even a link-local route appears;
//   - the hosts have only their connected underlay route and no default
//     route, so they cannot even address a packet to anything outside the
//     underlay;
//   - IP forwarding in the root namespace is left as it is (off on a
//     machine that is not a router), no NAT rule is added, and the only
//     bridge, br0, lives in the underlay namespace and holds only the
//     sandbox's own veths: no real interface is ever bridged.
//
// So a packet from a host can reach the root namespace's own sockets on
// .1 and nothing beyond.
func (s *Sandbox) connectRoot(under netns.Handle, uh *netlink.Handle) error {
	name := s.names.ctl()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: name},
		PeerName:      ctlPeerName,
		PeerNamespace: netlink.NsFd(under),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s: %w", name, err)
	}
	s.State.RootLinks = append(s.State.RootLinks, name)
	if err := s.State.save(); err != nil {
		return err
	}
	if err := plugIntoBridge(uh, ctlPeerName, bridgeName); err != nil {
		return err
	}
	// Best effort: without IPv6 in the kernel there is nothing to turn off.
	_ = os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", name, "disable_ipv6"), []byte("1"), 0o644)
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("veth %s: %w", name, err)
	}
	addr := addrAt(s.cfg.Underlay, ctlOffset)
	if err := netlink.AddrAdd(link, ipNet(addr, s.cfg.Underlay.Bits())); err != nil {
		return fmt.Errorf("addressing %s with %s: %w", name, addr, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing %s up: %w", name, err)
	}
	return nil
}

// addHost makes host i's namespace with lo up and eth0 on the underlay
// bridge.
func (s *Sandbox) addHost(i int, under netns.Handle, uh *netlink.Handle) error {
	nsName := s.names.hostNetns(i)
	hostNs, err := s.newNetns(nsName)
	if err != nil {
		return err
	}
	defer hostNs.Close()
	addr := addrAt(s.cfg.Underlay, hostOffset(i))
	h := Host{
		Name:    s.names.host(i),
		Netns:   nsName,
		Address: addr.String(),
		Dir:     filepath.Join(s.cfg.Dir, s.names.host(i)),
		Metrics: net.JoinHostPort(addr.String(), strconv.Itoa(agentMetricsPort)),
	}
	s.State.Hosts = append(s.State.Hosts, h)
	if err := s.State.save(); err != nil {
		return err
	}
	// Both ends are created right where they belong, so no name is ever
	// taken, even for a moment, in the root namespace.
	port := h.Name
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostLinkName, Namespace: netlink.NsFd(hostNs)},
		PeerName:      port,
		PeerNamespace: netlink.NsFd(under),
	}
	if err := uh.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s (%s) – %s (%s): %w", hostLinkName, nsName, port, s.names.underlay(), err)
	}
	if err := plugIntoBridge(uh, port, bridgeName); err != nil {
		return err
	}
	hh, err := netlink.NewHandleAt(hostNs)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", nsName, err)
	}
	defer hh.Close()
	if err := linkUp(hh, "lo"); err != nil {
		return fmt.Errorf("%s: %w", nsName, err)
	}
	return addressUp(hh, nsName, hostLinkName, netip.PrefixFrom(addr, s.cfg.Underlay.Bits()))
}

// buildProvisioning makes the provisioning network: PREFIX-lan with the
// bridge prov0, and PREFIX-boot with one veth on prov0 (prov, .2) and one
// on the underlay (underlay, .9). See the package comment for the picture.
func (s *Sandbox) buildProvisioning(under netns.Handle, uh *netlink.Handle) error {
	p := &Provisioning{
		CIDR:                s.cfg.Provisioning.String(),
		Netns:               s.names.lan(),
		Bridge:              provBridgeName,
		BootNetns:           s.names.boot(),
		BootInterface:       bootProvLink,
		BootAddress:         addrAt(s.cfg.Provisioning, bootProvOffset).String(),
		BootUnderlayLink:    bootUnderlayLink,
		BootUnderlayAddress: addrAt(s.cfg.Underlay, bootUnderlayOffset).String(),
		BootMetrics:         net.JoinHostPort(addrAt(s.cfg.Underlay, bootUnderlayOffset).String(), strconv.Itoa(bootMetricsPort)),
		PoolStart:           addrAt(s.cfg.Provisioning, poolStartOffset).String(),
		PoolEnd:             addrAt(s.cfg.Provisioning, poolEndOffset).String(),
		HTTPListen:          net.JoinHostPort(addrAt(s.cfg.Provisioning, bootProvOffset).String(), strconv.Itoa(bootHTTPPort)),
		BootDir:             filepath.Join(s.cfg.Dir, bootSubdir),
		DHCPMode:            "full",
		Site:                s.cfg.Site,
	}
	if s.cfg.HomeRouter {
		p.DHCPMode = "proxy"
	}
	s.State.Provisioning = p
	if err := s.State.save(); err != nil {
		return err
	}

	lan, err := s.newNetns(p.Netns)
	if err != nil {
		return err
	}
	defer lan.Close()
	lh, err := netlink.NewHandleAt(lan)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", p.Netns, err)
	}
	defer lh.Close()
	if err := linkUp(lh, "lo"); err != nil {
		return fmt.Errorf("%s: %w", p.Netns, err)
	}
	if err := lh.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: provBridgeName}}); err != nil {
		return fmt.Errorf("creating bridge %s in %s: %w", provBridgeName, p.Netns, err)
	}
	// Not even an IPv6 link-local address: PREFIX-lan is the wire, not a
	// party on it. Best effort, as for the root's veth.
	_ = netns.DoNamed(p.Netns, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/"+provBridgeName+"/disable_ipv6", []byte("1"), 0o644)
	})
	if err := linkUp(lh, provBridgeName); err != nil {
		return fmt.Errorf("%s: %w", p.Netns, err)
	}

	boot, err := s.newNetns(p.BootNetns)
	if err != nil {
		return err
	}
	defer boot.Close()
	bh, err := netlink.NewHandleAt(boot)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", p.BootNetns, err)
	}
	defer bh.Close()
	if err := linkUp(bh, "lo"); err != nil {
		return fmt.Errorf("%s: %w", p.BootNetns, err)
	}
	// The boot service is on two networks; it must never route between
	// them. A new namespace starts with forwarding off; make sure.
	if err := netns.DoNamed(p.BootNetns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0"), 0o644)
	}); err != nil {
		return fmt.Errorf("turning forwarding off in %s: %w", p.BootNetns, err)
	}
	links := []struct {
		name, peerNs string
		peer         *netlink.Handle
		bridge       string
		addr         netip.Prefix
	}{
		{p.BootInterface, p.Netns, lh, provBridgeName, netip.PrefixFrom(netip.MustParseAddr(p.BootAddress), s.cfg.Provisioning.Bits())},
		{p.BootUnderlayLink, s.names.underlay(), uh, bridgeName, netip.PrefixFrom(netip.MustParseAddr(p.BootUnderlayAddress), s.cfg.Underlay.Bits())},
	}
	for _, l := range links {
		peerNs, err := netns.Open(l.peerNs)
		if err != nil {
			return err
		}
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: l.name, Namespace: netlink.NsFd(boot)},
			PeerName:      bootPortName,
			PeerNamespace: netlink.NsFd(peerNs),
		}
		err = bh.LinkAdd(veth)
		peerNs.Close()
		if err != nil {
			return fmt.Errorf("creating veth %s (%s) – %s (%s): %w", l.name, p.BootNetns, bootPortName, l.peerNs, err)
		}
		if err := plugIntoBridge(l.peer, bootPortName, l.bridge); err != nil {
			return err
		}
		if err := addressUp(bh, p.BootNetns, l.name, l.addr); err != nil {
			return err
		}
	}
	if s.cfg.HomeRouter {
		return s.buildRouter(p, lan, lh)
	}
	return nil
}

// buildRouter makes the home router's namespace, PREFIX-router, with one
// veth on prov0 (lan, .1 of the provisioning network; its peer in
// PREFIX-lan is router). Like PREFIX-boot it does not forward and has no
// other link: the "router" only hands out addresses (StartHomeRouter).
func (s *Sandbox) buildRouter(p *Provisioning, lan netns.Handle, lh *netlink.Handle) error {
	r := &Router{
		Netns:      s.names.router(),
		Interface:  routerLink,
		Address:    addrAt(s.cfg.Provisioning, routerOffset).String(),
		RangeStart: addrAt(s.cfg.Provisioning, routerStartOffset).String(),
		RangeEnd:   addrAt(s.cfg.Provisioning, routerEndOffset).String(),
		Dir:        filepath.Join(s.cfg.Dir, routerSubdir),
	}
	p.Router = r
	if err := s.State.save(); err != nil {
		return err
	}
	rns, err := s.newNetns(r.Netns)
	if err != nil {
		return err
	}
	defer rns.Close()
	rh, err := netlink.NewHandleAt(rns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", r.Netns, err)
	}
	defer rh.Close()
	if err := linkUp(rh, "lo"); err != nil {
		return fmt.Errorf("%s: %w", r.Netns, err)
	}
	if err := netns.DoNamed(r.Netns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0"), 0o644)
	}); err != nil {
		return fmt.Errorf("turning forwarding off in %s: %w", r.Netns, err)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: r.Interface, Namespace: netlink.NsFd(rns)},
		PeerName:      routerPortName,
		PeerNamespace: netlink.NsFd(lan),
	}
	if err := rh.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s (%s) – %s (%s): %w", r.Interface, r.Netns, routerPortName, p.Netns, err)
	}
	if err := plugIntoBridge(lh, routerPortName, provBridgeName); err != nil {
		return err
	}
	return addressUp(rh, r.Netns, r.Interface, netip.PrefixFrom(netip.MustParseAddr(r.Address), s.cfg.Provisioning.Bits()))
}

// addressUp gives a link its address and brings it up.
func addressUp(h *netlink.Handle, nsName, link string, addr netip.Prefix) error {
	l, err := h.LinkByName(link)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", link, nsName, err)
	}
	if err := h.AddrAdd(l, ipNet(addr.Addr(), addr.Bits())); err != nil {
		return fmt.Errorf("addressing %s in %s with %s: %w", link, nsName, addr, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bringing %s up in %s: %w", link, nsName, err)
	}
	return nil
}

// newNetns creates a named network namespace, records it, and returns a
// handle on it.
func (s *Sandbox) newNetns(name string) (netns.Handle, error) {
	ns, err := netns.Create(name)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return ns, fmt.Errorf("network namespace %s exists already: a sandbox with prefix %q is up (run hearth sandbox down --prefix %s)", name, s.cfg.Prefix, s.cfg.Prefix)
		}
		return ns, err
	}
	s.State.Namespaces = append(s.State.Namespaces, name)
	return ns, s.State.save()
}

// checkUnderlayFree refuses an underlay that overlaps a network the root
// namespace already has: the sandbox would hide it, or it the sandbox.
func checkUnderlayFree(p netip.Prefix) error {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		dst, ok := netipPrefix(r.Dst)
		if !ok || dst.Bits() == 0 || !dst.Overlaps(p) {
			continue
		}
		dev := ""
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			dev = " on " + l.Attrs().Name
		}
		return fmt.Errorf("the underlay %s overlaps the route to %s%s in the root namespace: choose another --underlay-cidr", p, dst, dev)
	}
	return nil
}

func linkUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bringing %s up: %w", name, err)
	}
	return nil
}

// plugIntoBridge attaches a link to a bridge in the same namespace (h's)
// and brings it up.
func plugIntoBridge(h *netlink.Handle, name, bridge string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	br, err := h.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", bridge, err)
	}
	if err := h.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("attaching %s to %s: %w", name, bridge, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bringing %s up: %w", name, err)
	}
	return nil
}

func ipNet(a netip.Addr, bits int) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}}
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// namespacesNamed lists the named network namespaces a sandbox with this
// prefix may have made, whether or not they were recorded.
func namespacesNamed(n names) []string {
	entries, _ := os.ReadDir(netns.Dir)
	var out []string
	for _, e := range entries {
		if n.isOurs(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// deleteNetns unmounts and removes a named namespace, if it is there.
// The kernel frees it, with every link inside, once no process and no
// mount holds it.
func deleteNetns(name string) error {
	if err := netns.Delete(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// deleteRootLink deletes a veth the sandbox made in the root namespace
// (its peer goes with it). Anything else by that name is left alone.
func deleteRootLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || strings.Contains(err.Error(), "not found") {
			return nil
		}
		return fmt.Errorf("link %s: %w", name, err)
	}
	if l.Type() != "veth" {
		return fmt.Errorf("link %s is a %s, not the sandbox's veth: left alone", name, l.Type())
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("deleting link %s: %w", name, err)
	}
	return nil
}
