package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/netns"
)

// routerServices runs, in the router namespace of every network this host
// carries, the network's DNS server (netdns.go) on port 53 of its
// gateways and its metadata server (netmeta.go) on
// dataplane.MetadataAddress port 80. Both answer from tables computed
// from the agent's cache at each Apply (dnsZones, metaTables) and swapped
// in whole, so a query costs a map lookup and never an API round trip,
// and a VM that comes or goes is in or out of the tables with the Apply
// its change triggers (within netDebounce of the agent hearing of it).
//
// Each namespace serves its own network only: the tables of a network
// hold its tenant's names and its own VMs, and its sockets are bound to
// the router's internal leg (SO_BINDTODEVICE), so nothing that arrives
// on the external leg, or in another network's namespace, reaches them.
type routerServices struct {
	plane dataplane.Plane
	mu    sync.Mutex
	// running by VNI.
	running map[uint32]*networkServices
}

// networkServices are one network's DNS and metadata servers.
type networkServices struct {
	vni   uint32
	ns    netns.Handle
	leg   int // the internal leg's ifindex when the sockets were made
	zone  atomic.Pointer[dnsZone]
	table atomic.Pointer[metaTable]
	fwd   *forwarder
	// dnsUDP are one IPv4 server per CPU on sockets sharing the port
	// (SO_REUSEPORT), so queries are answered on every core, and one
	// IPv6 server; dnsTCP are IPv4's and IPv6's.
	dnsUDP []*dns.Server
	dnsTCP []*dns.Server
	meta   *http.Server
	metaLn net.Listener
	// metaLn6 is the metadata service on dataplane.MetadataAddress6, or
	// nil where the router has no IPv6.
	metaLn6 net.Listener
	once    sync.Once
	wg      sync.WaitGroup
}

func newRouterServices(plane dataplane.Plane) *routerServices {
	return &routerServices{plane: plane, running: map[uint32]*networkServices{}}
}

// sync starts, updates and stops the servers to match st, leaving alone
// the networks whose Apply failed (their router may not be there). It
// returns, by network (tenant/name), why servers could not start: the
// network controller says so in the Host's NetworkReady condition, and
// the next sync tries again.
func (r *routerServices) sync(ctx context.Context, in netInputs, st netState, failed map[uint32]bool) map[string]error {
	zones := dnsZones(in, st)
	tables := metaTables(in, st)
	r.mu.Lock()
	defer r.mu.Unlock()
	want := map[uint32]string{}
	for key, vni := range st.VNIs {
		want[vni] = key
	}
	for vni, s := range r.running {
		_, ok := want[vni]
		if ok && failed[vni] {
			continue
		}
		if !ok || !sameNetns(s.ns, r.plane.RouterNetns(vni), s.leg) {
			s.stop()
			delete(r.running, vni)
		}
	}
	errs := map[string]error{}
	for vni, key := range want {
		if failed[vni] {
			continue
		}
		z, t := zones[vni], tables[vni]
		if z == nil {
			z = &dnsZone{}
		}
		if t == nil {
			t = &metaTable{}
		}
		if s := r.running[vni]; s != nil {
			s.zone.Store(z)
			s.table.Store(t)
			continue
		}
		s, err := startNetworkServices(r.plane.RouterNetns(vni), vni, z, t)
		if err != nil {
			errs[key] = err
			continue
		}
		r.running[vni] = s
	}
	return errs
}

func (r *routerServices) stopAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for vni, s := range r.running {
		s.stop()
		delete(r.running, vni)
	}
}

// sameNetns reports whether h is the namespace now named name, with the
// router's internal leg it had (ifindex leg): a router namespace deleted
// and made again by the data plane is another namespace, and a leg made
// again another link, and the servers must follow (their sockets are
// bound to the leg's ifindex, which a new leg does not keep).
func sameNetns(h netns.Handle, name string, leg int) bool {
	o, err := netns.Open(name)
	if err != nil {
		return false
	}
	defer o.Close()
	return o.Equal(h) && routerLegIndex(o) == leg
}

// routerLegIndex is the ifindex of the router's internal leg in the
// namespace, 0 if there is none.
func routerLegIndex(h netns.Handle) int {
	idx := 0
	_ = netns.Do(h, func() error {
		ifi, err := net.InterfaceByName(dataplane.RouterInternalLink)
		if err == nil {
			idx = ifi.Index
		}
		return err
	})
	return idx
}

// internalSocket is how every socket of the services is made: bound to
// the router's internal leg, with freebind for an address the router may
// not hold yet, and with SO_REUSEPORT for sockets that share a port.
func internalSocket(freebind, reusePort bool) *net.ListenConfig {
	return &net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dataplane.RouterInternalLink)
			if serr == nil && freebind {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
			}
			if serr == nil && reusePort {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
		})
		return errors.Join(err, serr)
	}}
}

func startNetworkServices(nsName string, vni uint32, z *dnsZone, t *metaTable) (*networkServices, error) {
	s := &networkServices{vni: vni}
	s.zone.Store(z)
	s.table.Store(t)
	var err error
	if s.ns, err = netns.Open(nsName); err != nil {
		return nil, fmt.Errorf("the router namespace: %w", err)
	}
	s.leg = routerLegIndex(s.ns)
	var pcs []net.PacketConn
	var fwdConn net.PacketConn
	var tcp, tcp6 net.Listener
	err = netns.Do(s.ns, func() error {
		ctx := context.Background()
		for range runtime.GOMAXPROCS(0) {
			pc, err := internalSocket(false, true).ListenPacket(ctx, "udp4", ":53")
			if err != nil {
				return fmt.Errorf("DNS on udp port 53: %w", err)
			}
			pcs = append(pcs, pc)
		}
		var err error
		if tcp, err = internalSocket(false, false).Listen(ctx, "tcp4", ":53"); err != nil {
			return fmt.Errorf("DNS on tcp port 53: %w", err)
		}
		// IPv6 gateways too (IPv6-only sockets), where the kernel has
		// IPv6 at all.
		if pc, err := internalSocket(false, false).ListenPacket(ctx, "udp6", "[::]:53"); err == nil {
			pcs = append(pcs, pc)
		}
		if ln, err := internalSocket(false, false).Listen(ctx, "tcp6", "[::]:53"); err == nil {
			tcp6 = ln
		}
		addr := netip.AddrPortFrom(dataplane.MetadataAddress, 80).String()
		if s.metaLn, err = internalSocket(true, false).Listen(ctx, "tcp4", addr); err != nil {
			return fmt.Errorf("metadata on %s: %w", addr, err)
		}
		// And on the IPv6 link-local metadata address, where the kernel
		// has IPv6 (the address comes with the network's first IPv6
		// subnet: freebind).
		addr6 := net.JoinHostPort(dataplane.MetadataAddress6.WithZone(dataplane.RouterInternalLink).String(), "80")
		if ln, err := internalSocket(true, false).Listen(ctx, "tcp6", addr6); err == nil {
			s.metaLn6 = ln
		}
		// Forwarded queries leave from the namespace, by its routes (the
		// external leg), not bound to the internal one.
		if fwdConn, err = net.ListenPacket("udp", ":0"); err != nil {
			return fmt.Errorf("the DNS forwarder's socket: %w", err)
		}
		return nil
	})
	if err != nil {
		for _, pc := range pcs {
			pc.Close()
		}
		for _, c := range []net.Listener{tcp, tcp6, s.metaLn, s.metaLn6} {
			if c != nil {
				c.Close()
			}
		}
		if fwdConn != nil {
			fwdConn.Close()
		}
		s.ns.Close()
		return nil, err
	}
	s.fwd = newForwarder(fwdConn)
	for _, pc := range pcs {
		s.dnsUDP = append(s.dnsUDP, &dns.Server{PacketConn: pc, Handler: s})
	}
	s.dnsTCP = append(s.dnsTCP, &dns.Server{Listener: tcp, Handler: s})
	if tcp6 != nil {
		s.dnsTCP = append(s.dnsTCP, &dns.Server{Listener: tcp6, Handler: s})
	}
	s.meta = &http.Server{Handler: s.metaHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	servers := append(slices.Clone(s.dnsUDP), s.dnsTCP...)
	started := make(chan struct{}, len(servers))
	for _, srv := range servers {
		// Started, or failed to: either way once.
		var once sync.Once
		ready := func() { once.Do(func() { started <- struct{}{} }) }
		srv.NotifyStartedFunc = ready
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer ready()
			if err := srv.ActivateAndServe(); err != nil {
				slog.Warn("DNS stopped", "vni", vni, "err", err)
			}
		}()
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.meta.Serve(s.metaLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Warn("metadata stopped", "vni", vni, "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		s.fwd.run()
	}()
	if s.metaLn6 != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.meta.Serve(s.metaLn6); err != nil && !errors.Is(err, http.ErrServerClosed) {
				slog.Warn("metadata over IPv6 stopped", "vni", vni, "err", err)
			}
		}()
	}
	// Shutdown of a miekg/dns server that has not started yet fails and
	// leaves it running: wait for all.
	for range servers {
		<-started
	}
	return s, nil
}

func (s *networkServices) stop() {
	s.once.Do(func() {
		for _, srv := range append(slices.Clone(s.dnsUDP), s.dnsTCP...) {
			srv.Shutdown()
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.meta.Shutdown(ctx)
		cancel()
		s.meta.Close()
		s.fwd.close()
		s.wg.Wait()
		s.ns.Close()
	})
}
