package agent

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6/nclient6"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/dataplane/dataplanetest"
	"hearth.dev/hearth/netns"
)

// TestIPv6SLAACAcrossHosts runs the agent's network state and router
// advertisements on two simulated hosts (network namespaces, with
// namespaces plugged in like VM taps): one network with two IPv6
// subnets, a VM in the first on host 0, one in the first and one in the
// second on host 1. Each VM's kernel makes, from its host's
// advertisement, exactly the address IPAM computed (the EUI-64 of its
// MAC in its own subnet, and none in the other) and a default route to
// the router; then they ping each other across hosts, across subnets,
// and both.
func TestIPv6SLAACAcrossHosts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes network namespaces, bridges, VXLAN devices and nftables tables")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (apt-get install iproute2)")
	}
	lab, err := dataplanetest.New(dataplanetest.Config{Hosts: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var planes []*dataplane.Linux
	var ras []*raServers
	var states []netState
	t.Cleanup(func() {
		for _, r := range ras {
			r.stopAll()
		}
		cancel()
		for _, p := range planes {
			p.Close()
		}
		if err := lab.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	})

	const vni = 4601
	hosts := []string{"h0", "h1"}
	hostAddrs := map[string]netip.Addr{}
	for i, h := range lab.Hosts {
		hostAddrs[hosts[i]] = h.Underlay
	}
	type vmSpec struct {
		name, subnet, host string
		mac                string
		tenant             string
	}
	specs := []vmSpec{
		{"a1", "six-a", "h0", "52:54:00:66:00:01", "lab"},
		{"a2", "six-a", "h1", "52:54:00:66:00:02", "lab"},
		{"b1", "six-b", "h1", "52:54:00:66:00:03", "lab"},
		{"c1", "six-c", "h0", "52:54:00:66:00:04", "lab"}, // stateful DHCPv6
		// Another tenant's network with the same name and CIDR, beside
		// a1 on h0.
		{"x1", "six-a", "h0", "52:54:00:66:00:05", "other"},
	}
	stateful := nsSubnet("lab", "six-c", "six", "fd00:6c::/120")
	stateful.Spec.IPv6Mode = api.IPv6ModeDHCPv6
	subnets := []*api.Subnet{nsSubnet("lab", "six-a", "six", "fd00:6a::/64"), nsSubnet("lab", "six-b", "six", "fd00:6b::/64"), stateful,
		nsSubnet("other", "six-a", "six", "fd00:6a::/64")}
	cidr := map[string]netip.Prefix{"six-a": netip.MustParsePrefix("fd00:6a::/64"), "six-b": netip.MustParsePrefix("fd00:6b::/64")}
	network := nsNet("lab", "six", vni, func(n *api.Network) { n.Spec.MTU = 1400; n.Status.Hosts = hosts })
	others := nsNet("other", "six", vni+1, func(n *api.Network) { n.Status.Hosts = []string{"h0"} })
	networks := map[string]*api.Network{"lab": network, "other": others}
	var vms []*api.VirtualMachine
	want := map[string]netip.Addr{}
	ns := map[string]*dataplanetest.Namespace{}
	for _, s := range specs {
		a, ok := api.EUI64(cidr[s.subnet], hw(s.mac))
		if !ok {
			a = netip.MustParseAddr("fd00:6c::10") // IPAM's pick in the DHCPv6 subnet
		}
		want[s.name] = a
		vms = append(vms, nsVM(s.tenant, s.name, "uid-"+s.name, s.host, "six "+s.subnet+" "+a.String()+" "+s.mac))
		n := networks[s.tenant]
		n.Status.Ports = append(n.Status.Ports, api.NetworkPort{VM: s.name, Host: s.host, MAC: s.mac, IPs: []string{a.String()}})
		if ns[s.name], err = lab.NewVM(s.name); err != nil {
			t.Fatal(err)
		}
	}

	for i, h := range lab.Hosts {
		p, err := dataplane.New(dataplane.Config{HostNetns: h.Path(), NetnsPrefix: h.RouterPrefix()})
		if err != nil {
			t.Fatal(err)
		}
		planes = append(planes, p)
		st := hostNetState(netInputs{Host: hosts[i], Underlay: h.DataplaneUnderlay(), VMs: vms,
			Networks: []*api.Network{network, others}, Subnets: subnets, HostAddresses: hostAddrs})
		if len(st.Problems) > 0 {
			t.Fatalf("%s: problems %v", hosts[i], st.Problems)
		}
		// The VMs are namespaces: their ports are veths into them.
		for j := range st.State.Networks {
			for k := range st.State.Networks[j].Ports {
				port := &st.State.Networks[j].Ports[k]
				for _, vm := range vms {
					if port.Name == dataplane.PortName(portKey(vm.Metadata.UID, 0)) {
						port.Veth = &dataplane.VethPeer{Netns: ns[vm.Metadata.Name].Path()}
					}
				}
			}
		}
		if err := p.Apply(ctx, st.State); err != nil {
			t.Fatalf("%s: Apply: %v", hosts[i], err)
		}
		r := newRAServers(p)
		r.sync(ctx, st, nil)
		if len(r.running) != len(st.State.Networks) {
			t.Fatalf("%s: %d advertisement servers, want one per network (%d)", hosts[i], len(r.running), len(st.State.Networks))
		}
		ras = append(ras, r)
		states = append(states, st)
	}

	// The hosts themselves stay out of the tenants' IPv6: no Hearth link
	// in a host's namespace has IPv6 on (the router's leg in its own
	// namespace is the only IPv6 among the VMs).
	for i, h := range lab.Hosts {
		for _, port := range planesPorts(t, h) {
			var v string
			err := netns.Do(h.NS, func() error {
				var err error
				v, err = netns.ReadSysctl("net/ipv6/conf/" + port + "/disable_ipv6")
				return err
			})
			if err != nil || strings.TrimSpace(v) != "1" {
				t.Errorf("%s: %s has disable_ipv6 %q (%v), want 1", hosts[i], port, v, err)
			}
		}
	}

	// The VMs bring their NIC up with the kernel's defaults: IPv6 on,
	// router advertisements accepted, SLAAC.
	for _, s := range specs {
		h, err := ns[s.name].Handle()
		if err != nil {
			t.Fatal(err)
		}
		l, err := h.LinkByName(dataplanetest.VMLink)
		if err == nil {
			err = h.LinkSetUp(l)
		}
		h.Close()
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
	// c1's subnet is stateful: no SLAAC address; it asks DHCPv6, and
	// its host's router answers with IPAM's address.
	c1 := dhcp6Lease(t, ns["c1"])
	if c1 != want["c1"] {
		t.Fatalf("c1 got %s by DHCPv6, want IPAM's %s", c1, want["c1"])
	}
	if got := globalAddrs(t, ns["c1"]); len(got) != 0 {
		t.Errorf("c1 made addresses %v by SLAAC in a dhcpv6 subnet", got)
	}
	if err := addAddr6(ns["c1"], c1); err != nil {
		t.Fatal(err)
	}
	for _, s := range specs {
		got := waitGlobalAddrs(t, ns[s.name], want[s.name])
		if !slices.Equal(got, []netip.Addr{want[s.name]}) {
			t.Errorf("%s has global addresses %v, want only IPAM's %s (its own subnet's prefix only)", s.name, got, want[s.name])
		}
	}
	for _, c := range []struct{ from, to string }{
		{"a1", "a2"}, // across hosts, same subnet
		{"a1", "b1"}, // across hosts and subnets
		{"a2", "b1"}, // across subnets on one host
		{"b1", "a1"},
		{"c1", "a1"}, // from the DHCPv6 subnet, on one host
		{"c1", "b1"}, // and across hosts
	} {
		if err := ns[c.from].Ping(want[c.to], 50); err != nil {
			t.Errorf("%s to %s: %v", c.from, c.to, err)
		}
	}
	// The other tenant's x1 got its address from its own network's
	// router and reaches none of lab's VMs, nor they it.
	for _, c := range []struct{ from, to string }{{"x1", "a1"}, {"x1", "a2"}, {"x1", "b1"}, {"a1", "x1"}, {"b1", "x1"}} {
		if err := ns[c.from].Ping(want[c.to], 3); err == nil {
			t.Errorf("%s (%s) reached %s (%s) in another tenant's network", c.from, want[c.from], c.to, want[c.to])
		}
	}

	// Someone deletes h0's router leg; the plane makes it again, and
	// the advertisements follow the new leg: a1, its address gone and
	// its link bounced, makes it again.
	if _, err := lab.Hosts[0].IP("link", "del", "hri4601"); err != nil {
		t.Fatal(err)
	}
	if err := planes[0].Apply(ctx, states[0].State); err != nil {
		t.Fatal(err)
	}
	old := ras[0].running[vni]
	ras[0].sync(ctx, states[0], nil)
	if ras[0].running[vni] == old {
		t.Errorf("the advertisement server stayed on the deleted leg")
	}
	if _, err := ns["a1"].IP("addr", "flush", "dev", dataplanetest.VMLink, "scope", "global"); err != nil {
		t.Fatal(err)
	}
	if _, err := ns["a1"].IP("link", "set", dataplanetest.VMLink, "down"); err != nil {
		t.Fatal(err)
	}
	if _, err := ns["a1"].IP("link", "set", dataplanetest.VMLink, "up"); err != nil {
		t.Fatal(err)
	}
	if got := waitGlobalAddrs(t, ns["a1"], want["a1"]); !slices.Contains(got, want["a1"]) {
		t.Fatalf("a1 has %v after its router's leg was made again, want %s", got, want["a1"])
	}
	if err := ns["a1"].Ping(want["b1"], 50); err != nil {
		t.Errorf("a1 to b1 after the repair: %v", err)
	}
}

// planesPorts lists the links of the network's bridge in a host's
// namespace: the bridge, the VXLAN device, the router's leg and the
// ports.
func planesPorts(t *testing.T, h *dataplanetest.Host) []string {
	t.Helper()
	nl, err := h.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	links, err := nl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		name := l.Attrs().Name
		if strings.HasPrefix(name, "hbr") || strings.HasPrefix(name, "hvx") || strings.HasPrefix(name, "hri") || dataplane.IsPortName(name) {
			out = append(out, name)
		}
	}
	if len(out) < 4 {
		t.Fatalf("%s: Hearth links %v, want a bridge, a VXLAN device, a router leg and ports", h.Name, out)
	}
	return out
}

// waitGlobalAddrs waits up to 20s for addr to be among the global IPv6
// addresses on a VM's NIC, and returns them all.
func waitGlobalAddrs(t *testing.T, n *dataplanetest.Namespace, addr netip.Addr) []netip.Addr {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := globalAddrs(t, n)
		if slices.Contains(got, addr) || time.Now().After(deadline) {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// globalAddrs lists the global IPv6 addresses on a VM's NIC.
func globalAddrs(t *testing.T, n *dataplanetest.Namespace) []netip.Addr {
	t.Helper()
	h, err := n.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(dataplanetest.VMLink)
	if err != nil {
		t.Fatal(err)
	}
	list, err := h.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	var got []netip.Addr
	for _, a := range list {
		ip, _ := netip.AddrFromSlice(a.IP)
		if ip.IsGlobalUnicast() && !ip.IsLinkLocalUnicast() {
			got = append(got, ip)
		}
	}
	return got
}

// dhcp6Lease runs a DHCPv6 exchange (solicit, advertise, request, reply)
// from a VM's NIC and returns the address it was given.
func dhcp6Lease(t *testing.T, n *dataplanetest.Namespace) netip.Addr {
	t.Helper()
	var c *nclient6.Client
	deadline := time.Now().Add(15 * time.Second)
	for {
		// The client binds the NIC's link-local address, which is
		// usable once duplicate address detection is done.
		err := netns.Do(n.NS, func() error {
			var err error
			c, err = nclient6.New(dataplanetest.VMLink, nclient6.WithTimeout(time.Second), nclient6.WithRetry(5))
			return err
		})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: DHCPv6 client: %v", n.Name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	adv, err := c.Solicit(ctx)
	if err != nil {
		t.Fatalf("%s: solicit: %v", n.Name, err)
	}
	reply, err := c.Request(ctx, adv)
	if err != nil {
		t.Fatalf("%s: request: %v", n.Name, err)
	}
	ia := reply.Options.OneIANA()
	if ia == nil || ia.Options.OneAddress() == nil {
		t.Fatalf("%s: reply without an address: %s", n.Name, reply.Summary())
	}
	a, _ := netip.AddrFromSlice(ia.Options.OneAddress().IPv6Addr)
	return a
}

// addAddr6 puts an address a DHCPv6 client got on a VM's NIC, as the
// client would (a /128: the prefix is on-link from the advertisement).
func addAddr6(n *dataplanetest.Namespace, a netip.Addr) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(dataplanetest.VMLink)
	if err != nil {
		return err
	}
	return h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(128, 128)}, Flags: unix.IFA_F_NODAD})
}
