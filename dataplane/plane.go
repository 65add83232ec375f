package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"hearth.dev/hearth/netns"
)

// Plane is a host's network data plane. It is declarative: Apply is given
// the host's whole desired state and converges the host to it, and
// applying the same state again changes nothing.
type Plane interface {
	// Apply converges the host to s. It first checks s (a FieldErrors
	// names every problem, and nothing changes); then each network is
	// converged on its own, and the error joins a *NetworkError for each
	// network that failed, the others being done. Networks s does not
	// name are removed from the host.
	Apply(ctx context.Context, s HostState) error
	// RouterNetns names the network namespace of a network's router, where
	// the network's DHCP, DNS and metadata services run (netns.DoNamed).
	// It exists once an Apply has made the network.
	RouterNetns(vni uint32) string
	// Changes receives a value when something the Plane made was changed
	// or removed by someone else (a link deleted, an FDB entry, a route,
	// an nftables rule). The owner should call Apply soon after. It never
	// blocks the Plane: one pending value stands for any number of
	// changes.
	Changes() <-chan struct{}
	// Close releases the Plane's handles and stops watching. It changes
	// nothing on the host: a Plane started later adopts what is there.
	Close() error
}

// NetworkError is why one network could not be converged.
type NetworkError struct {
	Network string
	VNI     uint32
	Err     error
}

func (e *NetworkError) Error() string {
	return fmt.Sprintf("network %s (VNI %d): %v", e.Network, e.VNI, e.Err)
}

func (e *NetworkError) Unwrap() error { return e.Err }

// Config configures a Linux Plane.
type Config struct {
	// HostNetns is the path of the network namespace the Plane manages
	// (empty: the process's own). Tests and the sandbox give each
	// simulated host its own.
	HostNetns string
	// NetnsPrefix starts the names of the router namespaces the Plane
	// makes (default "hearth-"; a router is PREFIX + "router-" + VNI).
	// Router namespaces are named in the process's /run/netns, so two
	// Planes sharing one (tests) need different prefixes.
	NetnsPrefix string
	// VXLANPort is the UDP port of VXLAN on the underlay (default 4789,
	// IANA's).
	VXLANPort int
	// ResyncInterval is how often an Apply reads the whole host again
	// instead of trusting what the Plane knows (default one minute;
	// negative: only at the first Apply and after lost events). Between
	// resyncs, what others change is seen through netlink events.
	ResyncInterval time.Duration
	// Logf, when set, gets a line for every change the Plane makes.
	Logf func(format string, args ...any)
}

// Linux is the Plane of a Linux host: netlink and nftables.
type Linux struct {
	cfg  Config
	host netns.Handle
	nl   *netlink.Handle
	nft  *nftables.Conn

	changes   chan struct{}
	garps     sync.WaitGroup
	closeOnce sync.Once
	watch     *watcher

	mu     sync.Mutex
	closed bool
	// ul is the underlay as last read; it is read again when its device,
	// address or link changes.
	ul underlayInfo
	// known is each network as last converged, and dirty the networks an
	// event says may have drifted since.
	known map[uint32]*applied
	dirty map[uint32]bool
	// full makes the next Apply read everything and remove orphans; set
	// at start, after lost events, and every ResyncInterval.
	full      bool
	lastFull  time.Time
	hostDirty bool
	hostKnown []string // rule ids of hostTable as last written, nil: none
	routers   map[uint32]*routerNS
	portNet   map[string]uint32 // port link → VNI of its network
	ifnames   map[int]string    // host ifindex → name, for events
	evbuf     []byte            // for reading events, under mu
	// sgKnown is hearth-sg's ids as last written (secgroups.go); sgDirty
	// makes the next Apply read it.
	sgKnown []string
	sgDirty bool
}

type applied struct {
	spec  Network
	model *netModel
}

type underlayInfo struct {
	device  string
	address netip.Addr
	index   int
	mtu     int
	valid   bool
}

var _ Plane = (*Linux)(nil)

// New starts a Plane on a host. It changes nothing until Apply.
func New(cfg Config) (p *Linux, err error) {
	if cfg.NetnsPrefix == "" {
		cfg.NetnsPrefix = DefaultNetnsPrefix
	}
	if err := netns.ValidName(cfg.NetnsPrefix + routerNetnsInfix + "1"); err != nil {
		return nil, fmt.Errorf("dataplane: netns prefix: %w", err)
	}
	if cfg.VXLANPort == 0 {
		cfg.VXLANPort = 4789
	}
	if cfg.ResyncInterval == 0 {
		cfg.ResyncInterval = time.Minute
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("dataplane: managing a host's network needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)")
	}
	p = &Linux{
		cfg:     cfg,
		host:    netns.None(),
		changes: make(chan struct{}, 1),
		known:   map[uint32]*applied{},
		dirty:   map[uint32]bool{},
		full:    true,
		routers: map[uint32]*routerNS{},
		portNet: map[string]uint32{},
		ifnames: map[int]string{},
		evbuf:   make([]byte, 1<<16),
	}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if cfg.HostNetns == "" {
		p.host, err = netns.Current()
	} else {
		p.host, err = netns.OpenPath(cfg.HostNetns)
	}
	if err != nil {
		return nil, fmt.Errorf("dataplane: %w", err)
	}
	err = netns.Do(p.host, func() error {
		var err error
		if p.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return err
		}
		p.nft, err = nftables.New(nftables.AsLasting(), nftables.WithSockOptions(largeSendBuffer))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dataplane: netlink in the host namespace: %w", err)
	}
	if p.watch, err = newWatcher(p); err != nil {
		return nil, fmt.Errorf("dataplane: watching the host: %w", err)
	}
	return p, nil
}

// RouterNetns implements Plane.
func (p *Linux) RouterNetns(vni uint32) string { return routerNetns(p.cfg.NetnsPrefix, vni) }

// Changes implements Plane.
func (p *Linux) Changes() <-chan struct{} { return p.changes }

func (p *Linux) signal() {
	select {
	case p.changes <- struct{}{}:
	default:
	}
}

func (p *Linux) logf(format string, args ...any) {
	if p.cfg.Logf != nil {
		p.cfg.Logf(format, args...)
	}
}

// Close implements Plane. Closing twice does nothing more.
func (p *Linux) Close() error {
	p.closeOnce.Do(p.close)
	return nil
}

func (p *Linux) close() {
	if p.watch != nil {
		p.watch.stop()
	}
	p.garps.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for vni, r := range p.routers {
		r.close()
		delete(p.routers, vni)
	}
	if p.nl != nil {
		p.nl.Close()
	}
	if p.nft != nil {
		p.nft.CloseLasting()
	}
	if p.host.IsOpen() {
		p.host.Close()
	}
}

// Apply implements Plane.
func (p *Linux) Apply(ctx context.Context, s HostState) error {
	if err := s.Validate(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("dataplane: Apply on a closed Plane")
	}
	if err := p.readUnderlay(s.Underlay); err != nil {
		return err
	}
	state := s.normalized(p.ul.mtu)
	limits := p.checkAgainstHost(&state)

	full := p.full || p.cfg.ResyncInterval > 0 && time.Since(p.lastFull) > p.cfg.ResyncInterval
	// Cleared now, so that events lost during this Apply set it again.
	p.full = false
	desired := map[uint32]*Network{}
	for i := range state.Networks {
		desired[state.Networks[i].VNI] = &state.Networks[i]
	}
	touched := map[uint32]bool{}
	var errs []error

	// Networks no longer wanted go first, freeing their names.
	gone := map[uint32][]string{}
	for vni, k := range p.known {
		if desired[vni] == nil {
			touched[vni] = true
			for _, port := range k.spec.Ports {
				gone[vni] = append(gone[vni], port.Name)
			}
			if gone[vni] == nil {
				gone[vni] = []string{}
			}
		}
	}
	failed := p.teardown(gone)
	for _, vni := range sortedKeys(gone) {
		if err := failed[vni]; err != nil {
			errs = append(errs, &NetworkError{Network: p.known[vni].spec.Name, VNI: vni, Err: err})
			continue
		}
		delete(p.known, vni)
		delete(p.dirty, vni)
	}
	var links map[string]netlink.Link
	hostOK := true
	if full {
		var err error
		if links, err = p.sweep(desired, touched); err != nil {
			errs = append(errs, err)
			hostOK = false
		}
	}
	touched[0] = true // the host table
	if err := p.convergeHostTable(len(desired) > 0, full); err != nil {
		errs = append(errs, err)
		hostOK = false
	}
	sgErr := p.convergeSG(&state, full)
	if sgErr != nil {
		errs = append(errs, sgErr)
	}
	p.drain(touched)

	for i := range state.Networks {
		n := &state.Networks[i]
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if msg, bad := limits[n.VNI]; bad {
			errs = append(errs, &NetworkError{Network: n.Name, VNI: n.VNI, Err: errors.New(msg)})
			continue
		}
		k := p.known[n.VNI]
		if !full && !p.dirty[n.VNI] && k != nil && reflect.DeepEqual(k.spec, *n) {
			continue
		}
		if sgErr != nil && filtered(n) {
			// Its ports' rules are not in force: better no port
			// than an unfiltered one.
			p.dirty[n.VNI] = true
			errs = append(errs, &NetworkError{Network: n.Name, VNI: n.VNI, Err: errors.New("not converged: its security group rules could not be written")})
			continue
		}
		touched[n.VNI] = true
		model, err := p.convergeNetwork(n, k, full || p.dirty[n.VNI], links)
		if err == nil && filtered(n) {
			err = p.bridgeNetfilter(n.VNI)
		}
		p.drain(touched)
		if err != nil {
			p.dirty[n.VNI] = true
			errs = append(errs, &NetworkError{Network: n.Name, VNI: n.VNI, Err: err})
			continue
		}
		if k != nil {
			for _, port := range k.spec.Ports {
				delete(p.portNet, port.Name)
			}
		}
		for _, port := range n.Ports {
			p.portNet[port.Name] = n.VNI
		}
		p.known[n.VNI] = &applied{spec: *n, model: model}
		delete(p.dirty, n.VNI)
	}
	p.drain(touched)
	// A network that failed is dirty and read again next time on its
	// own; only a failed sweep makes the next Apply read everything.
	if full {
		if hostOK {
			p.lastFull = time.Now()
		} else {
			p.full = true
		}
	}
	return errors.Join(errs...)
}

// readUnderlay reads the underlay link when the state names another one
// or an event said it changed.
func (p *Linux) readUnderlay(u Underlay) error {
	if p.ul.valid && p.ul.device == u.Device && p.ul.address == u.Address {
		return nil
	}
	l, err := p.nl.LinkByName(u.Device)
	if err != nil {
		return FieldErrors{{Field: "underlay.device", Detail: fmt.Sprintf("no link %s on this host: %v", u.Device, err)}}
	}
	addrs, err := p.nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("dataplane: reading the addresses of %s: %w", u.Device, err)
	}
	found := false
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == u.Address {
			found = true
		}
	}
	if !found {
		return FieldErrors{{Field: "underlay.address", Detail: fmt.Sprintf("%s is not an address of %s", u.Address, u.Device)}}
	}
	if p.ul.valid && p.ul.index != l.Attrs().Index {
		p.full = true // the VXLAN devices were bound to another link
	}
	p.ul = underlayInfo{device: u.Device, address: u.Address, index: l.Attrs().Index, mtu: l.Attrs().MTU, valid: true}
	p.ifnames[l.Attrs().Index] = u.Device
	return nil
}

// checkAgainstHost returns, by VNI, why a network cannot be made on this
// host as it is (an MTU the underlay cannot carry).
func (p *Linux) checkAgainstHost(s *HostState) map[uint32]string {
	bad := map[uint32]string{}
	max := p.ul.mtu - vxlanOverhead(s.Underlay.Address)
	for _, n := range s.Networks {
		if n.MTU > max {
			bad[n.VNI] = fmt.Sprintf("mtu: %d does not fit the underlay %s (MTU %d) with VXLAN's %d bytes: at most %d",
				n.MTU, p.ul.device, p.ul.mtu, vxlanOverhead(s.Underlay.Address), max)
		} else if n.MTU < minMTU {
			bad[n.VNI] = fmt.Sprintf("mtu: %d is below %d (the underlay %s has MTU %d)", n.MTU, minMTU, p.ul.device, p.ul.mtu)
		}
		for _, sn := range n.Subnets {
			if sn.CIDR.Addr().Is6() && n.MTU < 1280 {
				bad[n.VNI] = fmt.Sprintf("mtu: %d is below IPv6's 1280 (subnet %s)", n.MTU, sn.CIDR)
			}
		}
	}
	return bad
}

// teardown removes networks: their links (and their ports', by name), their
// tables and their routers. It returns what failed, by VNI.
func (p *Linux) teardown(nets map[uint32][]string) map[uint32]error {
	links := func(vni uint32) []string {
		return append([]string{routerLink(vni), externalLeg(vni), vxlanName(vni), bridgeName(vni)}, nets[vni]...)
	}
	var all []string
	for vni, ports := range nets {
		all = append(all, links(vni)...)
		for _, port := range ports {
			delete(p.portNet, port)
		}
	}
	batch := p.deleteLinks(all)
	failed := map[uint32]error{}
	for vni := range nets {
		var errs []error
		if batch != nil {
			// Find whose links would not go.
			errs = append(errs, p.deleteLinks(links(vni)))
		}
		if err := deleteL2(p.nft, vni); err != nil {
			errs = append(errs, err)
		}
		if err := p.deleteRouter(vni); err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			failed[vni] = err
			continue
		}
		p.logf("dataplane: removed network VNI %d", vni)
	}
	return failed
}

// doomedGroup is the device group links are put in just before they
// are deleted together: Linux frees a device only after an RCU grace
// period (tens of milliseconds on a busy host), one per request, so a
// thousand links deleted one by one take half a minute, and one request
// for a group of them one grace period. The number is Hearth's
// ("hear"); nothing should use it.
const doomedGroup = 0x68656172

// deleteLinks deletes the host links named that exist.
func (p *Linux) deleteLinks(names []string) error {
	var doomed []netlink.Link
	for _, name := range names {
		l, err := p.nl.LinkByName(name)
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return fmt.Errorf("link %s: %w", name, err)
		}
		doomed = append(doomed, l)
	}
	if len(doomed) > 1 {
		err := func() error {
			for _, l := range doomed {
				if err := p.nl.LinkSetGroup(l, doomedGroup); err != nil {
					return err
				}
			}
			return netns.Do(p.host, func() error {
				req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
				req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
				req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(doomedGroup)))
				_, err := req.Execute(unix.NETLINK_ROUTE, 0)
				return err
			})
		}()
		if err == nil {
			p.logf("dataplane: deleted links %v", names)
			return nil
		}
		p.logf("dataplane: deleting %d links at once: %v; one by one", len(doomed), err)
	}
	var errs []error
	for _, l := range doomed {
		if err := p.nl.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting link %s: %w", l.Attrs().Name, err))
			continue
		}
		p.logf("dataplane: deleted link %s", l.Attrs().Name)
	}
	return errors.Join(errs...)
}

// sweep removes what is Hearth's on the host but belongs to no wanted
// network (left by a Plane before this one, or made by hand with a
// Hearth name), and returns the host's links.
func (p *Linux) sweep(desired map[uint32]*Network, touched map[uint32]bool) (map[string]netlink.Link, error) {
	all, err := p.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	wanted := map[string]bool{}
	for vni, n := range desired {
		for _, name := range []string{bridgeName(vni), vxlanName(vni), routerLink(vni)} {
			wanted[name] = true
		}
		if n.External != nil {
			wanted[externalLeg(vni)] = true
		}
		for _, port := range n.Ports {
			wanted[port.Name] = true
		}
	}
	links := map[string]netlink.Link{}
	var errs []error
	var stray []string
	for _, l := range all {
		name := l.Attrs().Name
		p.ifnames[l.Attrs().Index] = name
		vni, _, ours := ownedLink(name)
		if !ours || wanted[name] {
			links[name] = l
			continue
		}
		touched[vni] = true
		stray = append(stray, name)
	}
	if err := p.deleteLinks(stray); err != nil {
		errs = append(errs, fmt.Errorf("deleting stray links: %w", err))
	}
	names, err := netns.List()
	if err != nil {
		errs = append(errs, err)
	}
	for _, name := range names {
		if vni, ok := routerNetnsVNI(p.cfg.NetnsPrefix, name); ok && desired[vni] == nil {
			touched[vni] = true
			if err := p.deleteRouter(vni); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(desired) > 0 {
		// Chains and map elements of networks no longer here (with
		// none, convergeHostTable deletes the whole table).
		stale := map[uint32]bool{}
		if chains, err := p.nft.ListChainsOfTableFamily(nftables.TableFamilyBridge); err == nil {
			for _, ch := range chains {
				if vni, ok := netChainVNI(ch.Name); ok && ch.Table.Name == hostTable && desired[vni] == nil {
					stale[vni] = true
				}
			}
		}
		if maps, err := readMaps(p.nft); err == nil {
			for _, m := range maps {
				for dev := range m {
					if vni, kind, ok := ownedLink(dev); ok && kind == kindVXLAN && desired[vni] == nil {
						stale[vni] = true
					}
				}
			}
		}
		for vni := range stale {
			touched[vni] = true
			if err := deleteL2(p.nft, vni); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return links, errors.Join(errs...)
}

// convergeHostTable keeps hostTable while the host carries networks
// (and deletes it, with every network's chains, once it carries none).
// When it has to make the table or its maps anew, the networks' chains
// and map elements are gone: every network is read again.
func (p *Linux) convergeHostTable(want, read bool) error {
	var ids []string
	if want {
		ids = hostRules().hostIDs()
	}
	have := p.hostKnown
	if read || p.hostDirty {
		var err error
		if have, err = readHostTable(p.nft); err != nil {
			return err
		}
	}
	if sameIDs(ids, have) {
		p.hostKnown, p.hostDirty = have, false
		return nil
	}
	var err error
	switch {
	case !want:
		err = deleteTable(p.nft, hostTable, nftables.TableFamilyBridge)
	case have == nil:
		err = writeHostTable(p.nft)
	default:
		err = fixHostChains(p.nft, have)
	}
	if err != nil {
		p.hostDirty = true
		return err
	}
	if want && (have == nil || slices.ContainsFunc(hostMaps, func(m string) bool { return !containsString(have, "map:"+m) })) {
		for vni := range p.known {
			p.dirty[vni] = true
		}
	}
	p.logf("dataplane: wrote nftables table %s", hostTable)
	p.hostKnown, p.hostDirty = ids, false
	return nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

func sortedKeys[V any](m map[uint32]V) []uint32 {
	keys := make([]uint32, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sortStrings(s []string) { slices.Sort(s) }
