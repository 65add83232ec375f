// Package dataplanetest builds simulated hosts for the data plane's tests
// and benchmarks: network namespaces standing for hosts on an underlay
// bridge, an "internet" namespace behind an external bridge on every
// host, and namespaces standing for VMs, which a Plane plugs in with
// veth ports (dataplane.Port.Veth). Everything lives in namespaces it
// makes, named with a random prefix, and nothing is connected to the
// machine's own interfaces: there is no route out, and Close removes it
// all.
package dataplanetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/netns"
)

// Link names inside the lab's namespaces.
const (
	UnderlayLink = "ul0"   // a host's underlay link
	ExternalLink = "ext0"  // a host's bridge on the external network
	UnderlayBr   = "ul"    // the underlay bridge (in the underlay namespace)
	InternetBr   = "inet0" // the internet's bridge, holding InternetGateway
	VMLink       = "eth0"  // a VM's NIC
)

// Config says what to build. The zero value is completed with defaults.
type Config struct {
	// Hosts to simulate (default 2).
	Hosts int
	// Underlay is the hosts' underlay subnet; host i gets address i+1
	// (default 198.18.0.0/24, RFC 2544's benchmarking range).
	Underlay netip.Prefix
	// Internet is the external network (default 203.0.113.0/24,
	// TEST-NET-3); its first address is the internet namespace's, the
	// external gateway.
	Internet netip.Prefix
	// UnderlayMTU of the hosts' underlay links (default 1500).
	UnderlayMTU int
}

// Lab is a set of simulated hosts.
type Lab struct {
	Prefix   string
	Config   Config
	Underlay *Namespace
	Internet *Namespace
	Hosts    []*Host
	// InternetGateway is the internet namespace's address on the
	// external network: every network's External.Gateway.
	InternetGateway netip.Addr
	all             []*Namespace
}

// Namespace is a named network namespace of the lab.
type Namespace struct {
	Name string
	NS   netns.Handle
}

// Path is the namespace's file, for dataplane.Config.HostNetns and
// dataplane.VethPeer.Netns.
func (n *Namespace) Path() string { return netns.Path(n.Name) }

// Handle returns a netlink handle inside the namespace; close it.
func (n *Namespace) Handle() (*netlink.Handle, error) {
	var h *netlink.Handle
	err := netns.Do(n.NS, func() error {
		var err error
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	return h, err
}

// IP runs the ip command (iproute2) inside the namespace and returns its
// output.
func (n *Namespace) IP(args ...string) (string, error) {
	return run("ip", append([]string{"-n", n.Name}, args...)...)
}

// Bridge runs the bridge command (iproute2) inside the namespace.
func (n *Namespace) Bridge(args ...string) (string, error) {
	return run("bridge", append([]string{"-n", n.Name}, args...)...)
}

func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Host is a simulated host.
type Host struct {
	*Namespace
	Index int
	// Underlay is the host's address on UnderlayLink.
	Underlay netip.Addr
}

// DataplaneUnderlay is the host's dataplane.Underlay.
func (h *Host) DataplaneUnderlay() dataplane.Underlay {
	return dataplane.Underlay{Device: UnderlayLink, Address: h.Underlay}
}

// New builds a lab: the underlay namespace with its bridge, the
// internet namespace with its bridge, and cfg.Hosts hosts, each with a
// veth to both.
func New(cfg Config) (l *Lab, err error) {
	if cfg.Hosts == 0 {
		cfg.Hosts = 2
	}
	if !cfg.Underlay.IsValid() {
		cfg.Underlay = netip.MustParsePrefix("198.18.0.0/24")
	}
	if !cfg.Internet.IsValid() {
		cfg.Internet = netip.MustParsePrefix("203.0.113.0/24")
	}
	if cfg.UnderlayMTU == 0 {
		cfg.UnderlayMTU = 1500
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	// What killed tests left goes first (owners.go).
	_, _ = SweepDeadLabs(context.Background())
	l = &Lab{Prefix: "hdp" + hex.EncodeToString(rnd[:]) + "-", Config: cfg}
	if err := recordOwner(l.Prefix); err != nil {
		return nil, fmt.Errorf("dataplanetest: recording the lab's owner: %w", err)
	}
	l.InternetGateway = cfg.Internet.Masked().Addr().Next()
	// The lab itself, not l: a failed step returns a nil l.
	lab := l
	defer func() {
		if err != nil {
			lab.Close()
		}
	}()
	if l.Underlay, err = l.NewNamespace("ul"); err != nil {
		return nil, err
	}
	if err := addBridge(l.Underlay, UnderlayBr, cfg.UnderlayMTU, netip.Prefix{}); err != nil {
		return nil, err
	}
	if l.Internet, err = l.NewNamespace("inet"); err != nil {
		return nil, err
	}
	if err := addBridge(l.Internet, InternetBr, 1500, netip.PrefixFrom(l.InternetGateway, cfg.Internet.Bits())); err != nil {
		return nil, err
	}
	a := cfg.Underlay.Masked().Addr()
	for i := range cfg.Hosts {
		a = a.Next()
		ns, err := l.NewNamespace(fmt.Sprintf("h%d", i+1))
		if err != nil {
			return nil, err
		}
		h := &Host{Namespace: ns, Index: i, Underlay: a}
		if err := veth(h.Namespace, UnderlayLink, l.Underlay, h.Name, UnderlayBr, cfg.UnderlayMTU); err != nil {
			return nil, err
		}
		if err := addAddr(h.Namespace, UnderlayLink, netip.PrefixFrom(a, cfg.Underlay.Bits())); err != nil {
			return nil, err
		}
		if err := addBridge(h.Namespace, ExternalLink, 1500, netip.Prefix{}); err != nil {
			return nil, err
		}
		if err := veth(h.Namespace, "extup", l.Internet, h.Name, InternetBr, 1500); err != nil {
			return nil, err
		}
		if err := enslave(h.Namespace, "extup", ExternalLink); err != nil {
			return nil, err
		}
		l.Hosts = append(l.Hosts, h)
	}
	return l, nil
}

// NewNamespace makes a named namespace of the lab, with lo up.
func (l *Lab) NewNamespace(name string) (*Namespace, error) {
	full := l.Prefix + name
	ns, err := netns.Create(full)
	if err != nil {
		return nil, err
	}
	n := &Namespace{Name: full, NS: ns}
	l.all = append(l.all, n)
	if err := linkUp(n, "lo"); err != nil {
		return nil, err
	}
	return n, nil
}

// NewVM makes a namespace standing for a VM.
func (l *Lab) NewVM(name string) (*Namespace, error) {
	return l.NewNamespace("vm-" + name)
}

// Close deletes every namespace of the lab (and so every link in them),
// and any other namespace named with the lab's prefix (the router
// namespaces of Planes given a NetnsPrefix from RouterPrefix).
func (l *Lab) Close() error {
	var errs []error
	for i := len(l.all) - 1; i >= 0; i-- {
		n := l.all[i]
		n.NS.Close()
		if err := netns.Delete(n.Name); err != nil {
			errs = append(errs, err)
		}
	}
	l.all = nil
	names, _ := netns.List()
	for _, name := range names {
		if strings.HasPrefix(name, l.Prefix) {
			if err := netns.Delete(name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) == 0 {
		forgetOwner(l.Prefix)
	}
	return errors.Join(errs...)
}

// RouterPrefix is a dataplane.Config.NetnsPrefix for the host's Plane:
// its router namespaces are the lab's, and do not collide with another
// host's.
func (h *Host) RouterPrefix() string { return h.Name + "-" }

// Configure gives a VM's NIC (named VMLink, made by the Plane) an
// address and a default route, and brings it up. A VM given an IPv4
// address has no IPv6.
func (n *Namespace) Configure(addr netip.Prefix, gw netip.Addr) error {
	if addr.Addr().Is4() {
		if err := disableIPv6(n, VMLink); err != nil {
			return err
		}
	}
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(VMLink)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", n.Name, VMLink, err)
	}
	a := &netlink.Addr{IPNet: ipNet(addr)}
	if addr.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrReplace(l, a); err != nil {
		return fmt.Errorf("%s: adding %s: %w", n.Name, addr, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return err
	}
	if err := n.WaitOperUp(VMLink); err != nil {
		return err
	}
	if gw.IsValid() {
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if gw.Is6() {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		if err := h.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(dst), Gw: gw.AsSlice()}); err != nil {
			return fmt.Errorf("%s: default route via %s: %w", n.Name, gw, err)
		}
	}
	return nil
}

// MAC returns the hardware address of a link in the namespace.
func (n *Namespace) MAC(link string) (net.HardwareAddr, error) {
	h, err := n.Handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	l, err := h.LinkByName(link)
	if err != nil {
		return nil, err
	}
	return l.Attrs().HardwareAddr, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func linkUp(n *Namespace, name string) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", n.Name, name, err)
	}
	return h.LinkSetUp(l)
}

func addBridge(n *Namespace, name string, mtu int, addr netip.Prefix) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = name, mtu
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
		return fmt.Errorf("%s: bridge %s: %w", n.Name, name, err)
	}
	if err := disableIPv6(n, name); err != nil {
		return err
	}
	if addr.IsValid() {
		if err := addAddr(n, name, addr); err != nil {
			return err
		}
	}
	return linkUp(n, name)
}

func disableIPv6(n *Namespace, link string) error {
	return netns.Do(n.NS, func() error {
		return netns.WriteSysctl("net/ipv6/conf/"+link+"/disable_ipv6", "1")
	})
}

func addAddr(n *Namespace, link string, addr netip.Prefix) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(link)
	if err != nil {
		return err
	}
	return h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(addr)})
}

// veth joins a namespace's link to a bridge in another namespace.
func veth(a *Namespace, aName string, b *Namespace, bName, bridge string, mtu int) error {
	h, err := a.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = aName, mtu
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: bName, PeerNamespace: netlink.NsFd(b.NS), PeerTxQLen: -1}); err != nil {
		return fmt.Errorf("%s: veth %s/%s: %w", a.Name, aName, bName, err)
	}
	// The lab's own links have no IPv6: their neighbour discovery and
	// multicast would be noise in tests that count what changes.
	if err := disableIPv6(a, aName); err != nil {
		return err
	}
	if err := disableIPv6(b, bName); err != nil {
		return err
	}
	if err := linkUp(a, aName); err != nil {
		return err
	}
	if err := enslave(b, bName, bridge); err != nil {
		return err
	}
	if err := a.WaitOperUp(aName); err != nil {
		return err
	}
	return b.WaitOperUp(bName)
}

// WaitOperUp waits until a link in the namespace carries packets. A link
// is set up at once but starts carrying packets only when the kernel's
// linkwatch gets to it, which takes up to a second, and longer when the
// machine is busy making and deleting namespaces; until then a bridge
// drops what it would forward to it.
func (n *Namespace) WaitOperUp(link string) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		l, err := h.LinkByName(link)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", n.Name, link, err)
		}
		if l.Attrs().OperState == netlink.OperUp || l.Attrs().OperState == netlink.OperUnknown && l.Attrs().RawFlags&unix.IFF_RUNNING != 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s is still %v after 15s", n.Name, link, l.Attrs().OperState)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func enslave(n *Namespace, link, bridge string) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(link)
	if err != nil {
		return err
	}
	br, err := h.LinkByName(bridge)
	if err != nil {
		return err
	}
	if err := h.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("%s: %s into %s: %w", n.Name, link, bridge, err)
	}
	return h.LinkSetUp(l)
}

// MACOf returns the hardware address of a link in a namespace known by
// name only (a Plane's router, say).
func (n *Namespace) MACOf(link string) (net.HardwareAddr, error) {
	out, err := n.IP("-br", "link", "show", link)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(out)
	if len(f) < 3 {
		return nil, fmt.Errorf("%s: cannot read %s's MAC from %q", n.Name, link, out)
	}
	return net.ParseMAC(f[2])
}
