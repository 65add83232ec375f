package agent

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	api "hearth.dev/hearth/api/v1alpha1"
)

// A network's DNS (github.com/miekg/dns) answers on port 53 of every
// gateway of the network, in its router namespace, from a dnsZone:
//
//   - NAME and NAME.DOMAIN for every VM with a NIC on the network (on any
//     host: Network.status.ports, and this host's VMs at once from their
//     status.interfaces), with the NICs' addresses (A and AAAA);
//   - FIP.DOMAIN for every associated floating IP of the tenant whose
//     target is on the network, with its external address;
//   - reverse (PTR) names of all of those addresses;
//
// DOMAIN is the network's spec.dnsDomain, default NETWORK.TENANT.hearth.
// Names under DOMAIN, under "hearth." (another network's or tenant's
// domain), single labels and reverse names of the network's subnets that
// it does not know are answered NXDOMAIN here and never leave the router:
// a tenant's DNS answers with its own network's names only, and asks
// nobody about the others. Every other name is forwarded to the
// upstreams: the ExternalNetwork's spec.dnsServers (default its gateway)
// for a network that routes through one, else the subnets'
// spec.dnsServers. Answers carry a TTL of dnsTTL seconds so that guests
// see VMs come and go within a second.
const dnsTTL = 1

// dnsZone is what one network's DNS answers itself.
type dnsZone struct {
	// Domain is the network's domain, lowercase and fully qualified
	// ("web.red.hearth.").
	Domain string
	// Names are the fully qualified names and their addresses, sorted.
	Names map[string][]netip.Addr
	// PTR are the reverse names and the name they point at.
	PTR map[string]string
	// Reverse are the prefixes whose reverse names are the zone's own
	// (the subnets and the floating addresses): unknown ones are
	// NXDOMAIN, not forwarded.
	Reverse []netip.Prefix
	// Upstreams get every other question.
	Upstreams []netip.AddrPort
}

// networkDomain is the domain a network's VMs resolve under.
func networkDomain(n *api.Network) string { return api.NetworkDomain(n) }

// dnsZones computes the zone of every network in st from the same inputs
// as the state. It is pure: table-tested without root.
func dnsZones(in netInputs, st netState) map[uint32]*dnsZone {
	out := map[uint32]*dnsZone{}
	networks := map[string]*api.Network{}
	for _, n := range in.Networks {
		networks[n.Metadata.Tenant+"/"+n.Metadata.Name] = n
	}
	externals := map[string]*api.ExternalNetwork{}
	for _, x := range in.ExternalNetworks {
		externals[x.Metadata.Name] = x
	}
	for key, vni := range st.VNIs {
		n := networks[key]
		if n == nil {
			continue
		}
		tenant := n.Metadata.Tenant
		domain := networkDomain(n) + "."
		z := &dnsZone{Domain: domain, Names: map[string][]netip.Addr{}, PTR: map[string]string{}}
		add := func(name string, a netip.Addr) {
			fq := name + "." + domain
			if !slices.Contains(z.Names[fq], a) {
				z.Names[fq] = append(z.Names[fq], a)
			}
			if r, err := dns.ReverseAddr(a.String()); err == nil {
				z.PTR[r] = fq
			}
		}
		// The VMs: where the server published them, and this host's own
		// from their interfaces (published a moment later).
		nicOf := map[string]map[int]bool{} // VM name → NIC indexes on the network
		onNet := func(vm string, nic int) {
			if nicOf[vm] == nil {
				nicOf[vm] = map[int]bool{}
			}
			nicOf[vm][nic] = true
		}
		for _, p := range n.Status.Ports {
			onNet(p.VM, p.NIC)
			for _, s := range p.IPs {
				if a, err := netip.ParseAddr(s); err == nil {
					add(p.VM, a.Unmap())
				}
			}
		}
		for _, vm := range in.VMs {
			if vm.Metadata.Tenant != tenant || vm.Spec.Host != in.Host {
				continue
			}
			for i, ifc := range vm.Status.Interfaces {
				if ifc.Network != n.Metadata.Name {
					continue
				}
				onNet(vm.Metadata.Name, i)
				if a, err := netip.ParseAddr(ifc.IP); err == nil {
					add(vm.Metadata.Name, a.Unmap())
				}
			}
		}
		// Floating IPs whose target is on the network; a VM's name wins
		// over a floating IP's of the same name.
		for _, f := range in.FloatingIPs {
			if f.Metadata.Tenant != tenant || f.Spec.Target == nil || f.Status.Phase != api.FloatingIPAssociated ||
				!nicOf[f.Spec.Target.VM][f.Spec.Target.NIC] || nicOf[f.Metadata.Name] != nil {
				continue
			}
			if a, err := netip.ParseAddr(f.Status.Address); err == nil {
				add(f.Metadata.Name, a.Unmap())
				z.Reverse = append(z.Reverse, netip.PrefixFrom(a.Unmap(), a.BitLen()))
			}
		}
		for _, addrs := range z.Names {
			slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
		}

		// The subnets' reverse names, and the upstreams.
		var subnetDNS []netip.Addr
		gateways := map[netip.Addr]bool{}
		for _, s := range in.Subnets {
			if s.Metadata.Tenant != tenant || s.Spec.Network != n.Metadata.Name {
				continue
			}
			if p, err := netip.ParsePrefix(s.Spec.CIDR); err == nil {
				z.Reverse = append(z.Reverse, p.Masked())
			}
			if g, err := netip.ParseAddr(s.Spec.Gateway); err == nil {
				gateways[g.Unmap()] = true
			}
			for _, d := range s.Spec.DNSServers {
				if a, err := netip.ParseAddr(d); err == nil && !slices.Contains(subnetDNS, a.Unmap()) {
					subnetDNS = append(subnetDNS, a.Unmap())
				}
			}
		}
		var ups []netip.Addr
		if x := externals[n.Spec.ExternalNetwork]; x != nil && n.Spec.ExternalNetwork != "" {
			for _, d := range x.Spec.DNSServers {
				if a, err := netip.ParseAddr(d); err == nil {
					ups = append(ups, a.Unmap())
				}
			}
			if len(ups) == 0 {
				if g, err := netip.ParseAddr(x.Spec.Gateway); err == nil {
					ups = append(ups, g.Unmap())
				}
			}
		} else {
			ups = subnetDNS
		}
		for _, a := range ups {
			// A gateway of the network is this server itself.
			if !gateways[a] && a.IsValid() {
				z.Upstreams = append(z.Upstreams, netip.AddrPortFrom(a, 53))
			}
		}
		slices.SortFunc(z.Reverse, func(a, b netip.Prefix) int { return cmp.Or(a.Addr().Compare(b.Addr()), a.Bits()-b.Bits()) })
		out[vni] = z
	}
	return out
}

// resolve answers req from the zone, or returns nil when it is to be
// forwarded.
func (z *dnsZone) resolve(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	if req.Opcode != dns.OpcodeQuery {
		m.SetRcode(req, dns.RcodeNotImplemented)
		return m
	}
	if len(req.Question) != 1 {
		m.SetRcode(req, dns.RcodeFormatError)
		return m
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if dns.CountLabel(name) == 1 && z.Domain != "" {
		name += z.Domain
	}
	ours := z.Domain != "" && dns.IsSubDomain(z.Domain, name)
	if addrs, ok := z.Names[name]; ok {
		m.Authoritative = true
		for _, a := range addrs {
			hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: dnsTTL}
			switch {
			case a.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
				hdr.Rrtype = dns.TypeA
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IP(a.AsSlice())})
			case a.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
				hdr.Rrtype = dns.TypeAAAA
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.IP(a.AsSlice())})
			}
		}
		if len(m.Answer) == 0 {
			m.Ns = []dns.RR{z.soa()}
		}
		return m
	}
	if target, ok := z.PTR[name]; ok {
		m.Authoritative = true
		if q.Qtype == dns.TypePTR || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, &dns.PTR{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: dnsTTL}, Ptr: target})
		} else {
			m.Ns = []dns.RR{z.soa()}
		}
		return m
	}
	if name == z.Domain && z.Domain != "" {
		m.Authoritative = true
		if q.Qtype == dns.TypeSOA {
			m.Answer = []dns.RR{z.soa()}
		} else {
			m.Ns = []dns.RR{z.soa()}
		}
		return m
	}
	if ours || dns.IsSubDomain("hearth.", name) || dns.CountLabel(name) <= 1 || z.ownReverse(name) {
		m.Authoritative = ours
		m.SetRcode(req, dns.RcodeNameError)
		if ours {
			m.Ns = []dns.RR{z.soa()}
		}
		return m
	}
	return nil
}

// ownReverse reports whether name is the reverse name of an address in
// one of the zone's reverse prefixes.
func (z *dnsZone) ownReverse(name string) bool {
	a, ok := reverseAddr(name)
	if !ok {
		return false
	}
	for _, p := range z.Reverse {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// reverseAddr is the address of a complete in-addr.arpa or ip6.arpa name.
func reverseAddr(name string) (netip.Addr, bool) {
	labels := dns.SplitDomainName(name)
	switch {
	case len(labels) == 6 && strings.HasSuffix(name, ".in-addr.arpa."):
		var b [4]byte
		for i := range 4 {
			a, err := netip.ParseAddr("0.0.0." + labels[3-i])
			if err != nil {
				return netip.Addr{}, false
			}
			b[i] = a.As4()[3]
		}
		return netip.AddrFrom4(b), true
	case len(labels) == 34 && strings.HasSuffix(name, ".ip6.arpa."):
		var s strings.Builder
		for i := 31; i >= 0; i-- {
			s.WriteString(labels[i])
			if i%4 == 0 && i > 0 {
				s.WriteByte(':')
			}
		}
		a, err := netip.ParseAddr(s.String())
		return a, err == nil
	}
	return netip.Addr{}, false
}

func (z *dnsZone) soa() dns.RR {
	return &dns.SOA{Hdr: dns.RR_Header{Name: z.Domain, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: dnsTTL},
		Ns: "ns." + z.Domain, Mbox: "hostmaster." + z.Domain, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: dnsTTL}
}

// ServeDNS answers one query: from the zone, else through the forwarder.
func (s *networkServices) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	z := s.zone.Load()
	m := z.resolve(req)
	if m == nil {
		var err error
		if m, err = s.fwd.exchange(req, z.Upstreams); err != nil {
			m = new(dns.Msg)
			m.SetRcode(req, dns.RcodeServerFailure)
			m.RecursionAvailable = true
		}
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = max(int(o.UDPSize()), dns.MinMsgSize)
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// forwarder asks the upstreams over one UDP socket of the router
// namespace (made there once: a socket per query would cost a thread
// entering the namespace), matching answers to questions by a random
// query ID and the question itself.
type forwarder struct {
	conn    net.PacketConn
	mu      sync.Mutex
	waiting map[uint16]*pendingQuery
}

type pendingQuery struct {
	q  dns.Question
	ch chan *dns.Msg
}

// forwardTimeout is how long one upstream gets to answer; forwardTries
// upstreams are asked at most.
const (
	forwardTimeout = time.Second
	forwardTries   = 3
)

// forwardMaxPending bounds the questions a network's DNS has out at once:
// a guest asking for names nobody answers costs the router a bounded
// number of goroutines and query IDs, and the rest get SERVFAIL at once.
const forwardMaxPending = 2048

var (
	errNoUpstream  = errors.New("no upstream DNS server answered")
	errForwardBusy = errors.New("too many questions forwarded at once")
)

func newForwarder(conn net.PacketConn) *forwarder {
	return &forwarder{conn: conn, waiting: map[uint16]*pendingQuery{}}
}

func (f *forwarder) exchange(req *dns.Msg, ups []netip.AddrPort) (*dns.Msg, error) {
	if len(ups) == 0 || len(req.Question) != 1 {
		return nil, errNoUpstream
	}
	q := req.Copy()
	p := &pendingQuery{q: req.Question[0], ch: make(chan *dns.Msg, 1)}
	f.mu.Lock()
	if len(f.waiting) >= forwardMaxPending {
		f.mu.Unlock()
		return nil, errForwardBusy
	}
	var id uint16
	for {
		var b [2]byte
		rand.Read(b[:])
		if id = binary.BigEndian.Uint16(b[:]); f.waiting[id] == nil {
			break
		}
	}
	f.waiting[id] = p
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.waiting, id)
		f.mu.Unlock()
	}()
	q.Id = id
	b, err := q.Pack()
	if err != nil {
		return nil, err
	}
	for i := 0; i < forwardTries; i++ {
		up := ups[i%len(ups)]
		if _, err := f.conn.WriteTo(b, net.UDPAddrFromAddrPort(up)); err != nil {
			continue
		}
		select {
		case m := <-p.ch:
			m.Id = req.Id
			return m, nil
		case <-time.After(forwardTimeout):
		}
	}
	return nil, errNoUpstream
}

// run reads the upstreams' answers until the socket is closed.
func (f *forwarder) run() {
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, _, err := f.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		m := new(dns.Msg)
		if m.Unpack(buf[:n]) != nil || !m.Response || len(m.Question) != 1 {
			continue
		}
		f.mu.Lock()
		p := f.waiting[m.Id]
		f.mu.Unlock()
		if p == nil || !strings.EqualFold(p.q.Name, m.Question[0].Name) || p.q.Qtype != m.Question[0].Qtype {
			continue
		}
		select {
		case p.ch <- m:
		default:
		}
	}
}

func (f *forwarder) close() { f.conn.Close() }
