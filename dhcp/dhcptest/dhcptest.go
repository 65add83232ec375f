// Package dhcptest builds the smallest network a DHCP exchange needs: two
// network namespaces, a server side and a client side, joined by a veth
// pair. Tests and benchmarks run DHCP servers and clients in it; nothing
// reaches the machine's own interfaces or its root namespace, since both
// ends of the veth are created inside the new namespaces and neither has a
// route anywhere else.
//
// The namespaces are anonymous: they live as long as the Net's handles and
// the processes started in them, and leave nothing behind in /run/netns
// when a test dies. Run code in them with netns.Do, and processes with
// netns.Start.
package dhcptest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"hearth.dev/hearth/netns"
)

// Link names inside the namespaces.
const (
	ServerLink = "dhcp-srv"
	ClientLink = "dhcp-cli"
)

// Net is a server namespace and a client namespace joined by a veth.
type Net struct {
	Server, Client netns.Handle
	// ServerAddr is the address of ServerLink.
	ServerAddr netip.Prefix
	// ClientMAC is the hardware address of ClientLink.
	ClientMAC net.HardwareAddr
}

// New builds the network; serverAddr goes on the server's end. The
// client's end has no address, like a machine that has not booted yet.
func New(serverAddr netip.Prefix, clientMAC net.HardwareAddr) (n *Net, err error) {
	n = &Net{ServerAddr: serverAddr, ClientMAC: clientMAC, Server: netns.None(), Client: netns.None()}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if n.Server, err = netns.New(); err != nil {
		return nil, err
	}
	if n.Client, err = netns.New(); err != nil {
		return nil, err
	}
	sh, err := netlink.NewHandleAt(n.Server)
	if err != nil {
		return nil, fmt.Errorf("netlink in the server namespace: %w", err)
	}
	defer sh.Close()
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: ServerLink},
		PeerName:         ClientLink,
		PeerHardwareAddr: clientMAC,
		PeerNamespace:    netlink.NsFd(int(n.Client)),
	}
	if err := sh.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("creating veth %s/%s: %w", ServerLink, ClientLink, err)
	}
	if err := n.AddAddr(n.Server, ServerLink, serverAddr); err != nil {
		return nil, err
	}
	for _, ns := range []netns.Handle{n.Server, n.Client} {
		for _, name := range []string{"lo", ServerLink, ClientLink} {
			if (name == ServerLink && ns == n.Client) || (name == ClientLink && ns == n.Server) {
				continue
			}
			if err := linkUp(ns, name); err != nil {
				return nil, err
			}
		}
	}
	// A link is set up at once but starts carrying packets only when
	// the kernel's linkwatch gets to it (up to a second later): until
	// then a client's first DISCOVER is silently dropped.
	if err := waitOperUp(n.Server, ServerLink); err != nil {
		return nil, err
	}
	if err := waitOperUp(n.Client, ClientLink); err != nil {
		return nil, err
	}
	return n, nil
}

func waitOperUp(ns netns.Handle, link string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		var state netlink.LinkOperState
		err := withLink(ns, link, func(h *netlink.Handle, l netlink.Link) error {
			state = l.Attrs().OperState
			return nil
		})
		if err != nil {
			return err
		}
		if state == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("link %s is still %v after 5s", link, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Close drops the Net's hold on its namespaces; they disappear once no
// process started in them is left.
func (n *Net) Close() error {
	var errs []error
	for _, ns := range []*netns.Handle{&n.Server, &n.Client} {
		if ns.IsOpen() {
			errs = append(errs, ns.Close())
			*ns = netns.None()
		}
	}
	return errors.Join(errs...)
}

// AddAddr puts an address on a link in ns.
func (n *Net) AddAddr(ns netns.Handle, link string, p netip.Prefix) error {
	return withLink(ns, link, func(h *netlink.Handle, l netlink.Link) error {
		return h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}})
	})
}

// DelAddr removes an address from a link in ns.
func (n *Net) DelAddr(ns netns.Handle, link string, p netip.Prefix) error {
	return withLink(ns, link, func(h *netlink.Handle, l netlink.Link) error {
		return h.AddrDel(l, &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}})
	})
}

func linkUp(ns netns.Handle, link string) error {
	return withLink(ns, link, func(h *netlink.Handle, l netlink.Link) error { return h.LinkSetUp(l) })
}

func withLink(ns netns.Handle, link string, fn func(*netlink.Handle, netlink.Link) error) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in namespace: %w", err)
	}
	defer h.Close()
	l, err := h.LinkByName(link)
	if err != nil {
		return fmt.Errorf("link %s: %w", link, err)
	}
	if err := fn(h, l); err != nil {
		return fmt.Errorf("link %s: %w", link, err)
	}
	return nil
}

// ListenUDP opens a UDP socket on port of every address in ns, bound to
// link, that may send and receive broadcasts: a DHCP client's socket
// (port 68) before it has an address.
func ListenUDP(ns netns.Handle, link string, port int) (*net.UDPConn, error) {
	var conn *net.UDPConn
	err := netns.Do(ns, func() error {
		lc := net.ListenConfig{Control: func(network, address string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				s := int(fd)
				if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
					return
				}
				if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
					return
				}
				serr = unix.BindToDevice(s, link)
			})
			if err != nil {
				return err
			}
			return serr
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("0.0.0.0:%d", port))
		if err != nil {
			return fmt.Errorf("listening on %s port %d: %w", link, port, err)
		}
		conn = pc.(*net.UDPConn)
		return nil
	})
	return conn, err
}

// DialContext dials from ns: its DialContext fits an http.Transport, so a
// test's HTTP requests come from a namespace's client. local, when valid,
// is the source address.
func DialContext(ns netns.Handle, local netip.Addr) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{}
		if local.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
		}
		var c net.Conn
		err := netns.Do(ns, func() error {
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// SetMAC changes the hardware address of link in ns.
func (n *Net) SetMAC(ns netns.Handle, link string, mac net.HardwareAddr) error {
	return withLink(ns, link, func(h *netlink.Handle, l netlink.Link) error { return h.LinkSetHardwareAddr(l, mac) })
}

// FlushNeighbours forgets what ns's kernel resolved on link, so the next
// packet to a neighbour asks ARP again.
func (n *Net) FlushNeighbours(ns netns.Handle, link string) error {
	return withLink(ns, link, func(h *netlink.Handle, l netlink.Link) error {
		neighs, err := h.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for i := range neighs {
			if err := h.NeighDel(&neighs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				return err
			}
		}
		return nil
	})
}
