package dataplane_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/dataplane/dataplanetest"
	"hearth.dev/hearth/netns"
)

// externalAddr6 is a host's router address on the internet's IPv6 link:
// the EUI-64 of its external leg's MAC, as the agent makes it.
func (c *tcluster) externalAddr6(n *tnet, host int) netip.Prefix {
	mac := dataplane.ExternalMAC(c.lab.Hosts[host].Underlay, n.vni)
	b := c.inet6.Masked().Addr().As16()
	b[8], b[9], b[10] = mac[0]^0x02, mac[1], mac[2]
	b[11], b[12] = 0xff, 0xfe
	b[13], b[14], b[15] = mac[3], mac[4], mac[5]
	return netip.PrefixFrom(netip.AddrFrom16(b), c.inet6.Bits())
}

// withInternet6 gives the lab's internet an IPv6 address on its bridge
// and treats routed (the prefix delegated to the tenant) as on-link
// there, as an upstream router that delegates it does.
func (c *tcluster) withInternet6(link, routed string) {
	c.t.Helper()
	c.inet6 = netip.MustParsePrefix(link)
	inet := c.lab.Internet
	err := netns.Do(inet.NS, func() error {
		return netns.WriteSysctl("net/ipv6/conf/"+dataplanetest.InternetBr+"/disable_ipv6", "0")
	})
	if err != nil {
		c.t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-6", "addr", "add", c.inet6.String(), "dev", dataplanetest.InternetBr, "nodad"},
		{"-6", "route", "add", routed, "dev", dataplanetest.InternetBr},
	} {
		if out, err := inet.IP(args...); err != nil {
			c.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// A network's IPv6 subnets delegated to it are reached from the external
// network with the VMs' own addresses, each through the host its VM runs
// on (NDP proxy on every host's router); its other IPv6 subnets are not;
// security groups still decide; a VM that moves is reached on its new
// host at once; and without the IPv6 side nothing of it is left.
func TestIPv6ThroughExternalNetwork(t *testing.T) {
	c := newCluster(t, 2)
	c.withInternet6("fd00:ee::1/64", "2001:db8:100::/56")
	n := c.addNet("v6out", 950, true, "2001:db8:100:1::/64", "fd00:9::/64")
	n.routed6 = []netip.Prefix{netip.MustParsePrefix("2001:db8:100:1::/64")}
	v1 := c.addVM("v1", "v6out", 0, "2001:db8:100:1::10")
	v2 := c.addVM("v2", "v6out", 1, "2001:db8:100:1::11")
	v3 := c.addVM("v3", "v6out", 1, "fd00:9::10")
	c.apply()

	inet := c.lab.Internet
	gw6 := c.inet6.Addr()
	srv, err := inet.ServeUDP(7000, "internet")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	vmSrv, err := v1.ns.ServeUDP(7001, "v1")
	if err != nil {
		t.Fatal(err)
	}
	defer vmSrv.Close()

	// Both ways, with the VMs' own addresses: no NAT.
	if err := inet.Ping(v1.addr, 50); err != nil {
		t.Fatal(err)
	}
	if err := inet.Ping(v2.addr, 50); err != nil {
		t.Fatal(err)
	}
	if got, err := inet.AskUDP(v1.addr, 7001); err != nil || got != "v1 "+gw6.String() {
		t.Errorf("the internet asking v1: %q, %v; want %q", got, err, "v1 "+gw6.String())
	}
	if got, err := v1.ns.AskUDP(gw6, 7000); err != nil || got != "internet "+v1.addr.String() {
		t.Errorf("v1 asking the internet: %q, %v; want %q (its own address)", got, err, "internet "+v1.addr.String())
	}

	// Each address is answered for by its VM's host's router, and only
	// by it.
	routerMAC := func(host int) string {
		t.Helper()
		r := &dataplanetest.Namespace{Name: c.planes[host].RouterNetns(950)}
		mac, err := r.MACOf("external")
		if err != nil {
			t.Fatal(err)
		}
		return mac.String()
	}
	waitNeighbour := func(ip netip.Addr, want string) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for {
			got, err := inet.Neighbour(ip)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the internet has %v for %s, want %s", got, ip, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitNeighbour(v1.addr, routerMAC(0))
	waitNeighbour(v2.addr, routerMAC(1))
	if err := inet.Ping(c.externalAddr6(n, 0).Addr(), 5); err != nil {
		t.Errorf("the router's external IPv6 address does not answer ping: %v", err)
	}

	// A subnet not delegated stays inside, even for an internet that
	// routes it to the router.
	if out, err := inet.IP("-6", "route", "add", "fd00:9::/64", "via", c.externalAddr6(n, 1).Addr().String()); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := inet.Ping(v3.addr, 3); err == nil {
		t.Errorf("the internet reached %s, which is not in a routed subnet", v3.addr)
	}
	if got, err := v3.ns.AskUDPFor(gw6, 7000, 1500*time.Millisecond); err == nil {
		t.Errorf("%s reached the internet: %q", v3.addr, got)
	}

	// Security groups apply: a port with groups and no ingress rule is
	// closed to the internet, and one rule opens it (fresh flows each
	// time: established ones outlive rule changes by design).
	v2Srv, err := v2.ns.ServeUDP(7002, "v2")
	if err != nil {
		t.Fatal(err)
	}
	defer v2Srv.Close()
	v2.sec = &dataplane.PortSecurity{Egress: []dataplane.SecurityRule{{}}}
	c.apply()
	if got, err := inet.AskUDPFor(v2.addr, 7002, 1500*time.Millisecond); err == nil {
		t.Errorf("the internet reached %s through a security group without ingress rules: %q", v2.addr, got)
	}
	if got, err := v2.ns.AskUDP(gw6, 7000); err != nil || got != "internet "+v2.addr.String() {
		t.Errorf("v2 asking the internet: %q, %v", got, err) // its own traffic out, and the answers, pass
	}
	v2.sec.Ingress = []dataplane.SecurityRule{{Protocol: "udp", FromPort: 7002, ToPort: 7002, CIDR: c.inet6.Masked()}}
	c.apply()
	if got, err := inet.AskUDP(v2.addr, 7002); err != nil || got != "v2 "+gw6.String() {
		t.Errorf("an ingress rule for the internet did not open %s: %q, %v", v2.addr, got, err)
	}

	// v1 moves to the second host: the internet learns at once.
	v1.host = 1
	c.apply()
	waitNeighbour(v1.addr, routerMAC(1))
	if got, err := inet.AskUDP(v1.addr, 7001); err != nil || got != "v1 "+gw6.String() {
		t.Errorf("after the move, the internet asking v1: %q, %v", got, err)
	}

	// Without the IPv6 side, nothing of it is left.
	n.routed6 = nil
	c.apply()
	r := &dataplanetest.Namespace{Name: c.planes[1].RouterNetns(950)}
	if out, _ := r.IP("-6", "neigh", "show", "proxy"); strings.TrimSpace(out) != "" {
		t.Errorf("the router still answers for: %s", out)
	}
	if out, _ := r.IP("-6", "route", "show", "default"); strings.TrimSpace(out) != "" {
		t.Errorf("the router still has an IPv6 default route: %s", out)
	}
	if got, err := inet.AskUDPFor(v1.addr, 7001, 1500*time.Millisecond); err == nil {
		t.Errorf("the internet still reaches v1: %q", got)
	}
}
