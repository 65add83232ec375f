package boot

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/dhcp"
)

// Telling a machine from another client on the provisioning network.
//
// The HTTP side has no credentials to check: firmware cannot hold any.
// What the service does know is what its DHCP side saw: the address it
// leased to the machine's MAC (full mode), or the address the machine
// asked the network's own DHCP server for (proxy mode, learned from the
// broadcasts it hears). A request that needs to be the machine's own (a
// script that issues a boot, the boot's files and artifacts) must come
// from that address; with DHCP off, or when the service has not seen the
// machine's DHCP since it started, from the address the boot was issued
// to. And where the client is on the provisioning interface's subnet,
// the kernel's neighbour entry for its address (which the TCP handshake
// just resolved) must hold the machine's MAC: a client that claims the
// machine's address, or forges DHCP packets in its name, still answers
// ARP with its own MAC. What remains is a client that forges its
// link-layer address as well, which a flat L2 network cannot tell from
// the machine; see docs/BOOT-TEMPLATES.md.

// linkView reads the kernel's neighbour table of the provisioning
// interface, in the network namespace the service was started in.
type linkView struct {
	index  int
	prefix netip.Prefix

	mu sync.Mutex
	h  *netlink.Handle
}

// newLinkView opens a netlink socket in the calling thread's network
// namespace (the one the service serves in).
func newLinkView(ifname string, prefix netip.Prefix) (*linkView, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", ifname, err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return &linkView{index: ifi.Index, prefix: prefix, h: h}, nil
}

func (l *linkView) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.h.Close()
}

// onLink reports whether addr is a neighbour on the interface.
func (l *linkView) onLink(addr netip.Addr) bool {
	return l != nil && l.prefix.Contains(addr)
}

// macOf returns the link-layer address the kernel resolved addr to.
func (l *linkView) macOf(addr netip.Addr) (net.HardwareAddr, error) {
	l.mu.Lock()
	neighs, err := l.h.NeighList(l.index, netlink.FAMILY_V4)
	l.mu.Unlock()
	if err != nil {
		return nil, err
	}
	for _, n := range neighs {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok || a.Unmap() != addr || len(n.HardwareAddr) == 0 || n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) != 0 {
			continue
		}
		return n.HardwareAddr, nil
	}
	return nil, nil
}

// checkLink says why a client at addr is not the holder of mac on the
// provisioning link, or "" (also when it is not on the link, where
// nothing can be told).
func (s *Service) checkLink(addr netip.Addr, mac string) string {
	if !s.link.onLink(addr) {
		return ""
	}
	hw, err := s.link.macOf(addr)
	switch {
	case err != nil:
		return fmt.Sprintf("cannot read the neighbour table to check the link-layer address of %s: %v", addr, err)
	case hw == nil:
		return fmt.Sprintf("the link-layer address of %s is not known", addr)
	case !strings.EqualFold(hw.String(), mac):
		return fmt.Sprintf("%s is at link-layer address %s, not %s", addr, hw, mac)
	}
	return ""
}

// dhcpAddress is the address this service's DHCP side gave or saw for
// mac, and how it knows.
func (s *Service) dhcpAddress(mac string) (netip.Addr, string) {
	switch s.cfg.DHCPMode {
	case dhcp.ModeFull:
		if hw, err := net.ParseMAC(mac); err == nil && s.dhcp != nil {
			if l, ok := s.dhcp.LeaseOf(hw); ok {
				return l.IP, "this service leased it"
			}
		}
	case dhcp.ModeProxy:
		s.mu.Lock()
		a, ok := s.learned[strings.ToLower(mac)]
		s.mu.Unlock()
		if ok {
			return a, "its DHCP exchange asked for"
		}
	}
	return netip.Addr{}, ""
}

// checkClient says why a request from addr is not machine m's own, or
// "": b is the machine's boot the request is part of, nil for a script
// request that would issue one.
func (s *Service) checkClient(m *api.Machine, b *bootRecord, addr netip.Addr) string {
	want, how := s.dhcpAddress(m.Spec.MAC)
	if !want.IsValid() && b != nil {
		want, how = b.Addr, "its boot was issued to"
	}
	switch {
	case !addr.IsValid():
		return "the client's address is not known"
	case want.IsValid() && addr != want:
		return fmt.Sprintf("it came from %s, but machine %s (%s) is at %s (%s)", addr, m.Metadata.Name, m.Spec.MAC, want, how)
	case !want.IsValid() && s.cfg.DHCPMode != dhcp.ModeOff && s.cfg.DHCPMode != "":
		return fmt.Sprintf("this service has not seen machine %s (%s) get an address by DHCP since it started", m.Metadata.Name, m.Spec.MAC)
	}
	return s.checkLink(addr, m.Spec.MAC)
}

// remoteAddr is the client's address of an HTTP request.
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
