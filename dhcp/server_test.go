package dhcp

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"hearth.dev/hearth/dhcp/dhcptest"
	"hearth.dev/hearth/netns"
)

// These tests run Hearth's server and real clients in two network
// namespaces joined by a veth (see dhcptest): they need root, and the
// clients from Debian's busybox, isc-dhcp-client and dhcping packages.

var (
	serverIP   = ip("10.77.0.1")
	serverNet  = netip.MustParsePrefix("10.77.0.1/24")
	clientMAC  = net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x01}
	poolStart  = ip("10.77.0.100")
	poolEnd    = ip("10.77.0.149")
	toServer67 = netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), ServerPort)
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make network namespaces")
	}
}

func requireTool(t *testing.T, tool, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("%s is not installed: apt-get install %s", tool, pkg)
	}
}

func newNet(t *testing.T) *dhcptest.Net {
	t.Helper()
	requireRoot(t)
	n, err := dhcptest.New(serverNet, clientMAC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// fullConfig is a full-mode server on the test network.
func fullConfig() Config {
	return Config{
		Interface: dhcptest.ServerLink, ServerIP: serverIP, Mode: ModeFull,
		Subnet: serverNet.Masked(), Router: serverIP, DNS: []netip.Addr{serverIP}, Domain: "lab.test",
		PoolStart: poolStart, PoolEnd: poolEnd, LeaseTime: 10 * time.Minute,
	}
}

// serve runs a server in the server namespace until the returned stop is
// called (or the test ends).
func serve(t *testing.T, n *dhcptest.Net, cfg Config) (*Server, func()) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- netns.Do(n.Server, func() error { return s.Serve(ctx) }) }()
	select {
	case <-s.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v", err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("server did not stop within 5s")
			}
		})
	}
	t.Cleanup(stop)
	return s, stop
}

// run runs a client command in the client namespace, bounded in time.
func run(t *testing.T, n *dhcptest.Net, timeout time.Duration, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := netns.Start(n.Client, cmd); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	return out.String(), err
}

// udhcpc runs busybox udhcpc until it is bound and returns what its
// script was given then: ip, hostname, boot_file, siaddr, router, domain.
// With release, it is stopped with SIGTERM and -R, which makes it send
// RELEASE (with -q it would quit before it counts as bound, and never
// release).
func udhcpc(t *testing.T, n *dhcptest.Net, release bool) map[string]string {
	t.Helper()
	requireTool(t, "busybox", "busybox")
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	outFile := filepath.Join(dir, "bound")
	// Like a real script, it configures the address: udhcpc sends
	// RELEASE from it.
	err := os.WriteFile(script, []byte(`#!/bin/sh
case "$1" in
deconfig) busybox ip addr flush dev "$interface" ;;
bound)
	busybox ip addr add "$ip/$mask" dev "$interface"
	printf 'ip=%s\nhostname=%s\nboot_file=%s\nsiaddr=%s\nrouter=%s\ndomain=%s\nmtu=%s\nstaticroutes=%s\nmask=%s\ndns=%s\n' "$ip" "$hostname" "$boot_file" "$siaddr" "$router" "$domain" "$mtu" "$staticroutes" "$mask" "$dns" > `+outFile+`.tmp
	mv `+outFile+`.tmp `+outFile+` ;;
esac
exit 0
`), 0o755)
	if err != nil {
		t.Fatal(err)
	}
	argv := []string{"busybox", "udhcpc", "-i", dhcptest.ClientLink, "-n", "-f", "-t", "3", "-T", "1", "-s", script}
	if release {
		argv = append(argv, "-R")
	} else {
		argv = append(argv, "-q")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := netns.Start(n.Client, cmd); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var b []byte
	for b == nil {
		select {
		case err := <-exited:
			if b, _ = os.ReadFile(outFile); b == nil {
				t.Fatalf("udhcpc exited (%v) without a lease:\n%s", err, out.String())
			}
			exited <- err
		case <-time.After(20 * time.Millisecond):
			b, _ = os.ReadFile(outFile)
		}
	}
	if release {
		cmd.Process.Signal(syscall.SIGTERM)
	}
	if err := <-exited; err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, out.String())
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	return got
}

func inPool(a netip.Addr) bool { return !a.Less(poolStart) && !poolEnd.Less(a) }

func leaseOf(s *Server, mac net.HardwareAddr) (Lease, bool) {
	for _, l := range s.Leases() {
		if l.MAC.String() == mac.String() {
			return l, true
		}
	}
	return Lease{}, false
}

func TestUdhcpcGetsPoolAddressAndReleases(t *testing.T) {
	n := newNet(t)
	s, _ := serve(t, n, fullConfig())
	got := udhcpc(t, n, false)
	a, err := netip.ParseAddr(got["ip"])
	if err != nil || !inPool(a) {
		t.Fatalf("udhcpc got %q, want an address of the pool", got["ip"])
	}
	if got["router"] != serverIP.String() || got["domain"] != "lab.test" {
		t.Errorf("udhcpc got router %q domain %q", got["router"], got["domain"])
	}
	if l, ok := leaseOf(s, clientMAC); !ok || l.IP != a {
		t.Fatalf("server leases %v, want %v bound to %v", s.Leases(), clientMAC, a)
	}
	// The second run gets the same address, then gives it back.
	if again := udhcpc(t, n, true); again["ip"] != got["ip"] {
		t.Errorf("second run got %s, want the same %s", again["ip"], got["ip"])
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, ok := leaseOf(s, clientMAC); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease still held after RELEASE: %v", s.Leases())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fakeHandler records what it is asked and told.
type fakeHandler struct {
	decide func(Request) Decision
	mu     sync.Mutex
	reqs   []Request
	events []Event
}

func (h *fakeHandler) Decide(ctx context.Context, r Request) Decision {
	h.mu.Lock()
	h.reqs = append(h.reqs, r)
	h.mu.Unlock()
	if h.decide == nil {
		return Decision{}
	}
	return h.decide(r)
}

func (h *fakeHandler) Observe(ctx context.Context, ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
}

// waitEvents waits for n events: Observe is told after the answer is
// sent, so a client may see the answer first.
func (h *fakeHandler) waitEvents(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		h.mu.Lock()
		got := len(h.events)
		h.mu.Unlock()
		if got >= n {
			return
		}
	}
	t.Fatalf("handler saw %v, want %d events", h.timeline(), n)
}

func (h *fakeHandler) timeline() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var s []string
	for _, ev := range h.events {
		step := ev.Request.Type.String() + ">"
		if ev.Reply != 0 {
			step += ev.Reply.String()
		}
		s = append(s, step)
	}
	return s
}

func TestReservationAndBootFile(t *testing.T) {
	n := newNet(t)
	h := &fakeHandler{decide: func(r Request) Decision {
		if r.MAC.String() != clientMAC.String() {
			return Decision{Ignore: true}
		}
		return Decision{IP: ip("10.77.0.42"), Hostname: "node42", BootFile: "undionly.kpxe"}
	}}
	cfg := fullConfig()
	cfg.Handler = h
	s, _ := serve(t, n, cfg)
	got := udhcpc(t, n, false)
	want := map[string]string{"ip": "10.77.0.42", "hostname": "node42", "boot_file": "undionly.kpxe", "siaddr": "10.77.0.1"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q", k, got[k], v)
		}
	}
	if l, ok := leaseOf(s, clientMAC); !ok || !l.Reserved || l.IP != ip("10.77.0.42") {
		t.Errorf("lease %+v, want the reservation", l)
	}
	h.waitEvents(t, 2)
	if tl := h.timeline(); !slices.Equal(tl, []string{"DISCOVER>OFFER", "REQUEST>ACK"}) {
		t.Errorf("timeline %v", tl)
	}
}

// TestMTUAndClasslessRoutes: a tenant subnet's options reach the client:
// the network's MTU (26) and classless routes (121) led by the default
// route, as udhcpc reads them.
func TestMTUAndClasslessRoutes(t *testing.T) {
	n := newNet(t)
	cfg := fullConfig()
	cfg.PoolStart, cfg.PoolEnd = netip.Addr{}, netip.Addr{}
	cfg.MTU = 1450
	cfg.Routes = []Route{{Destination: netip.MustParsePrefix("10.99.0.0/16"), Gateway: ip("10.77.0.254")}}
	cfg.Handler = &fakeHandler{decide: func(r Request) Decision { return Decision{IP: ip("10.77.0.42")} }}
	serve(t, n, cfg)
	got := udhcpc(t, n, false)
	want := map[string]string{"ip": "10.77.0.42", "mtu": "1450", "router": "10.77.0.1", "mask": "24",
		"staticroutes": "0.0.0.0/0 10.77.0.1 10.99.0.0/16 10.77.0.254"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q", k, got[k], v)
		}
	}
}

func TestClasslessRoutesEncoding(t *testing.T) {
	got := classlessRoutes(ip("10.0.0.1"), []Route{
		{Destination: netip.MustParsePrefix("10.99.0.0/16"), Gateway: ip("10.0.0.254")},
		{Destination: netip.MustParsePrefix("192.168.7.128/25"), Gateway: ip("10.0.0.2")},
		{Destination: netip.MustParsePrefix("172.16.0.0/12"), Gateway: ip("10.0.0.3")},
	})
	want := []byte{0, 10, 0, 0, 1, 16, 10, 99, 10, 0, 0, 254, 25, 192, 168, 7, 128, 10, 0, 0, 2, 12, 172, 16, 10, 0, 0, 3}
	if !bytes.Equal(got, want) {
		t.Errorf("option 121 = %v, want %v", got, want)
	}
}

func TestDhclient(t *testing.T) {
	requireTool(t, "dhclient", "isc-dhcp-client")
	n := newNet(t)
	s, _ := serve(t, n, fullConfig())
	dir := t.TempDir()
	leases, pidFile := filepath.Join(dir, "leases"), filepath.Join(dir, "pid")
	// -d keeps dhclient in the foreground, a child of the test, which
	// stops and reaps it once the lease is written (without -d it would
	// daemonize and outlive the test).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "dhclient", "-4", "-1", "-d", "-v", "-lf", leases, "-pf", pidFile, "-sf", "/bin/true", dhcptest.ClientLink)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := netns.Start(n.Client, cmd); err != nil {
		t.Fatal(err)
	}
	var b []byte
	for ctx.Err() == nil && !bytes.Contains(b, []byte("fixed-address")) {
		time.Sleep(20 * time.Millisecond)
		b, _ = os.ReadFile(leases)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	_, rest, ok := strings.Cut(string(b), "fixed-address ")
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.Fields(rest + " x")[0], ";"))
	if !ok || err != nil || !inPool(a) {
		t.Fatalf("dhclient lease file has no pool address:\n%s\n%s", b, out.String())
	}
	if l, ok := leaseOf(s, clientMAC); !ok || l.IP != a {
		t.Errorf("server leases %v, want %v bound to %v", s.Leases(), clientMAC, a)
	}
}

func TestDhcping(t *testing.T) {
	requireTool(t, "dhcping", "dhcping")
	n := newNet(t)
	serve(t, n, fullConfig())
	// dhcping is a configured client asking to renew: it needs the
	// address on its link to receive the unicast answer.
	if err := n.AddAddr(n.Client, dhcptest.ClientLink, netip.MustParsePrefix("10.77.0.120/24")); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, n, 15*time.Second, "dhcping", "-s", serverIP.String(), "-c", "10.77.0.120", "-h", clientMAC.String(), "-t", "3")
	if err != nil || !strings.Contains(out, "Got answer from: "+serverIP.String()) {
		t.Fatalf("dhcping: %v\n%s", err, out)
	}
}

// testClient is a hand-made client in the client namespace, for what the
// packaged clients cannot send.
type testClient struct {
	t    *testing.T
	conn *net.UDPConn
	buf  []byte
}

func newTestClient(t *testing.T, n *dhcptest.Net, port int) *testClient {
	t.Helper()
	c := &testClient{t: t, buf: make([]byte, 4096)}
	err := netns.Do(n.Client, func() error {
		var err error
		c.conn, err = listenUDP(context.Background(), dhcptest.ClientLink, port)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.conn.Close() })
	return c
}

// exchange sends p and returns the answer with its xid, or nil when none
// comes within wait.
func (c *testClient) exchange(p *Packet, to netip.AddrPort, wait time.Duration) *Packet {
	c.t.Helper()
	if _, err := c.conn.WriteToUDPAddrPort(p.Marshal(), to); err != nil {
		c.t.Fatalf("sending %v: %v", p, err)
	}
	deadline := time.Now().Add(wait)
	for {
		c.conn.SetReadDeadline(deadline)
		k, _, err := c.conn.ReadFromUDPAddrPort(c.buf)
		if err != nil {
			return nil
		}
		r, err := Parse(c.buf[:k])
		if err == nil && r.Op == BootReply && r.XID == p.XID {
			return r
		}
	}
}

func discover(mac net.HardwareAddr, xid uint32) *Packet {
	p := &Packet{Op: BootRequest, XID: xid}
	p.SetHardwareAddr(mac)
	p.SetMessageType(MsgDiscover)
	return p
}

func TestLeasesSurviveRestart(t *testing.T) {
	n := newNet(t)
	cfg := fullConfig()
	cfg.LeaseFile = filepath.Join(t.TempDir(), "leases")
	_, stop := serve(t, n, cfg)
	got := udhcpc(t, n, false)
	stop()
	s, _ := serve(t, n, cfg)
	if l, ok := leaseOf(s, clientMAC); !ok || l.IP.String() != got["ip"] {
		t.Fatalf("after restart, leases %v, want %s bound to %v", s.Leases(), clientMAC, got["ip"])
	}
	c := newTestClient(t, n, ClientPort)
	other := net.HardwareAddr{2, 0x77, 0, 0, 0, 2}
	if r := c.exchange(discover(other, 1), toServer67, 2*time.Second); r == nil || r.YIAddr.String() == got["ip"] || !inPool(r.YIAddr) {
		t.Errorf("another client was offered %v; %s is taken", r, got["ip"])
	}
	if r := c.exchange(discover(clientMAC, 2), toServer67, 2*time.Second); r == nil || r.YIAddr.String() != got["ip"] {
		t.Errorf("the client was offered %v, want its %s", r, got["ip"])
	}
}

func TestHandlerSeesClientOptions(t *testing.T) {
	n := newNet(t)
	h := &fakeHandler{decide: func(r Request) Decision {
		if r.IsIPXE {
			return Decision{BootFile: "http://10.77.0.1:8080/boot/" + r.UUID + ".ipxe"}
		}
		return Decision{}
	}}
	cfg := fullConfig()
	cfg.Handler = h
	serve(t, n, cfg)
	c := newTestClient(t, n, ClientPort)
	p := ipxeDiscover()
	p.SetString(OptHostname, "node7")
	r := c.exchange(p, toServer67, 2*time.Second)
	if r == nil || r.MessageType() != MsgOffer {
		t.Fatalf("no OFFER for an iPXE DISCOVER: %v", r)
	}
	want := "http://10.77.0.1:8080/boot/00112233-4455-6677-8899-aabbccddeeff.ipxe"
	if r.BootFile() != want || r.Options.String(OptBootFileName) != want {
		t.Errorf("boot file %q, option 67 %q; want %q", r.BootFile(), r.Options.String(OptBootFileName), want)
	}
	if got, _ := r.Options.IP(OptServerID); got != serverIP {
		t.Errorf("server id %v", got)
	}
	h.waitEvents(t, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.reqs) != 1 {
		t.Fatalf("handler asked %d times", len(h.reqs))
	}
	got := h.reqs[0]
	wantReq := Request{
		MAC: testMAC, Type: MsgDiscover, Arch: 7, HasArch: true,
		UUID: "00112233-4455-6677-8899-aabbccddeeff", VendorClass: "PXEClient:Arch:00007:UNDI:003010",
		UserClass: "iPXE", IsIPXE: true, Hostname: "node7", Port: ServerPort,
	}
	if got.MAC.String() != wantReq.MAC.String() {
		t.Errorf("MAC %v", got.MAC)
	}
	got.MAC = wantReq.MAC
	if !reflectEqual(got, wantReq) {
		t.Errorf("request\n got %+v\nwant %+v", got, wantReq)
	}
	if len(h.events) != 1 || h.events[0].Reply != MsgOffer || h.events[0].BootFile != want || !inPool(h.events[0].IP) {
		t.Errorf("events %+v", h.events)
	}
}

func reflectEqual(a, b Request) bool {
	return a.MAC.String() == b.MAC.String() && a.Type == b.Type && a.Arch == b.Arch && a.HasArch == b.HasArch &&
		a.UUID == b.UUID && a.VendorClass == b.VendorClass && a.UserClass == b.UserClass && a.IsIPXE == b.IsIPXE &&
		a.Hostname == b.Hostname && a.RequestedIP == b.RequestedIP && a.Port == b.Port
}

// A relayed request is answered to the relay, on the server port; a
// REQUEST for an address of another subnet gets a NAK.
func TestRelayAndNak(t *testing.T) {
	n := newNet(t)
	serve(t, n, fullConfig())
	relay := ip("10.77.0.2")
	if err := n.AddAddr(n.Client, dhcptest.ClientLink, netip.MustParsePrefix("10.77.0.2/24")); err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, n, ServerPort)
	p := discover(clientMAC, 7)
	p.GIAddr, p.Hops = relay, 1
	r := c.exchange(p, netip.AddrPortFrom(serverIP, ServerPort), 2*time.Second)
	if r == nil || r.MessageType() != MsgOffer || r.GIAddr != relay || !inPool(r.YIAddr) {
		t.Fatalf("relayed DISCOVER: got %v", r)
	}
	req := discover(clientMAC, 8)
	req.GIAddr = relay
	req.SetMessageType(MsgRequest)
	req.SetIPs(OptRequestedIP, ip("192.168.9.9"))
	r = c.exchange(req, netip.AddrPortFrom(serverIP, ServerPort), 2*time.Second)
	if r == nil || r.MessageType() != MsgNak || r.Flags&FlagBroadcast == 0 {
		t.Fatalf("REQUEST for another subnet: got %v, want a broadcast NAK", r)
	}
}

func TestProxyMode(t *testing.T) {
	n := newNet(t)
	h := &fakeHandler{decide: func(r Request) Decision {
		if r.HasArch && r.Arch == 7 {
			return Decision{BootFile: "ipxe.efi"}
		}
		return Decision{}
	}}
	cfg := Config{Interface: dhcptest.ServerLink, ServerIP: serverIP, Mode: ModeProxy, Handler: h}
	s, _ := serve(t, n, cfg)
	c := newTestClient(t, n, ClientPort)
	uefi := ipxeDiscover()
	uefi.Options.Del(OptUserClass)
	uefi.Options.Del(OptIPXEEncap)
	r := c.exchange(uefi, toServer67, 2*time.Second)
	if r == nil {
		t.Fatal("no ProxyDHCP OFFER for a UEFI PXE client")
	}
	checkProxyAnswer(t, r, MsgOffer)

	// Not PXE: the other DHCP server's business.
	if r := c.exchange(discover(clientMAC, 99), toServer67, 500*time.Millisecond); r != nil {
		t.Errorf("proxy answered a plain DHCP client: %v", r)
	}

	// With an address from the other server, the firmware asks the
	// ProxyDHCP server on port 4011 for its boot file.
	if err := n.AddAddr(n.Client, dhcptest.ClientLink, netip.MustParsePrefix("10.77.0.50/24")); err != nil {
		t.Fatal(err)
	}
	req := ipxeDiscover()
	req.Options.Del(OptUserClass)
	req.Options.Del(OptIPXEEncap)
	req.XID++
	req.Flags = 0
	req.CIAddr = ip("10.77.0.50")
	req.SetMessageType(MsgRequest)
	req.SetOption(OptVendorSpecific, []byte{PXEBootItem, 4, 0x80, 0x00, 0x00, 0x00, PXEEnd})
	r = c.exchange(req, netip.AddrPortFrom(serverIP, PXEPort), 2*time.Second)
	if r == nil {
		t.Fatal("no answer on port 4011")
	}
	checkProxyAnswer(t, r, MsgAck)
	if item, _ := SubOptions(must(r.Options.Get(OptVendorSpecific))).Get(PXEBootItem); !bytes.Equal(item, []byte{0x80, 0, 0, 0}) {
		t.Errorf("boot item not echoed: %v", item)
	}
	if len(s.Leases()) != 0 {
		t.Errorf("proxy mode bound leases: %v", s.Leases())
	}
	h.waitEvents(t, 3)
	// Observe is told after an answer is sent, so the OFFER's event may
	// come after the ignored DISCOVER's: the order between the two is
	// not the server's to keep.
	tl := h.timeline()
	if len(tl) == 3 {
		slices.Sort(tl[:2])
	}
	if !slices.Equal(tl, []string{"DISCOVER>", "DISCOVER>OFFER", "REQUEST>ACK"}) {
		t.Errorf("timeline %v", tl)
	}
}

func checkProxyAnswer(t *testing.T, r *Packet, want MessageType) {
	t.Helper()
	if r.MessageType() != want {
		t.Errorf("got %v, want %v", r.MessageType(), want)
	}
	if !r.YIAddr.IsUnspecified() {
		t.Errorf("ProxyDHCP answer carries address %v", r.YIAddr)
	}
	if r.BootFile() != "ipxe.efi" || r.SIAddr != serverIP {
		t.Errorf("boot file %q next server %v", r.BootFile(), r.SIAddr)
	}
	if got := r.Options.String(OptVendorClass); got != "PXEClient" {
		t.Errorf("option 60 %q", got)
	}
	if got, _ := r.Options.ClientUUID(); got != "00112233-4455-6677-8899-aabbccddeeff" {
		t.Errorf("option 97 not echoed: %q", got)
	}
	if ctl, _ := SubOptions(must(r.Options.Get(OptVendorSpecific))).Get(PXEDiscoveryControl); !bytes.Equal(ctl, []byte{PXEUseBootFile}) {
		t.Errorf("PXE discovery control %v", ctl)
	}
	if sid, _ := r.Options.IP(OptServerID); sid != serverIP {
		t.Errorf("server id %v", sid)
	}
}

func TestConfigErrors(t *testing.T) {
	good := fullConfig()
	cases := map[string]func(*Config){
		"no mode":          func(c *Config) { c.Mode = "" },
		"no interface":     func(c *Config) { c.Interface = "" },
		"server off-net":   func(c *Config) { c.ServerIP = ip("10.1.1.1") },
		"pool outside":     func(c *Config) { c.PoolEnd = ip("10.78.0.1") },
		"pool reversed":    func(c *Config) { c.PoolStart, c.PoolEnd = c.PoolEnd, c.PoolStart },
		"proxy no handler": func(c *Config) { c.Mode = ModeProxy },
	}
	for name, mut := range cases {
		c := good
		mut(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(good); err != nil {
		t.Error(err)
	}
	if _, err := New(Config{Mode: ModeOff}); err != nil {
		t.Error(err)
	}
}

func requireRootB(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to make network namespaces")
	}
}

func newNetB(b *testing.B) *dhcptest.Net {
	n, err := dhcptest.New(serverNet, clientMAC)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { n.Close() })
	return n
}
