package dataplane_test

import (
	"context"
	"errors"
	"github.com/google/nftables"
	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/dataplane/dataplanetest"
	"hearth.dev/hearth/netns"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// Two VMs of one network on different hosts reach each other over the
// VXLAN, and each reaches its gateway on its own host.
func TestTwoHostsOneNetwork(t *testing.T) {
	c := newCluster(t, 2)
	c.addNet("blue", 100, false, "10.0.0.0/24")
	c.addVM("a", "blue", 0, "10.0.0.2")
	c.addVM("b", "blue", 1, "10.0.0.3")
	c.apply()
	c.mustPing("a", netip.MustParseAddr("10.0.0.3"))
	c.mustPing("b", netip.MustParseAddr("10.0.0.2"))
	c.mustPing("a", netip.MustParseAddr("10.0.0.1"))
	c.mustPing("b", netip.MustParseAddr("10.0.0.1"))

	// A new MTU is set in place on every link of the network.
	c.net("blue").mtu = 1400
	c.apply()
	h := c.lab.Hosts[0]
	for _, link := range []string{"hbr100", "hvx100", "hri100", dataplane.PortName("a")} {
		if out, err := h.IP("link", "show", link); err != nil || !strings.Contains(out, "mtu 1400") {
			t.Errorf("%s after the MTU changed: %v %s", link, err, out)
		}
	}
	router := &dataplanetest.Namespace{Name: c.planes[0].RouterNetns(100)}
	if out, err := router.IP("link", "show", "internal"); err != nil || !strings.Contains(out, "mtu 1400") {
		t.Errorf("the router's internal leg after the MTU changed: %v %s", err, out)
	}
	c.mustPing("a", netip.MustParseAddr("10.0.0.3"))
}

// Two tenants use the same CIDR on the same hosts: each VM reaches its
// own network's VM with the address, never the other tenant's, sees none
// of the other tenant's frames, and gets no ARP answer from it.
func TestSameCIDRTenantsAreIsolated(t *testing.T) {
	c := newCluster(t, 2)
	c.addNet("red", 200, false, "10.0.0.0/24")
	c.addNet("green", 201, false, "10.0.0.0/24")
	a1 := c.addVM("a1", "red", 0, "10.0.0.2")
	a2 := c.addVM("a2", "red", 1, "10.0.0.3")
	b1 := c.addVM("b1", "green", 0, "10.0.0.3") // a2's address, on a1's host
	c.addVM("b2", "green", 1, "10.0.0.4")
	c.apply()

	capB1, err := b1.ns.Capture(dataplanetest.VMLink)
	if err != nil {
		t.Fatal(err)
	}
	c.mustPing("a1", a2.addr)
	if mac, err := a1.ns.Neighbour(a2.addr); err != nil || mac.String() != a2.mac.String() {
		t.Errorf("a1 has %v for %s, want a2's %s (b1 is %s)", mac, a2.addr, a2.mac, b1.mac)
	}
	c.mustPing("b1", netip.MustParseAddr("10.0.0.4"))
	// 10.0.0.4 exists only in green.
	c.mustNotPing("a1", netip.MustParseAddr("10.0.0.4"))
	if mac, _ := a1.ns.Neighbour(netip.MustParseAddr("10.0.0.4")); mac != nil {
		t.Errorf("a1 got an ARP answer for green's 10.0.0.4: %s", mac)
	}
	for _, raw := range capB1.Stop() {
		f, ok := dataplanetest.ParseFrame(raw)
		if !ok {
			continue
		}
		if f.Src.String() == a1.mac.String() || f.Src.String() == a2.mac.String() {
			t.Errorf("b1 saw red's frame %s", f)
		}
		if target, ok := f.ARPTarget(); ok && target == netip.MustParseAddr("10.0.0.4") && f.Src.String() != b1.mac.String() {
			t.Errorf("b1 saw an ARP for 10.0.0.4 it did not send: %s", f)
		}
	}
}

// A network's subnets route to each other on one host and across hosts,
// every host routing its own VMs' traffic: the gateway's MAC, ARP for
// the gateways and DHCP never cross the VXLAN, and routed frames cross
// with the sending host's routed MAC.
func TestDistributedRouting(t *testing.T) {
	c := newCluster(t, 2)
	c.addNet("multi", 300, false, "10.1.0.0/24", "10.1.1.0/24")
	c.addVM("v1", "multi", 0, "10.1.0.2")
	v2 := c.addVM("v2", "multi", 0, "10.1.1.2")
	v3 := c.addVM("v3", "multi", 1, "10.1.1.3")
	c.addVM("v4", "multi", 1, "10.1.0.3")
	c.apply()

	var caps []*dataplanetest.Capture
	for _, h := range c.lab.Hosts {
		cp, err := h.Capture(dataplanetest.UnderlayLink)
		if err != nil {
			t.Fatal(err)
		}
		caps = append(caps, cp)
	}
	c.mustPing("v1", v2.addr) // same host, other subnet
	c.mustPing("v1", v3.addr) // other host, other subnet
	c.mustPing("v3", netip.MustParseAddr("10.1.0.2"))
	c.mustPing("v4", v2.addr)
	c.mustPing("v4", netip.MustParseAddr("10.1.0.2")) // other host, same subnet
	c.mustPing("v1", netip.MustParseAddr("10.1.0.1"))
	c.mustPing("v3", netip.MustParseAddr("10.1.1.1"))
	v1 := c.vm("v1")
	if err := v1.ns.BroadcastUDP(dataplanetest.VMLink, 68, 67); err != nil {
		t.Fatal(err)
	}
	if err := v1.ns.BroadcastUDP(dataplanetest.VMLink, 9998, 9999); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)

	gw := dataplane.GatewayMAC(300).String()
	routed := map[string]bool{}
	sawControl := false
	for i, cp := range caps {
		for _, raw := range cp.Stop() {
			outer, ok := dataplanetest.ParseFrame(raw)
			if !ok {
				continue
			}
			f, ok := dataplanetest.VXLANInner(outer, 4789)
			if !ok {
				continue
			}
			if f.VNI != 300 {
				t.Errorf("%s: a VXLAN frame with VNI %d", c.lab.Hosts[i].Name, f.VNI)
			}
			if f.Src.String() == gw || f.Dst.String() == gw {
				t.Errorf("%s: the gateway MAC crossed the VXLAN: %s", c.lab.Hosts[i].Name, f)
			}
			if target, ok := f.ARPTarget(); ok && (target == netip.MustParseAddr("10.1.0.1") || target == netip.MustParseAddr("10.1.1.1")) {
				t.Errorf("%s: ARP for a gateway crossed the VXLAN: %s", c.lab.Hosts[i].Name, f)
			}
			if port, ok := f.UDPDstPort(); ok {
				switch port {
				case 67, 68:
					t.Errorf("%s: DHCP crossed the VXLAN: %s", c.lab.Hosts[i].Name, f)
				case 9999:
					sawControl = true
				}
			}
			routed[f.Src.String()] = true
		}
	}
	if !sawControl {
		t.Error("the control broadcast (UDP 9999) did not cross the VXLAN: the capture proves nothing")
	}
	for _, h := range c.lab.Hosts {
		if mac := dataplane.RoutedMAC(h.Underlay).String(); !routed[mac] {
			t.Errorf("no routed frame from %s (source %s) crossed the VXLAN", h.Name, mac)
		}
	}
	// The gateway MAC is pinned to the router's port on every bridge.
	for _, h := range c.lab.Hosts {
		out, err := h.Bridge("fdb", "show", "br", "hbr300")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, gw+" ") && !strings.Contains(line, "dev hri300") {
				t.Errorf("%s: gateway MAC learned elsewhere: %s", h.Name, line)
			}
		}
		if !strings.Contains(out, gw+" dev hri300") || !strings.Contains(out, "sticky") {
			t.Errorf("%s: gateway MAC not pinned to hri300:\n%s", h.Name, out)
		}
	}
}

// A network with an external network reaches the internet through SNAT
// to its host's external address, a VM with a floating IP through the
// floating IP, and the internet reaches that VM through it, but never a
// tenant address directly. The floating IP follows its VM to another
// host, and the internet learns where it went at once (gratuitous ARP).
func TestSNATAndFloatingIP(t *testing.T) {
	c := newCluster(t, 2)
	out := c.addNet("out", 400, true, "10.2.0.0/24")
	o1 := c.addVM("o1", "out", 0, "10.2.0.2")
	o1.fip = netip.MustParseAddr("203.0.113.100")
	c.addVM("o2", "out", 1, "10.2.0.3")
	c.apply()

	inet := c.lab.Internet
	srv, err := inet.ServeUDP(7000, "internet")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	vmSrv, err := o1.ns.ServeUDP(7001, "o1")
	if err != nil {
		t.Fatal(err)
	}
	defer vmSrv.Close()

	ask := func(from *dataplanetest.Namespace, to netip.Addr, port int, want string) {
		t.Helper()
		got, err := from.AskUDP(to, port)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s asking %s:%d got %q, want %q", from.Name, to, port, got, want)
		}
	}
	h2Addr := c.externalAddr(out, 1).Addr()
	ask(c.vm("o2").ns, c.lab.InternetGateway, 7000, "internet "+h2Addr.String()) // SNAT to h2's address
	ask(o1.ns, c.lab.InternetGateway, 7000, "internet 203.0.113.100")            // leaves from its floating IP
	ask(inet, o1.fip, 7001, "o1 "+c.lab.InternetGateway.String())                // DNAT, source kept

	// The internet cannot reach a tenant address directly, even with a
	// route to it through the router; nor anything on the router but ping.
	h1Addr := c.externalAddr(out, 0).Addr()
	if _, err := inet.IP("route", "add", "10.2.0.0/24", "via", h1Addr.String()); err != nil {
		t.Fatal(err)
	}
	if got, err := inet.AskUDPFor(o1.addr, 7001, 1500*time.Millisecond); err == nil {
		t.Errorf("the internet reached %s directly: %q", o1.addr, got)
	}
	if err := inet.Ping(h1Addr, 5); err != nil {
		t.Errorf("the router's external address does not answer ping: %v", err)
	}
	if _, err := inet.IP("route", "del", "10.2.0.0/24"); err != nil {
		t.Fatal(err)
	}

	// The floating IP follows o1 to the second host.
	before, err := inet.Neighbour(o1.fip)
	if err != nil || before == nil {
		t.Fatalf("the internet has no neighbour entry for %s: %v", o1.fip, err)
	}
	o1.host = 1
	c.apply()
	router := &dataplanetest.Namespace{Name: c.planes[1].RouterNetns(400)}
	want, err := router.MACOf("external")
	if err != nil {
		t.Fatal(err)
	}
	if want.String() == before.String() {
		t.Fatalf("both hosts' external legs have MAC %s", want)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		got, err := inet.Neighbour(o1.fip)
		if err != nil {
			t.Fatal(err)
		}
		if got.String() == want.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the move the internet still has %s for %s, want %s (the second host's router)", got, o1.fip, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ask(inet, o1.fip, 7001, "o1 "+c.lab.InternetGateway.String())
	ask(o1.ns, c.lab.InternetGateway, 7000, "internet 203.0.113.100")

	// Without its external network, the network loses its way out and
	// nothing of it is left on the external side.
	out.external = false
	o1.fip = netip.Addr{}
	c.apply()
	for i, h := range c.lab.Hosts {
		if links, _ := h.IP("-br", "link"); strings.Contains(links, "hre400") {
			t.Errorf("%s still has hre400", h.Name)
		}
		router := &dataplanetest.Namespace{Name: c.planes[i].RouterNetns(400)}
		if _, err := os.Stat(netns.Path(router.Name)); err != nil {
			continue // no VM of the network is left on the host
		}
		if routes, _ := router.IP("route"); strings.Contains(routes, "default") {
			t.Errorf("%s's router still has a default route: %s", h.Name, routes)
		}
		if n, err := countRules(netns.Path(router.Name), "hearth-router", nftables.TableFamilyINet, "prerouting", "postrouting", "forward", "input"); err != nil || n != 0 {
			t.Errorf("%s's router still has %d NAT and filter rules (%v)", h.Name, n, err)
		}
	}
	if got, err := c.vm("o2").ns.AskUDPFor(c.lab.InternetGateway, 7000, time.Second); err == nil {
		t.Errorf("o2 still reaches the internet: %q", got)
	}
	c.mustPing("o1", c.vm("o2").addr)
}

// A state that is wrong changes nothing: invalid input is refused whole
// with field paths; a network the host cannot carry (an MTU too large
// for the underlay, an external device that is not there) fails alone,
// and the others are made.
func TestBadStateChangesNothing(t *testing.T) {
	c := newCluster(t, 1)
	c.addNet("ok", 800, false, "10.10.0.0/24")
	c.addNet("big", 801, false, "10.11.0.0/24")
	c.addNet("noext", 802, true, "10.12.0.0/24")
	c.addVM("ok1", "ok", 0, "10.10.0.2")
	c.addVM("big1", "big", 0, "10.11.0.2")
	c.addVM("noext1", "noext", 0, "10.12.0.2")
	h := c.lab.Hosts[0]
	before := hostInventory(t, h, c.lab.Prefix)

	bad := c.state(0)
	bad.Networks[0].Ports[0].MAC = dataplane.GatewayMAC(800)
	err := c.planes[0].Apply(context.Background(), bad)
	var fes dataplane.FieldErrors
	if !errors.As(err, &fes) || len(fes) != 1 || fes[0].Field != "networks[0].ports[0].mac" {
		t.Fatalf("Apply of an invalid state: %v, want one field error at networks[0].ports[0].mac", err)
	}
	if after := hostInventory(t, h, c.lab.Prefix); after != before {
		t.Errorf("an invalid state changed the host:\n%s", after)
	}

	s := c.state(0)
	s.Networks[1].MTU = 1460 // the underlay is 1500: at most 1450
	s.Networks[2].External.Device = "nosuchbr"
	// A network that fails half-way through being made is taken apart.
	halfway := s.Networks[0]
	halfway.Name, halfway.VNI = "test/halfway", 803
	halfway.Ports = []dataplane.Port{{Name: dataplane.PortName("halfway"), MAC: []byte{0x52, 0x54, 0, 9, 9, 9},
		Veth: &dataplane.VethPeer{Netns: netns.Path(c.lab.Prefix + "no-such-vm")}}}
	s.Networks = append(s.Networks, halfway)
	err = c.planes[0].Apply(context.Background(), s)
	var nes []*dataplane.NetworkError
	for _, e := range unwrapAll(err) {
		var ne *dataplane.NetworkError
		if errors.As(e, &ne) {
			nes = append(nes, ne)
		}
	}
	if len(nes) != 3 || nes[0].VNI != 801 || !strings.Contains(nes[0].Error(), "at most 1450") ||
		nes[1].VNI != 802 || !strings.Contains(nes[1].Error(), "external.device") ||
		nes[2].VNI != 803 || !strings.Contains(nes[2].Error(), "veth.netns") {
		t.Fatalf("Apply: %v; want errors for VNI 801 (MTU), 802 (external device) and 803 (a port's namespace)", err)
	}
	links, err := h.IP("-br", "link")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"hbr800", "hvx800"} {
		if !strings.Contains(links, l) {
			t.Errorf("%s was not made though its network is fine", l)
		}
	}
	for _, l := range []string{"hbr801", "hbr802", "hvx802", "hri802", "hbr803", "hvx803", "hri803"} {
		if strings.Contains(links, l) {
			t.Errorf("%s was made (or left half-made) for a network that failed", l)
		}
	}
	for _, vni := range []uint32{802, 803} {
		if _, err := os.Stat(netns.Path(c.planes[0].RouterNetns(vni))); err == nil {
			t.Errorf("the failed network %d's router namespace was left behind", vni)
		}
	}
}

func unwrapAll(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

// IPv6 subnets route to each other across hosts too.
func TestIPv6Routing(t *testing.T) {
	c := newCluster(t, 2)
	c.addNet("six", 900, false, "fd00:1::/64", "fd00:2::/64")
	c.addVM("s1", "six", 0, "fd00:1::2")
	s2 := c.addVM("s2", "six", 1, "fd00:2::3")
	s3 := c.addVM("s3", "six", 1, "fd00:1::3")
	c.apply()
	c.mustPing("s1", netip.MustParseAddr("fd00:1::1"))
	c.mustPing("s1", s3.addr) // other host, same subnet
	c.mustPing("s1", s2.addr) // other host, other subnet: routed by each host
	c.mustPing("s2", netip.MustParseAddr("fd00:1::2"))
}

// A VM that sends frames claiming the gateway's MAC does not take the
// gateway over: the bridge keeps it pinned to the router, and the VM's
// neighbours still reach their gateway and each other across hosts.
func TestGatewayMACCannotBeTaken(t *testing.T) {
	c := newCluster(t, 2)
	c.addNet("pin", 910, false, "10.20.0.0/24")
	bad := c.addVM("bad", "pin", 0, "10.20.0.2")
	c.addVM("good", "pin", 0, "10.20.0.3")
	far := c.addVM("far", "pin", 1, "10.20.0.4")
	c.apply()
	gw := dataplane.GatewayMAC(910)
	// Gratuitous ARPs from the gateway's MAC claiming the gateway's
	// address (invalid IPv4 frames would not do: the bridge's netfilter
	// drops them before learning).
	arp := []byte{0, 1, 8, 0, 6, 4, 0, 1}
	arp = append(append(arp, gw...), 10, 20, 0, 1)
	arp = append(append(arp, 0, 0, 0, 0, 0, 0), 10, 20, 0, 1)
	frame := append(append(append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, gw...), 0x08, 0x06), arp...)
	frame = append(frame, make([]byte, 60-len(frame))...)
	for range 20 {
		if err := bad.ns.SendFrame(dataplanetest.VMLink, frame); err != nil {
			t.Fatal(err)
		}
	}
	out, err := c.lab.Hosts[0].Bridge("fdb", "show", "br", "hbr910")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, gw.String()+" ") && !strings.Contains(line, "dev hri910") {
			t.Errorf("the gateway MAC moved: %s", line)
		}
	}
	c.mustPing("good", netip.MustParseAddr("10.20.0.1"))
	c.mustPing("far", netip.MustParseAddr("10.20.0.1"))
	c.mustPing("good", far.addr)
}

// A VM cannot reach its host: the host has no address on the tenant
// bridge, and though the kernel would answer ARP there for the host's
// other addresses and take packets sent to the bridge's MAC, nothing a
// VM sends reaches the host's own stack.
func TestVMCannotReachItsHost(t *testing.T) {
	c := newCluster(t, 1)
	c.addNet("fence", 950, false, "10.30.0.0/24")
	vm := c.addVM("v", "fence", 0, "10.30.0.2")
	c.apply()
	h := c.lab.Hosts[0]
	srv, err := h.ServeUDP(7100, "host")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// The VM believes the host's underlay address is on its link, first
	// by ARP, then at the bridge's MAC.
	if _, err := vm.ns.IP("route", "add", h.Underlay.String()+"/32", "dev", dataplanetest.VMLink); err != nil {
		t.Fatal(err)
	}
	if got, err := vm.ns.AskUDPFor(h.Underlay, 7100, 1500*time.Millisecond); err == nil {
		t.Errorf("the VM reached its host by ARP: %q", got)
	}
	if mac, _ := vm.ns.Neighbour(h.Underlay); mac != nil {
		t.Errorf("the host answered the VM's ARP for %s with %s", h.Underlay, mac)
	}
	bridgeMAC, err := h.MACOf("hbr950")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vm.ns.IP("neigh", "replace", h.Underlay.String(), "lladdr", bridgeMAC.String(), "dev", dataplanetest.VMLink, "nud", "permanent"); err != nil {
		t.Fatal(err)
	}
	if got, err := vm.ns.AskUDPFor(h.Underlay, 7100, 1500*time.Millisecond); err == nil {
		t.Errorf("the VM reached its host at the bridge's MAC: %q", got)
	}
	if n := srv.Received(); n > 0 {
		t.Errorf("the host received %d datagrams from the VM", n)
	}
	// The control: the VM's own router does answer.
	c.mustPing("v", netip.MustParseAddr("10.30.0.1"))
}
