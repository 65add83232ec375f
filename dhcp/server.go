// Package dhcp is Hearth's DHCPv4 server and packet codec: one
// implementation for bare-metal provisioning, where it runs as the
// network's DHCP server ("full") or beside another one, answering only
// network-booting machines ("proxy", the ProxyDHCP of the PXE
// specification), and for tenant networks, where every address is a static
// lease chosen by IPAM.
//
// The server knows addresses and packets; what a machine should boot, and
// whether it may boot at all, is asked of a Handler for every request, and
// every step is told to it as an Event for the machine's boot timeline.
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Mode says how the server takes part in a network's DHCP.
type Mode string

const (
	// ModeFull: Hearth is the network's DHCP server; it hands out
	// addresses from its pool and the Handler's reservations.
	ModeFull Mode = "full"
	// ModeProxy: another DHCP server (a home router) hands out addresses;
	// Hearth answers only PXE clients, with boot information and no
	// address, on port 67 and on the PXE port 4011.
	ModeProxy Mode = "proxy"
	// ModeOff: no DHCP at all.
	ModeOff Mode = "off"
)

// Ports the server listens on.
const (
	ServerPort = 67
	ClientPort = 68
	PXEPort    = 4011
)

const (
	defaultLeaseTime = time.Hour
	// offerHold is how long an offered address waits for the client's
	// REQUEST before the pool may give it to someone else.
	offerHold = time.Minute
	// declineHold is how long an address a client DECLINEd (something
	// else answers ARP for it) stays out of the pool.
	declineHold = 10 * time.Minute
)

// Config describes one server on one interface.
type Config struct {
	// Interface the server binds to (SO_BINDTODEVICE): it hears and
	// answers nothing else.
	Interface string
	// ServerIP is this server's address on Interface: its server
	// identifier (option 54), and the default next server for boot files.
	ServerIP netip.Addr
	Mode     Mode
	// ListenServerIP also listens on ServerIP itself, for servers that
	// share Interface's port with others (each subnet of a tenant
	// network has one on its router's leg): broadcasts reach every one
	// of them, but a client's unicast to its server (a renewal, RFC 2131
	// 4.4.5) only one socket, which this makes the socket of the server
	// whose address it is sent to.
	ListenServerIP bool

	// Subnet, Router, DNS and Domain are what clients are told (full
	// mode). Subnet is required there: it is the mask clients get and the
	// range reservations must fall in.
	Subnet netip.Prefix
	Router netip.Addr
	DNS    []netip.Addr
	Domain string
	// MTU, when set, is the interface MTU clients are told (option 26):
	// a tenant network's, below the underlay's by VXLAN's overhead.
	MTU int
	// Routes, when set, are sent as classless static routes (option 121,
	// RFC 3442), led by a default route through Router: a client that
	// takes option 121 ignores option 3.
	Routes []Route
	// PoolStart and PoolEnd bound the dynamic pool, inclusive; both zero
	// for none (every client needs a reservation, as on a tenant
	// network). Keep reservations outside it: a reservation inside takes
	// its address from whichever client held it.
	PoolStart, PoolEnd netip.Addr
	// LeaseTime of bound leases; default one hour.
	LeaseTime time.Duration

	// Handler decides per request; nil serves plain DHCP (full mode
	// only).
	Handler Handler
	// LeaseFile is where dynamic leases persist across restarts, as a
	// journal of JSON lines rewritten when it grows; "" keeps them in
	// memory only.
	LeaseFile string
}

// Route is a classless static route: Destination through Gateway.
type Route struct {
	Destination netip.Prefix
	Gateway     netip.Addr
}

// classlessRoutes encodes option 121: per route the prefix length, the
// significant octets of the destination and the gateway.
func classlessRoutes(router netip.Addr, routes []Route) []byte {
	var b []byte
	add := func(dst netip.Prefix, gw netip.Addr) {
		a := dst.Masked().Addr().As4()
		g := gw.As4()
		b = append(b, byte(dst.Bits()))
		b = append(b, a[:(dst.Bits()+7)/8]...)
		b = append(b, g[:]...)
	}
	if router.IsValid() {
		add(netip.PrefixFrom(netip.IPv4Unspecified(), 0), router)
	}
	for _, r := range routes {
		add(r.Destination, r.Gateway)
	}
	return b
}

// Request is what a client asked, decoded.
type Request struct {
	MAC  net.HardwareAddr
	Type MessageType
	// Arch is the client system architecture (option 93, RFC 4578): 0
	// BIOS x86, 7 or 9 UEFI x86-64, 11 UEFI arm64, 16 UEFI x86-64 HTTP
	// boot, …; HasArch says whether the client sent it.
	Arch    uint16
	HasArch bool
	// UUID is the machine UUID of option 97, formatted as the machine
	// itself reports it.
	UUID        string
	VendorClass string // option 60: "PXEClient:Arch:00007:UNDI:003016"
	UserClass   string // option 77, entries joined with ",": "iPXE"
	// IsIPXE is true when the client is iPXE (option 175 present or user
	// class "iPXE"): it can fetch an HTTP script rather than a TFTP file.
	IsIPXE      bool
	Hostname    string     // option 12
	RequestedIP netip.Addr // option 50
	ClientIP    netip.Addr // ciaddr: set when renewing, informing and on port 4011
	Relay       netip.Addr // giaddr: the relay agent it came through
	Port        int        // 67, or 4011 for a PXE boot server request
}

// IsPXE reports whether the client is PXE firmware (or iPXE, which says
// the same), by its vendor class.
func (r *Request) IsPXE() bool { return strings.HasPrefix(r.VendorClass, "PXEClient") }

// Decision is what the Handler wants for a client.
type Decision struct {
	// Ignore: say nothing (an unknown machine, and policy says so).
	Ignore bool
	// IP is the client's reservation (full mode); zero takes one from
	// the pool. It must be a host address of the subnet.
	IP       netip.Addr
	Hostname string
	// NextServer (siaddr; default the server's own address) and BootFile
	// say what to boot: a TFTP file for BIOS or UEFI firmware, usually an
	// HTTP URL of a script for iPXE. No BootFile: no boot information (and
	// in proxy mode, no answer).
	NextServer netip.Addr
	BootFile   string
}

// Handler decides for each request and hears what was done.
type Handler interface {
	// Decide is called for every DISCOVER, REQUEST and INFORM Hearth
	// would answer, from several goroutines at once. It may take its
	// time (a lookup over the network) without holding up other clients.
	Decide(ctx context.Context, req Request) Decision
	// Observe is told every DISCOVER, REQUEST, RELEASE, DECLINE and
	// INFORM and what became of it (OFFER, ACK, NAK, a ProxyDHCP answer,
	// or silence and why), for the boot timeline. It must not block.
	Observe(ctx context.Context, ev Event)
}

// Event is one client message and what became of it.
type Event struct {
	Time    time.Time
	Request Request
	// Reply is what Hearth sent: MsgOffer, MsgAck or MsgNak; 0 when it said
	// nothing (RELEASE and DECLINE never get an answer).
	Reply MessageType
	// IP is the address offered, acknowledged, released or declined.
	IP         netip.Addr
	NextServer netip.Addr
	BootFile   string
	// Proxy is true for ProxyDHCP answers, which carry no address.
	Proxy bool
	// Reason says why Hearth said nothing, or NAK.
	Reason string
}

// Server is a DHCP server on one interface.
type Server struct {
	cfg     Config
	leases  *leaseTable
	now     func() time.Time
	workers int
	mask    [4]byte // of Subnet, for option 1
	ready   chan struct{}
	served  atomic.Bool

	mu    sync.Mutex
	conns []*net.UDPConn // opened by Listen, one per port
	ports []int
}

// New checks cfg and, in full mode, loads the lease file.
func New(cfg Config) (*Server, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.LeaseTime <= 0 {
		cfg.LeaseTime = defaultLeaseTime
	}
	s := &Server{
		cfg:     cfg,
		now:     time.Now,
		workers: max(4, 2*runtime.GOMAXPROCS(0)),
		ready:   make(chan struct{}),
	}
	if cfg.Subnet.IsValid() {
		copy(s.mask[:], net.CIDRMask(cfg.Subnet.Bits(), 32))
	}
	s.leases = newLeaseTable(&s.cfg, cfg.LeaseFile != "" && cfg.Mode == ModeFull)
	if cfg.LeaseFile != "" && cfg.Mode == ModeFull {
		if err := loadLeases(cfg.LeaseFile, s.leases, s.now()); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (c *Config) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("dhcp: config: "+format, args...)
	}
	switch c.Mode {
	case ModeOff:
		return nil
	case ModeFull, ModeProxy:
	default:
		return bad("mode %q: want %q, %q or %q", c.Mode, ModeFull, ModeProxy, ModeOff)
	}
	if c.Interface == "" {
		return bad("interface is empty: name the interface to serve")
	}
	if !c.ServerIP.Is4() {
		return bad("server IP %v: want this server's IPv4 address on %s", c.ServerIP, c.Interface)
	}
	if c.Mode == ModeProxy {
		if c.Handler == nil {
			return bad("proxy mode answers only with boot files, which a Handler chooses: set one")
		}
		return nil
	}
	if !c.Subnet.Addr().Is4() {
		return bad("subnet %v: want the IPv4 subnet served, such as 192.168.1.0/24", c.Subnet)
	}
	if !c.Subnet.Contains(c.ServerIP) {
		return bad("subnet %v does not contain server IP %v: the server must be on the subnet it serves", c.Subnet, c.ServerIP)
	}
	if c.Router.IsValid() && !c.Subnet.Contains(c.Router) {
		return bad("router %v is outside subnet %v: clients could not reach it", c.Router, c.Subnet)
	}
	for i, d := range c.DNS {
		if !d.Is4() {
			return bad("dns[%d] %v: want an IPv4 address", i, d)
		}
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return bad("mtu %d: want 68 to 65535, or 0 to send none", c.MTU)
	}
	for i, r := range c.Routes {
		if !r.Destination.Addr().Is4() || !r.Gateway.Is4() {
			return bad("routes[%d] %v via %v: want an IPv4 prefix and gateway", i, r.Destination, r.Gateway)
		}
	}
	switch {
	case !c.PoolStart.IsValid() && !c.PoolEnd.IsValid():
	case !c.Subnet.Contains(c.PoolStart) || !c.Subnet.Contains(c.PoolEnd):
		return bad("pool %v-%v is not inside subnet %v", c.PoolStart, c.PoolEnd, c.Subnet)
	case c.PoolEnd.Less(c.PoolStart):
		return bad("pool start %v is after pool end %v", c.PoolStart, c.PoolEnd)
	}
	return nil
}

// Ready is closed once Serve listens.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Leases returns the current bindings (full mode).
func (s *Server) Leases() []Lease { return s.leases.snapshot(s.now()) }

// LeaseOf returns the binding of the client with hardware address mac, if
// it holds one that has not expired (full mode).
func (s *Server) LeaseOf(mac net.HardwareAddr) (Lease, bool) {
	return s.leases.bound(keyOf(mac), s.now())
}

// Listen opens the server's sockets, in the network namespace of the
// calling thread. Serve calls it when it has not been called; call it
// first to open the sockets in a namespace the calling goroutine entered
// (a goroutine that then runs Serve may be on another thread). It fails
// when a socket cannot be opened.
func (s *Server) Listen(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns != nil || s.cfg.Mode == ModeOff {
		return nil
	}
	s.ports = []int{ServerPort}
	if s.cfg.Mode == ModeProxy {
		s.ports = append(s.ports, PXEPort)
	}
	var conns []*net.UDPConn
	for _, port := range s.ports {
		c, err := listenUDP(ctx, s.cfg.Interface, port)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return err
		}
		conns = append(conns, c)
	}
	if s.cfg.ListenServerIP && s.cfg.ServerIP.Is4() {
		c, err := listenUDPOn(ctx, s.cfg.Interface, s.cfg.ServerIP, ServerPort)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return err
		}
		conns = append(conns, c)
		s.ports = append(s.ports, ServerPort)
	}
	s.conns = conns
	return nil
}

// Serve answers clients until ctx ends, then writes out the leases and
// returns nil; it returns an error if it cannot listen. It may be called
// once; to serve again, make a new Server from the same Config (it reads
// the lease file back).
//
// Sockets are opened in the network namespace of the calling thread
// (unless Listen opened them already): to serve inside a namespace, call
// Listen or Serve from a goroutine locked to a thread that entered it.
// They keep working there whatever thread reads them afterwards.
func (s *Server) Serve(ctx context.Context) error {
	if s.served.Swap(true) {
		return errors.New("dhcp: Serve called twice")
	}
	if s.cfg.Mode == ModeOff {
		close(s.ready)
		<-ctx.Done()
		return nil
	}
	if err := s.Listen(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	conns, ports := s.conns, s.ports
	s.mu.Unlock()
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var file *leaseFile
	if s.cfg.LeaseFile != "" && s.cfg.Mode == ModeFull {
		f, err := openLeaseFile(s.cfg.LeaseFile, s.leases)
		if err != nil {
			return err
		}
		file = f
		s.leases.notify = make(chan struct{}, 1)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i, c := range conns {
		for range s.workers {
			w := newWorker(s, c, ports[i])
			wg.Go(func() { w.run(ctx) })
		}
	}
	var writeErr error
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		if file != nil {
			writeErr = file.run(ctx, s.leases)
		}
	}()
	close(s.ready)
	<-ctx.Done()
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	<-writerDone
	return writeErr
}

func (s *Server) observe(ctx context.Context, ev *Event) {
	if s.cfg.Handler != nil {
		s.cfg.Handler.Observe(ctx, *ev)
	}
}

// worker reads and answers packets with buffers of its own, so the hot
// path allocates only what the Handler is given.
type worker struct {
	s      *Server
	conn   *net.UDPConn
	port   int
	buf    []byte
	in     Packet
	out    Packet
	outBuf []byte
}

func newWorker(s *Server, c *net.UDPConn, port int) *worker {
	return &worker{s: s, conn: c, port: port, buf: make([]byte, 4096), outBuf: make([]byte, 0, 1024)}
}

func (w *worker) run(ctx context.Context) {
	for {
		n, from, err := w.conn.ReadFromUDPAddrPort(w.buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient error; the socket is still good
		}
		if err := w.in.Unmarshal(w.buf[:n]); err != nil {
			continue
		}
		w.handle(ctx, from)
	}
}

func (w *worker) handle(ctx context.Context, from netip.AddrPort) {
	q := &w.in
	if q.Op != BootRequest || q.HLen == 0 || q.HLen > 16 {
		return
	}
	t := q.MessageType()
	if t == 0 {
		return // BOOTP: not served
	}
	ev := Event{Request: Request{Type: t, Port: w.port}}
	if w.s.cfg.Handler != nil {
		ev.Request = decodeRequest(q, w.port)
	}
	switch {
	case w.port == PXEPort:
		w.pxeRequest(ctx, &ev, from)
	case w.s.cfg.Mode == ModeProxy:
		w.proxyDiscover(ctx, &ev)
	default:
		w.full(ctx, &ev)
	}
	if w.s.cfg.Handler != nil {
		ev.Time = w.s.now()
		w.s.observe(ctx, &ev)
	}
}

// decodeRequest is what the Handler is given.
func decodeRequest(q *Packet, port int) Request {
	o := q.Options
	r := Request{
		MAC:         append(net.HardwareAddr(nil), q.HardwareAddr()...),
		Type:        o.MessageType(),
		VendorClass: o.String(OptVendorClass),
		Hostname:    o.String(OptHostname),
		Port:        port,
	}
	r.Arch, r.HasArch = o.ClientArch()
	r.UUID, _ = o.ClientUUID()
	r.RequestedIP, _ = o.IP(OptRequestedIP)
	classes := o.UserClasses()
	r.UserClass = strings.Join(classes, ",")
	r.IsIPXE = o.Has(OptIPXEEncap)
	for _, c := range classes {
		r.IsIPXE = r.IsIPXE || c == "iPXE"
	}
	if !q.CIAddr.IsUnspecified() {
		r.ClientIP = q.CIAddr
	}
	if !q.GIAddr.IsUnspecified() {
		r.Relay = q.GIAddr
	}
	return r
}

func (w *worker) decide(ctx context.Context, ev *Event) Decision {
	if w.s.cfg.Handler == nil {
		return Decision{}
	}
	return w.s.cfg.Handler.Decide(ctx, ev.Request)
}

// full answers a client in full mode (RFC 2131 section 4.3).
func (w *worker) full(ctx context.Context, ev *Event) {
	q := &w.in
	s := w.s
	hw := keyOf(q.HardwareAddr())
	sid, hasSID := q.Options.IP(OptServerID)
	if hasSID && sid != s.cfg.ServerIP {
		if ev.Request.Type == MsgRequest {
			s.leases.cancelOffer(hw) // it took another server's offer
		}
		ev.Reason = "addressed to server " + sid.String()
		return
	}
	switch ev.Request.Type {
	case MsgDiscover, MsgRequest:
		d := w.decide(ctx, ev)
		if d.Ignore {
			ev.Reason = "ignored by the handler"
			return
		}
		if d.IP.IsValid() && (!d.IP.Is4() || !s.leases.usable(u32(d.IP))) {
			ev.Reason = "reservation " + d.IP.String() + " is not a host address of subnet " + s.cfg.Subnet.String()
			return
		}
		now := s.now()
		if ev.Request.Type == MsgDiscover {
			requested, _ := q.Options.IP(OptRequestedIP)
			ip, ok := s.leases.offer(hw, d.IP, requested, d.Hostname, now)
			if !ok {
				ev.Reason = "no free address in the pool"
				return
			}
			w.answer(ev, MsgOffer, ip, &d, true)
			return
		}
		want, ok := q.Options.IP(OptRequestedIP)
		if !ok {
			want = q.CIAddr
		}
		hostname := d.Hostname
		if hostname == "" && q.Options.Has(OptHostname) {
			hostname = q.Options.String(OptHostname)
		}
		if _, nak := s.leases.ack(hw, want, d.IP, hostname, now); nak != "" {
			ev.Reason = nak
			w.nak(ev, nak)
			return
		}
		w.answer(ev, MsgAck, want, &d, true)
	case MsgInform:
		d := w.decide(ctx, ev)
		if d.Ignore {
			ev.Reason = "ignored by the handler"
			return
		}
		w.answer(ev, MsgAck, netip.Addr{}, &d, false)
	case MsgRelease:
		ev.IP = q.CIAddr
		if !s.leases.release(hw, q.CIAddr) {
			ev.Reason = "no lease on " + q.CIAddr.String() + " for this client"
		}
	case MsgDecline:
		ev.IP, _ = q.Options.IP(OptRequestedIP)
		if !s.leases.decline(hw, ev.IP, s.now()) {
			ev.Reason = "no lease on " + ev.IP.String() + " for this client"
		}
	default:
		ev.Reason = "not a client message"
	}
}

// proxyDiscover answers a PXE client's DISCOVER beside another DHCP
// server: boot information, no address (PXE specification 2.1, section
// 2.2; dnsmasq's ProxyDHCP does the same).
func (w *worker) proxyDiscover(ctx context.Context, ev *Event) {
	if ev.Request.Type != MsgDiscover {
		ev.Reason = "proxy mode answers only DISCOVER on port 67"
		return
	}
	if !strings.HasPrefix(w.in.Options.String(OptVendorClass), "PXEClient") {
		ev.Reason = "not a PXE client"
		return
	}
	d := w.decide(ctx, ev)
	switch {
	case d.Ignore:
		ev.Reason = "ignored by the handler"
	case d.BootFile == "":
		ev.Reason = "no boot file for this client"
	default:
		w.proxyAnswer(ev, MsgOffer, &d)
	}
}

// pxeRequest answers the REQUEST that PXE firmware (UEFI in particular)
// sends to the ProxyDHCP server on port 4011 for its boot file.
func (w *worker) pxeRequest(ctx context.Context, ev *Event, from netip.AddrPort) {
	if ev.Request.Type != MsgRequest && ev.Request.Type != MsgInform {
		ev.Reason = "port 4011 answers only REQUEST"
		return
	}
	d := w.decide(ctx, ev)
	switch {
	case d.Ignore:
		ev.Reason = "ignored by the handler"
	case d.BootFile == "":
		ev.Reason = "no boot file for this client"
	default:
		w.proxyAnswer(ev, MsgAck, &d)
		w.sendTo(ev, from)
	}
}

// startReply begins the answer to w.in.
func (w *worker) startReply(t MessageType) *Packet {
	q, r := &w.in, &w.out
	r.Reset()
	r.Op = BootReply
	r.HType, r.HLen, r.XID, r.Flags = q.HType, q.HLen, q.XID, q.Flags
	r.CHAddr = q.CHAddr
	r.GIAddr = q.GIAddr
	r.SetMessageType(t)
	r.SetIPs(OptServerID, w.s.cfg.ServerIP)
	return r
}

// answer sends an OFFER or ACK with the network's configuration.
func (w *worker) answer(ev *Event, t MessageType, yiaddr netip.Addr, d *Decision, lease bool) {
	s := w.s
	r := w.startReply(t)
	r.YIAddr = yiaddr
	if t == MsgAck {
		r.CIAddr = w.in.CIAddr
	}
	if lease {
		secs := uint32(s.cfg.LeaseTime / time.Second)
		r.SetUint32(OptLeaseTime, secs)
		r.SetUint32(OptRenewalTime, secs/2)
		r.SetUint32(OptRebindingTime, secs/8*7)
	}
	if s.cfg.Subnet.IsValid() {
		r.SetOption(OptSubnetMask, s.mask[:])
	}
	if s.cfg.Router.IsValid() {
		r.SetIPs(OptRouter, s.cfg.Router)
	}
	if len(s.cfg.DNS) > 0 {
		r.SetIPs(OptDNS, s.cfg.DNS...)
	}
	if s.cfg.Domain != "" {
		r.SetString(OptDomainName, s.cfg.Domain)
	}
	if s.cfg.MTU > 0 {
		r.SetOption(OptInterfaceMTU, []byte{byte(s.cfg.MTU >> 8), byte(s.cfg.MTU)})
	}
	if len(s.cfg.Routes) > 0 {
		r.SetOption(OptClasslessRoutes, classlessRoutes(s.cfg.Router, s.cfg.Routes))
	}
	if d.Hostname != "" {
		r.SetString(OptHostname, d.Hostname)
	}
	w.bootInfo(ev, d)
	ev.Reply, ev.IP = t, yiaddr
	w.send(ev)
}

// bootInfo adds the boot file and next server: in the file and siaddr
// fields, which all firmware reads, and in options 66 and 67 when the
// client asks for them or the name does not fit the field.
func (w *worker) bootInfo(ev *Event, d *Decision) {
	r := &w.out
	next := d.NextServer
	if !next.IsValid() && d.BootFile != "" {
		next = w.s.cfg.ServerIP
	}
	if next.IsValid() {
		r.SIAddr = next
		ev.NextServer = next
		if w.in.Options.Requested(OptTFTPServerName) {
			r.SetString(OptTFTPServerName, next.String())
		}
	}
	if d.BootFile != "" {
		ev.BootFile = d.BootFile
		fits := r.SetFile(d.BootFile) == nil
		if !fits || w.in.Options.Requested(OptBootFileName) {
			r.SetString(OptBootFileName, d.BootFile)
		}
	}
}

// proxyAnswer sends ProxyDHCP boot information: no address, option 60
// "PXEClient" (which marks it as PXE information for the firmware), the
// client's UUID echoed, and PXE options telling the firmware to take the
// boot file as given rather than discover boot servers.
func (w *worker) proxyAnswer(ev *Event, t MessageType, d *Decision) {
	q := &w.in
	r := w.startReply(t)
	if t == MsgAck {
		r.CIAddr = q.CIAddr
	}
	r.SetString(OptVendorClass, "PXEClient")
	if uuid, ok := q.Options.Get(OptClientMachineID); ok {
		r.SetOption(OptClientMachineID, uuid)
	}
	var vendor [16]byte
	pxe := append(vendor[:0], PXEDiscoveryControl, 1, PXEUseBootFile)
	// A boot server request names the boot item it wants; the answer
	// echoes it (PXE 2.1, section 2.2.4).
	if enc, ok := q.Options.Get(OptVendorSpecific); ok {
		if item, ok := SubOptions(enc).Get(PXEBootItem); ok && len(item) == 4 {
			pxe = append(pxe, PXEBootItem, 4)
			pxe = append(pxe, item...)
		}
	}
	pxe = append(pxe, PXEEnd)
	r.SetOption(OptVendorSpecific, pxe)
	w.bootInfo(ev, d)
	ev.Reply, ev.Proxy = t, true
	if w.port != PXEPort {
		w.send(ev)
	}
}

func (w *worker) nak(ev *Event, msg string) {
	r := w.startReply(MsgNak)
	r.SetString(OptMessage, msg)
	if !w.in.GIAddr.IsUnspecified() {
		r.Flags |= FlagBroadcast
	}
	ev.Reply = MsgNak
	w.send(ev)
}

var broadcast = netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), ClientPort)

// send delivers w.out where RFC 2131 section 4.1 says: to the relay when
// relayed, to the client's address when it has one, else broadcast. A
// client without an address listens on a packet socket (udhcpc, dhclient)
// or accepts any frame (firmware), so a broadcast on the bound interface
// reaches it without ARP.
func (w *worker) send(ev *Event) {
	q := &w.in
	to := broadcast
	switch {
	case !q.GIAddr.IsUnspecified():
		to = netip.AddrPortFrom(q.GIAddr, ServerPort)
	case ev.Reply != MsgNak && !q.CIAddr.IsUnspecified():
		to = netip.AddrPortFrom(q.CIAddr, ClientPort)
	}
	w.sendTo(ev, to)
}

func (w *worker) sendTo(ev *Event, to netip.AddrPort) {
	w.outBuf = w.out.AppendTo(w.outBuf[:0])
	if _, err := w.conn.WriteToUDPAddrPort(w.outBuf, to); err != nil {
		ev.Reason = "sending to " + to.String() + ": " + err.Error()
	}
}
