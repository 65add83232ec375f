package agent

import (
	"errors"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestDNSZones: each network's zone holds its own VMs (here and on other
// hosts), its floating IPs and their reverse names under its domain, and
// nothing of the other tenant's network, which has a VM of the same name
// at the same address.
func TestDNSZones(t *testing.T) {
	in := nsWorld()
	in.ExternalNetworks[0].Spec.DNSServers = []string{"203.0.113.53"}
	in.Networks[1].Spec.DNSDomain = "Blue.Example."
	in.Subnets[2].Spec.DNSServers = []string{"192.168.1.1", "9.9.9.9"}
	st := hostNetState(in)
	zones := dnsZones(in, st)

	red := zones[100]
	if red == nil || red.Domain != "net.red.hearth." {
		t.Fatalf("red's zone = %+v", red)
	}
	wantNames := map[string][]netip.Addr{
		"a.net.red.hearth.":   addrs("192.168.1.10"),
		"b.net.red.hearth.":   addrs("192.168.1.11"), // on h2, from status.ports
		"c.net.red.hearth.":   addrs("192.168.2.10"),
		"web.net.red.hearth.": addrs("203.0.113.50"), // the floating IP
	}
	if !reflect.DeepEqual(red.Names, wantNames) {
		t.Errorf("red's names = %v, want %v", red.Names, wantNames)
	}
	wantPTR := map[string]string{
		"10.1.168.192.in-addr.arpa.": "a.net.red.hearth.",
		"11.1.168.192.in-addr.arpa.": "b.net.red.hearth.",
		"10.2.168.192.in-addr.arpa.": "c.net.red.hearth.",
		"50.113.0.203.in-addr.arpa.": "web.net.red.hearth.",
	}
	if !reflect.DeepEqual(red.PTR, wantPTR) {
		t.Errorf("red's PTR = %v, want %v", red.PTR, wantPTR)
	}
	if want := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.53:53")}; !reflect.DeepEqual(red.Upstreams, want) {
		t.Errorf("red's upstreams = %v, want %v", red.Upstreams, want)
	}

	blue := zones[200]
	if blue == nil || blue.Domain != "blue.example." {
		t.Fatalf("blue's zone = %+v", blue)
	}
	if want := map[string][]netip.Addr{"a.blue.example.": addrs("192.168.1.10")}; !reflect.DeepEqual(blue.Names, want) {
		t.Errorf("blue's names = %v, want %v", blue.Names, want)
	}
	// Without an external network: the subnet's servers, less its own
	// gateway (that is this server).
	if want := []netip.AddrPort{netip.MustParseAddrPort("9.9.9.9:53")}; !reflect.DeepEqual(blue.Upstreams, want) {
		t.Errorf("blue's upstreams = %v, want %v", blue.Upstreams, want)
	}
	if _, ok := zones[300]; ok || len(zones) != 2 {
		t.Errorf("zones of %d networks, want 2", len(zones))
	}
}

// TestDNSResolve: what a zone answers itself, and what it forwards.
func TestDNSResolve(t *testing.T) {
	in := nsWorld()
	zones := dnsZones(in, hostNetState(in))
	red, blue := zones[100], zones[200]
	tests := []struct {
		name  string
		zone  *dnsZone
		qname string
		qtype uint16
		// forward: nil answer; else rcode and the answers' text.
		forward bool
		rcode   int
		answers []string
	}{
		{"a bare name", red, "a.", dns.TypeA, false, dns.RcodeSuccess, []string{"a.\t1\tIN\tA\t192.168.1.10"}},
		{"a name in the domain", red, "C.Net.Red.Hearth.", dns.TypeA, false, dns.RcodeSuccess, []string{"C.Net.Red.Hearth.\t1\tIN\tA\t192.168.2.10"}},
		{"a VM on another host", red, "b.net.red.hearth.", dns.TypeA, false, dns.RcodeSuccess, []string{"b.net.red.hearth.\t1\tIN\tA\t192.168.1.11"}},
		{"no AAAA: no data", red, "a.", dns.TypeAAAA, false, dns.RcodeSuccess, nil},
		{"a floating IP", red, "web.net.red.hearth.", dns.TypeA, false, dns.RcodeSuccess, []string{"web.net.red.hearth.\t1\tIN\tA\t203.0.113.50"}},
		{"reverse", red, "11.1.168.192.in-addr.arpa.", dns.TypePTR, false, dns.RcodeSuccess, []string{"11.1.168.192.in-addr.arpa.\t1\tIN\tPTR\tb.net.red.hearth."}},
		{"reverse of a floating IP", red, "50.113.0.203.in-addr.arpa.", dns.TypePTR, false, dns.RcodeSuccess, []string{"50.113.0.203.in-addr.arpa.\t1\tIN\tPTR\tweb.net.red.hearth."}},
		{"an unknown name of the domain", red, "nobody.net.red.hearth.", dns.TypeA, false, dns.RcodeNameError, nil},
		{"an unknown bare name", red, "nobody.", dns.TypeA, false, dns.RcodeNameError, nil},
		{"an unknown reverse name of a subnet", red, "99.2.168.192.in-addr.arpa.", dns.TypePTR, false, dns.RcodeNameError, nil},
		{"the other tenant's name", red, "a.net.blue.hearth.", dns.TypeA, false, dns.RcodeNameError, nil},
		{"the other tenant's floating IP name", blue, "web.net.red.hearth.", dns.TypeA, false, dns.RcodeNameError, nil},
		{"the other tenant's VM on another host", blue, "b.", dns.TypeA, false, dns.RcodeNameError, nil},
		{"the other tenant's address: its own", blue, "10.1.168.192.in-addr.arpa.", dns.TypePTR, false, dns.RcodeSuccess, []string{"10.1.168.192.in-addr.arpa.\t1\tIN\tPTR\ta.net.blue.hearth."}},
		{"the other tenant's floating address", blue, "50.113.0.203.in-addr.arpa.", dns.TypePTR, true, 0, nil},
		{"the world", red, "example.org.", dns.TypeA, true, 0, nil},
		{"a public reverse name", red, "8.8.8.8.in-addr.arpa.", dns.TypePTR, true, 0, nil},
		{"the domain itself", red, "net.red.hearth.", dns.TypeSOA, false, dns.RcodeSuccess, []string{"net.red.hearth.\t1\tIN\tSOA\tns.net.red.hearth. hostmaster.net.red.hearth. 1 3600 600 86400 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := new(dns.Msg)
			req.SetQuestion(tt.qname, tt.qtype)
			m := tt.zone.resolve(req)
			if tt.forward {
				if m != nil {
					t.Fatalf("answered %v, want it forwarded", m)
				}
				return
			}
			if m == nil {
				t.Fatal("forwarded, want an answer")
			}
			if m.Rcode != tt.rcode || m.Id != req.Id {
				t.Errorf("rcode %s id %d, want %s id %d", dns.RcodeToString[m.Rcode], m.Id, dns.RcodeToString[tt.rcode], req.Id)
			}
			var got []string
			for _, rr := range m.Answer {
				got = append(got, rr.String())
			}
			if !reflect.DeepEqual(got, tt.answers) {
				t.Errorf("answers = %q, want %q", got, tt.answers)
			}
		})
	}
}

// TestDNSServeAndForward runs a network's DNS handler and forwarder on
// loopback against an upstream (a miekg/dns server): its own names from
// the zone, a swapped zone at once, the world's names through the
// upstream, SERVFAIL without one.
func TestDNSServeAndForward(t *testing.T) {
	upPC, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &dns.Server{PacketConn: upPC, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(198, 51, 100, 7)}}
		w.WriteMsg(m)
	})}
	go up.ActivateAndServe()
	defer up.Shutdown()

	fwdPC, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &networkServices{fwd: newForwarder(fwdPC)}
	go s.fwd.run()
	defer s.fwd.close()
	in := nsWorld()
	z := dnsZones(in, hostNetState(in))[100]
	z.Upstreams = []netip.AddrPort{netip.MustParseAddrPort(upPC.LocalAddr().String())}
	s.zone.Store(z)

	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: s}
	go srv.ActivateAndServe()
	defer srv.Shutdown()
	c := &dns.Client{Timeout: 3 * time.Second}
	ask := func(name string) *dns.Msg {
		t.Helper()
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		var m *dns.Msg
		for range 20 { // the server may not be reading yet
			if m, _, err = c.Exchange(q, pc.LocalAddr().String()); err == nil {
				return m
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("asking %s: %v", name, err)
		return nil
	}
	if m := ask("a."); len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "192.168.1.10" {
		t.Errorf("a. = %v", m)
	}
	if m := ask("example.org."); len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "198.51.100.7" {
		t.Errorf("example.org. = %v", m)
	}
	// A VM that goes is gone with the next zone.
	in.Networks[0].Status.Ports = in.Networks[0].Status.Ports[1:]
	in.VMs = in.VMs[1:]
	z2 := dnsZones(in, hostNetState(in))[100]
	s.zone.Store(z2)
	if m := ask("a."); m.Rcode != dns.RcodeNameError {
		t.Errorf("a. after it went = %v", m)
	}
	if m := ask("example.org."); m.Rcode != dns.RcodeServerFailure {
		t.Errorf("example.org. without upstreams = %v", m)
	}
}

// A network without an external network nor subnet dnsServers has no
// upstream; the subnet's own gateway never is one.
func TestDNSZoneNoUpstream(t *testing.T) {
	in := nsWorld()
	in.Networks[0].Spec.ExternalNetwork = ""
	in.Subnets[0].Spec.DNSServers = []string{"192.168.1.1"}
	z := dnsZones(in, hostNetState(in))[100]
	if len(z.Upstreams) != 0 {
		t.Errorf("upstreams = %v, want none", z.Upstreams)
	}
}

// A forwarder with forwardMaxPending questions out refuses the next at
// once instead of looking for a free query ID for ever.
func TestForwarderBound(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := newForwarder(pc)
	defer f.close()
	for i := range forwardMaxPending {
		f.waiting[uint16(i)] = &pendingQuery{}
	}
	q := new(dns.Msg)
	q.SetQuestion("example.org.", dns.TypeA)
	start := time.Now()
	if _, err := f.exchange(q, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}); !errors.Is(err, errForwardBusy) {
		t.Errorf("exchange = %v, want %v", err, errForwardBusy)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("the refusal took %s", d)
	}
}
