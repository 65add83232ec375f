package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/dhcp"
	"hearth.dev/hearth/netns"
)

// dhcpServers runs the DHCP of every subnet of the networks this host
// carries: Hearth's own server (package dhcp), in the network's router
// namespace, bound to the router's leg on the bridge, whose gateway
// address it answers from. Every address is a static lease from IPAM
// (status.interfaces of this host's VMs): a server has no pool and says
// nothing to a MAC it has no lease for, so of the subnets sharing the
// leg only the NIC's own answers, and since the data plane drops DHCP on
// the VXLAN device, only the NIC's own host does: exactly one answer per
// request.
//
// A network's subnets share the leg and port 67: each server's socket of
// every address gets every broadcast (SO_REUSEADDR), which is how
// clients without an address ask; and each server also listens on its
// gateway address (dhcp.Config.ListenServerIP), so a renewal sent by
// unicast to a subnet's gateway reaches that subnet's server, which the
// kernel prefers to the sockets of every address.
type dhcpServers struct {
	plane dataplane.Plane
	mu    sync.Mutex
	// running by VNI and subnet key.
	running map[dhcpID]*subnetDHCP
}

type dhcpID struct {
	vni    uint32
	subnet string
}

type subnetDHCP struct {
	cfg    dhcpSubnet // as started, leases aside
	leases atomic.Pointer[map[string]netip.Addr]
	ns     netns.Handle // the router namespace it listens in
	leg    int          // the ifindex of the leg its sockets are bound to
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func newDHCPServers(plane dataplane.Plane) *dhcpServers {
	return &dhcpServers{plane: plane, running: map[dhcpID]*subnetDHCP{}}
}

// sync starts, updates and stops servers to match st, leaving alone the
// networks whose Apply failed (their router may not be there), and
// returns why servers could not start, by subnet key (the next sync tries
// again).
func (d *dhcpServers) sync(ctx context.Context, st netState, failed map[uint32]bool) map[string]error {
	d.mu.Lock()
	defer d.mu.Unlock()
	want := map[dhcpID]dhcpSubnet{}
	for vni, subnets := range st.Subnets {
		for _, s := range subnets {
			want[dhcpID{vni, s.Key}] = s
		}
	}
	for id, r := range d.running {
		w, ok := want[id]
		if ok && failed[id.vni] {
			continue
		}
		if !ok || !sameDHCPConfig(r.cfg, w) || !r.inNetns(d.plane.RouterNetns(id.vni)) {
			r.stop()
			delete(d.running, id)
		}
	}
	var errs map[string]error
	for id, w := range want {
		if failed[id.vni] {
			continue
		}
		if r := d.running[id]; r != nil {
			leases := w.Leases
			r.leases.Store(&leases)
			continue
		}
		r, err := startSubnetDHCP(ctx, d.plane.RouterNetns(id.vni), w)
		if err != nil {
			if errs == nil {
				errs = map[string]error{}
			}
			errs[w.Key] = err
			continue
		}
		d.running[id] = r
	}
	return errs
}

func (d *dhcpServers) stopAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, r := range d.running {
		r.stop()
		delete(d.running, id)
	}
}

func sameDHCPConfig(a, b dhcpSubnet) bool {
	a.Leases, b.Leases = nil, nil
	return reflect.DeepEqual(a, b)
}

func startSubnetDHCP(ctx context.Context, nsName string, s dhcpSubnet) (*subnetDHCP, error) {
	r := &subnetDHCP{cfg: s, done: make(chan struct{})}
	leases := s.Leases
	r.leases.Store(&leases)
	cfg := dhcp.Config{
		Interface: dataplane.RouterInternalLink, ServerIP: s.Gateway, ListenServerIP: true, Mode: dhcp.ModeFull,
		Subnet: s.CIDR, Router: s.Gateway, DNS: s.DNS, Domain: s.Domain, MTU: s.MTU,
		LeaseTime: time.Duration(s.Lease) * time.Second, Handler: (*leaseHandler)(r),
	}
	for _, rt := range s.Routes {
		cfg.Routes = append(cfg.Routes, dhcp.Route{Destination: rt.Destination, Gateway: rt.Gateway})
	}
	srv, err := dhcp.New(cfg)
	if err != nil {
		return nil, err
	}
	if r.ns, err = netns.Open(nsName); err != nil {
		return nil, fmt.Errorf("the router namespace: %w", err)
	}
	r.leg = routerLegIndex(r.ns)
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if err := netns.Do(r.ns, func() error { return srv.Listen(sctx) }); err != nil {
		cancel()
		r.ns.Close()
		return nil, err
	}
	r.cancel = cancel
	go func() {
		defer close(r.done)
		if err := srv.Serve(sctx); err != nil {
			slog.Warn("DHCP stopped", "subnet", s.Key, "err", err)
		}
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

// inNetns reports whether the server still listens in the namespace now
// named name, on the leg it was bound to (sameNetns).
func (r *subnetDHCP) inNetns(name string) bool { return sameNetns(r.ns, name, r.leg) }

func (r *subnetDHCP) stop() {
	r.once.Do(func() {
		r.cancel()
		<-r.done
		r.ns.Close()
	})
}

// leaseHandler answers the NICs with a static lease in the subnet and
// ignores every other client.
type leaseHandler subnetDHCP

func (h *leaseHandler) Decide(_ context.Context, req dhcp.Request) dhcp.Decision {
	ip, ok := (*h.leases.Load())[macString(req.MAC)]
	if !ok {
		return dhcp.Decision{Ignore: true}
	}
	return dhcp.Decision{IP: ip}
}

func (h *leaseHandler) Observe(context.Context, dhcp.Event) {}

func macString(m net.HardwareAddr) string { return m.String() }
