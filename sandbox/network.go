package sandbox

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// BuildNetwork makes the underlay: a namespace holding the bridge, the
// root namespace's veth onto it, and one namespace per host with its eth0
// on the bridge. Each piece is recorded as soon as it exists.
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
	return nil
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
func (s *Sandbox) connectRoot(under netns.NsHandle, uh *netlink.Handle) error {
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
	if err := plugIntoBridge(uh, ctlPeerName); err != nil {
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
func (s *Sandbox) addHost(i int, under netns.NsHandle, uh *netlink.Handle) error {
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
	if err := plugIntoBridge(uh, port); err != nil {
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
	eth, err := hh.LinkByName(hostLinkName)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", hostLinkName, nsName, err)
	}
	if err := hh.AddrAdd(eth, ipNet(addr, s.cfg.Underlay.Bits())); err != nil {
		return fmt.Errorf("addressing %s in %s with %s: %w", hostLinkName, nsName, addr, err)
	}
	if err := hh.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bringing %s up in %s: %w", hostLinkName, nsName, err)
	}
	return nil
}

// newNetns creates a named network namespace, records it, and returns a
// handle on it.
func (s *Sandbox) newNetns(name string) (netns.NsHandle, error) {
	var ns netns.NsHandle
	err := onThrowawayThread(func() error {
		var err error
		ns, err = netns.NewNamed(name)
		return err
	})
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return ns, fmt.Errorf("network namespace %s exists already: a sandbox with prefix %q is up (run hearth sandbox down --prefix %s)", name, s.cfg.Prefix, s.cfg.Prefix)
		}
		return ns, fmt.Errorf("creating network namespace %s: %w", name, err)
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

// plugIntoBridge attaches a link of the underlay namespace to its bridge
// and brings it up.
func plugIntoBridge(uh *netlink.Handle, name string) error {
	l, err := uh.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s in the underlay: %w", name, err)
	}
	br, err := uh.LinkByName(bridgeName)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", bridgeName, err)
	}
	if err := uh.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("attaching %s to %s: %w", name, bridgeName, err)
	}
	if err := uh.LinkSetUp(l); err != nil {
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
	entries, _ := os.ReadDir(netnsDir)
	var out []string
	for _, e := range entries {
		if e.Name() == n.underlay() || n.isHostNetns(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// deleteNetns unmounts and removes a named namespace. The kernel frees it,
// with every link inside, once no process and no mount holds it.
func deleteNetns(name string) error {
	path := filepath.Join(netnsDir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", path, err)
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
