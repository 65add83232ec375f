package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/netns"
)

// IPv6 in a network's router: router advertisements to the local NICs.
//
// Every host's router advertises itself as the NICs' router, from the
// same link-local address (the EUI-64 of the gateway MAC) and MAC on
// every host, so a VM keeps its router wherever it runs; the data plane
// drops router solicitations and advertisements on the VXLAN device, so
// each host answers its own VMs only.
//
// A network may have several IPv6 subnets on one link, and a NIC must
// make an address (SLAAC) in its own subnet only, the one IPAM computed
// its address in. So the router sends no multicast advertisement: each
// local NIC gets its own, carrying only its subnet's prefix, sent to the
// NIC's MAC with the IPv6 destination all-nodes (ff02::1), which every
// IPv6 node accepts whatever its link-local address (RFC 6085: an IPv6
// multicast packet may go to a unicast link-layer address). The frames
// are made here and sent on a packet socket on the router's leg; router
// solicitations are read on an ICMPv6 socket and answered at once (every
// local NIC gets a fresh advertisement, at most once per raMinGap), and
// every raInterval the NICs get one anyway.
//
// A subnet in mode slaac advertises its prefix as autonomous; one in mode
// dhcpv6 sets the managed flag instead (the address comes from DHCPv6,
// netdhcp6.go, served here too);
// one with DHCP disabled advertises the router and the prefix on-link
// only, for guests with static addresses.

const (
	raInterval = 30 * time.Second
	raMinGap   = 200 * time.Millisecond
	// Lifetimes: long enough that a guest keeps its route and address
	// while the agent restarts, refreshed every raInterval.
	raRouterLifetime    = 1800 * time.Second
	raValidLifetime     = 86400 * time.Second
	raPreferredLifetime = 14400 * time.Second
)

// raNetwork is what one network's router advertises on this host.
type raNetwork struct {
	MTU    int
	Domain string
	// Subnets are the network's IPv6 subnets.
	Subnets []raSubnet
	// Ports are the local NICs with an IPv6 address, by MAC (lowercase).
	Ports map[string]raPort
}

type raSubnet struct {
	Key     string // tenant/name
	CIDR    netip.Prefix
	Gateway netip.Addr
	// Mode is the subnet's spec.ipv6Mode.
	Mode string
	// Static: the subnet's DHCP is disabled; guests configure their
	// addresses themselves.
	Static bool
	DNS    []netip.Addr
	Lease  int // seconds, for DHCPv6
}

// raPort is a local NIC's IPv6 address and the subnet it is in.
type raPort struct {
	Subnet  int // index in raNetwork.Subnets
	Address netip.Addr
}

func (r *raNetwork) addSubnet(s *api.Subnet, sub dataplane.Subnet) {
	rs := raSubnet{Key: s.Metadata.Tenant + "/" + s.Metadata.Name, CIDR: sub.CIDR, Gateway: sub.Gateway,
		Mode: s.Spec.IPv6Mode, Static: s.Spec.DHCP.Disabled, Lease: s.Spec.DHCP.LeaseSeconds}
	if rs.Mode == "" {
		rs.Mode = api.IPv6ModeSLAAC
	}
	for _, d := range s.Spec.DNSServers {
		if a, err := netip.ParseAddr(d); err == nil && a.Is6() && !a.Is4In6() {
			rs.DNS = append(rs.DNS, a)
		}
	}
	r.Subnets = append(r.Subnets, rs)
}

// addPort records a local NIC's address if it is in an IPv6 subnet.
func (r *raNetwork) addPort(mac net.HardwareAddr, a netip.Addr) {
	for i, s := range r.Subnets {
		if s.CIDR.Contains(a) {
			r.Ports[mac.String()] = raPort{Subnet: i, Address: a}
		}
	}
}

// gatewayLinkLocal is the router's link-local address on a network: the
// EUI-64 of the gateway MAC, the same on every host.
func gatewayLinkLocal(vni uint32) netip.Addr {
	a, _ := api.EUI64(netip.MustParsePrefix("fe80::/64"), dataplane.GatewayMAC(vni))
	return a
}

var allNodes = netip.MustParseAddr("ff02::1")

// raMessage is the advertisement a NIC in subnet s gets.
func raMessage(n *raNetwork, s raSubnet, vni uint32) *ndp.RouterAdvertisement {
	ra := &ndp.RouterAdvertisement{
		CurrentHopLimit:      64,
		ManagedConfiguration: s.Mode == api.IPv6ModeDHCPv6 && !s.Static,
		OtherConfiguration:   s.Mode == api.IPv6ModeDHCPv6 && !s.Static,
		RouterLifetime:       raRouterLifetime,
		Options: []ndp.Option{
			&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: dataplane.GatewayMAC(vni)},
			&ndp.PrefixInformation{
				PrefixLength:                   uint8(s.CIDR.Bits()),
				OnLink:                         true,
				AutonomousAddressConfiguration: s.Mode == api.IPv6ModeSLAAC && !s.Static,
				ValidLifetime:                  raValidLifetime,
				PreferredLifetime:              raPreferredLifetime,
				Prefix:                         s.CIDR.Masked().Addr(),
			},
		},
	}
	if n.MTU > 0 {
		ra.Options = append(ra.Options, ndp.NewMTU(uint32(n.MTU)))
	}
	if len(s.DNS) > 0 {
		ra.Options = append(ra.Options, &ndp.RecursiveDNSServer{Lifetime: raRouterLifetime, Servers: s.DNS})
	}
	return ra
}

// raFrame is an Ethernet frame carrying m from the router to the NIC
// with MAC dst: IPv6 from the gateway's link-local address to all-nodes,
// hop limit 255 as neighbour discovery requires.
func raFrame(vni uint32, dst net.HardwareAddr, m ndp.Message) ([]byte, error) {
	src := gatewayLinkLocal(vni)
	body, err := ndp.MarshalMessageChecksum(m, src, allNodes)
	if err != nil {
		return nil, err
	}
	f := make([]byte, 0, 14+40+len(body))
	f = append(f, dst...)
	f = append(f, dataplane.GatewayMAC(vni)...)
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_IPV6)
	f = append(f, 0x60, 0, 0, 0) // version 6, no traffic class or flow label
	f = binary.BigEndian.AppendUint16(f, uint16(len(body)))
	f = append(f, unix.IPPROTO_ICMPV6, ndp.HopLimit)
	s16, d16 := src.As16(), allNodes.As16()
	f = append(f, s16[:]...)
	f = append(f, d16[:]...)
	return append(f, body...), nil
}

// raServers runs the advertisements of every network with an IPv6 subnet
// that this host carries.
type raServers struct {
	plane   dataplane.Plane
	mu      sync.Mutex
	running map[uint32]*raServer
}

func newRAServers(plane dataplane.Plane) *raServers {
	return &raServers{plane: plane, running: map[uint32]*raServer{}}
}

// sync starts, updates and stops servers to match st, leaving alone the
// networks whose Apply failed.
func (d *raServers) sync(ctx context.Context, st netState, failed map[uint32]bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for vni, r := range d.running {
		if _, ok := st.IPv6[vni]; ok && failed[vni] {
			continue
		}
		if _, ok := st.IPv6[vni]; !ok || !r.inNetns(d.plane.RouterNetns(vni)) {
			r.stop()
			delete(d.running, vni)
		}
	}
	for vni, n := range st.IPv6 {
		if failed[vni] {
			continue
		}
		if r := d.running[vni]; r != nil {
			r.update(n)
			continue
		}
		r, err := startRA(ctx, d.plane.RouterNetns(vni), vni, n)
		if err != nil {
			slog.Warn("starting router advertisements", "vni", vni, "err", err)
			continue
		}
		d.running[vni] = r
	}
}

func (d *raServers) stopAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for vni, r := range d.running {
		r.stop()
		delete(d.running, vni)
	}
}

// raServer advertises one network's router to its local NICs.
type raServer struct {
	vni    uint32
	cfg    atomic.Pointer[raNetwork]
	ns     netns.Handle
	fd     int // AF_PACKET socket on the router's leg
	dhcp6  int // AF_PACKET socket DHCPv6 requests are read on
	ifidx  int
	rs     *ndp.Conn
	poke   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func startRA(ctx context.Context, nsName string, vni uint32, n *raNetwork) (*raServer, error) {
	r := &raServer{vni: vni, fd: -1, dhcp6: -1, poke: make(chan struct{}, 1), done: make(chan struct{})}
	r.cfg.Store(n)
	var err error
	if r.ns, err = netns.Open(nsName); err != nil {
		return nil, fmt.Errorf("the router namespace: %w", err)
	}
	err = netns.Do(r.ns, func() error {
		ifi, err := net.InterfaceByName(dataplane.RouterInternalLink)
		if err != nil {
			return err
		}
		r.ifidx = ifi.Index
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		r.fd = fd
		// Protocol 0: the socket sends only, and receives nothing.
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
			return fmt.Errorf("binding the packet socket to %s: %w", ifi.Name, err)
		}
		c, _, err := ndp.Listen(ifi, ndp.Unspecified)
		if err != nil {
			return fmt.Errorf("ICMPv6 socket: %w", err)
		}
		r.rs = c
		if r.dhcp6, err = openDHCP6(ifi.Index); err != nil {
			return fmt.Errorf("DHCPv6 socket: %w", err)
		}
		var f ipv6.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv6.ICMPTypeRouterSolicitation)
		return c.SetICMPFilter(&f)
	})
	if err != nil {
		r.close()
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	go r.readSolicitations()
	dhcp6Done := make(chan struct{})
	go func() {
		defer close(dhcp6Done)
		r.serveDHCP6(sctx.Done())
	}()
	go func() {
		defer close(r.done)
		r.run(sctx)
		<-dhcp6Done
	}()
	go func() {
		select {
		case <-ctx.Done():
			r.stop()
		case <-r.done:
		}
	}()
	return r, nil
}

func (r *raServer) close() {
	if r.rs != nil {
		r.rs.Close()
	}
	if r.fd >= 0 {
		unix.Close(r.fd)
	}
	if r.dhcp6 >= 0 {
		unix.Close(r.dhcp6)
	}
	if r.ns.IsOpen() {
		r.ns.Close()
	}
}

// update takes a new configuration; what changed is advertised at once.
func (r *raServer) update(n *raNetwork) {
	if old := r.cfg.Swap(n); !reflect.DeepEqual(old, n) {
		r.kick()
	}
}

func (r *raServer) kick() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// readSolicitations pokes the sender for every router solicitation, until
// the socket is closed.
func (r *raServer) readSolicitations() {
	for {
		m, _, _, err := r.rs.ReadFrom()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // a malformed message
			continue
		}
		if _, ok := m.(*ndp.RouterSolicitation); ok {
			r.kick()
		}
	}
}

func (r *raServer) run(ctx context.Context) {
	t := time.NewTicker(raInterval)
	defer t.Stop()
	last := time.Time{}
	for {
		if wait := raMinGap - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		last = time.Now()
		r.advertise()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.poke:
		}
	}
}

// advertise sends every local NIC its advertisement.
func (r *raServer) advertise() {
	n := r.cfg.Load()
	for mac, p := range n.Ports {
		hw, err := net.ParseMAC(mac)
		if err != nil || p.Subnet >= len(n.Subnets) {
			continue
		}
		f, err := raFrame(r.vni, hw, raMessage(n, n.Subnets[p.Subnet], r.vni))
		if err != nil {
			slog.Warn("making a router advertisement", "vni", r.vni, "err", err)
			return
		}
		to := &unix.SockaddrLinklayer{Ifindex: r.ifidx, Protocol: htons(unix.ETH_P_IPV6), Halen: 6}
		copy(to.Addr[:], hw)
		if err := unix.Sendto(r.fd, f, 0, to); err != nil {
			slog.Debug("sending a router advertisement", "vni", r.vni, "mac", mac, "err", err)
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// inNetns reports whether the server still runs in the namespace now
// named name, on the router's leg as it is now (sameNetns): its sockets
// are bound to the leg's ifindex, which a leg made again does not keep.
func (r *raServer) inNetns(name string) bool { return sameNetns(r.ns, name, r.ifidx) }

func (r *raServer) stop() {
	r.once.Do(func() {
		r.cancel()
		<-r.done
		r.close()
	})
}
