package dataplane_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/dataplane/dataplanetest"
)

// This file is the tests' stand-in for the agent: a cluster described as
// networks and VMs placed on hosts, and the HostState each host's Plane
// gets from it.

type tnet struct {
	name     string
	vni      uint32
	mtu      int
	subnets  []dataplane.Subnet
	external bool
	// routed6, when not nil, gives the external side IPv6 (the
	// internet's inet6) and routes these subnets out.
	routed6 []netip.Prefix
}

type tvm struct {
	name string
	net  string
	host int
	addr netip.Addr
	mac  net.HardwareAddr
	fip  netip.Addr // floating IP, if any
	ns   *dataplanetest.Namespace
	sec  *dataplane.PortSecurity // security groups' rules, if any
}

type tcluster struct {
	t      testing.TB
	lab    *dataplanetest.Lab
	planes []*dataplane.Linux
	nets   []*tnet
	vms    []*tvm
	groups []dataplane.AddressGroup
	// inet6 is the internet's IPv6 address on its bridge, with the
	// link's prefix (set by the tests that route IPv6 out).
	inet6 netip.Prefix
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes network namespaces, bridges, VXLAN devices and nftables tables")
	}
}

func newCluster(t testing.TB, hosts int) *tcluster {
	t.Helper()
	requireRoot(t)
	// The tests inspect and break things with iproute2's ip and bridge,
	// as a person would.
	for _, tool := range []string{"ip", "bridge"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install iproute2)", tool)
		}
	}
	lab, err := dataplanetest.New(dataplanetest.Config{Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	c := &tcluster{t: t, lab: lab}
	t.Cleanup(func() {
		for _, p := range c.planes {
			if p != nil {
				p.Close()
			}
		}
		if err := lab.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	})
	for _, h := range lab.Hosts {
		c.planes = append(c.planes, c.newPlane(h))
	}
	return c
}

func (c *tcluster) newPlane(h *dataplanetest.Host) *dataplane.Linux {
	c.t.Helper()
	p, err := dataplane.New(dataplane.Config{
		HostNetns:   h.Path(),
		NetnsPrefix: h.RouterPrefix(),
		Logf: func(format string, args ...any) {
			if testing.Verbose() {
				c.t.Logf("%s: "+format, append([]any{h.Name}, args...)...)
			}
		},
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return p
}

func (c *tcluster) addNet(name string, vni uint32, external bool, cidrs ...string) *tnet {
	n := &tnet{name: name, vni: vni, external: external}
	for _, cidr := range cidrs {
		p := netip.MustParsePrefix(cidr)
		n.subnets = append(n.subnets, dataplane.Subnet{CIDR: p, Gateway: p.Addr().Next()})
	}
	c.nets = append(c.nets, n)
	return n
}

// addVM places a VM (a namespace) on a host, with a MAC in QEMU's range.
func (c *tcluster) addVM(name, network string, host int, addr string) *tvm {
	c.t.Helper()
	ns, err := c.lab.NewVM(name)
	if err != nil {
		c.t.Fatal(err)
	}
	vm := &tvm{name: name, net: network, host: host, addr: netip.MustParseAddr(addr), ns: ns,
		mac: net.HardwareAddr{0x52, 0x54, 0, 0xaa, byte(len(c.vms) >> 8), byte(len(c.vms) + 1)}}
	c.vms = append(c.vms, vm)
	return vm
}

func (c *tcluster) net(name string) *tnet {
	for _, n := range c.nets {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no network %s", name)
	return nil
}

func (n *tnet) subnetOf(a netip.Addr) dataplane.Subnet {
	for _, s := range n.subnets {
		if s.CIDR.Contains(a) {
			return s
		}
	}
	panic(fmt.Sprintf("%s is in no subnet of %s", a, n.name))
}

// externalAddr is a host's external address for a network: unique per
// network and host.
func (c *tcluster) externalAddr(n *tnet, host int) netip.Prefix {
	base := c.lab.Config.Internet.Masked().Addr().As4()
	idx := 0
	for i, m := range c.nets {
		if m == n {
			idx = i
		}
	}
	base[3] = byte(10 + idx*10 + host)
	return netip.PrefixFrom(netip.AddrFrom4(base), c.lab.Config.Internet.Bits())
}

// state is what a host's Plane gets: the networks with a VM on the host.
func (c *tcluster) state(host int) dataplane.HostState {
	h := c.lab.Hosts[host]
	s := dataplane.HostState{Underlay: h.DataplaneUnderlay(), AddressGroups: c.groups}
	for _, n := range c.nets {
		onHost := map[int]bool{}
		for _, vm := range c.vms {
			if vm.net == n.name {
				onHost[vm.host] = true
			}
		}
		if !onHost[host] {
			continue
		}
		dn := dataplane.Network{Name: "test/" + n.name, VNI: n.vni, MTU: n.mtu, Subnets: n.subnets}
		for i := range c.lab.Hosts {
			if i != host && onHost[i] {
				dn.Peers = append(dn.Peers, c.lab.Hosts[i].Underlay)
			}
		}
		if n.external {
			dn.External = &dataplane.External{Device: dataplanetest.ExternalLink, Address: c.externalAddr(n, host), Gateway: c.lab.InternetGateway}
			if n.routed6 != nil {
				dn.External.IPv6 = &dataplane.ExternalIPv6{Address: c.externalAddr6(n, host), Gateway: c.inet6.Addr(), Routed: n.routed6}
			}
		}
		for _, vm := range c.vms {
			if vm.net != n.name {
				continue
			}
			if vm.host == host {
				dn.Ports = append(dn.Ports, dataplane.Port{
					Name: dataplane.PortName(vm.name), MAC: vm.mac, Addresses: []netip.Addr{vm.addr},
					Veth: &dataplane.VethPeer{Netns: vm.ns.Path()}, Security: vm.sec,
				})
				if vm.fip.IsValid() {
					dn.FloatingIPs = append(dn.FloatingIPs, dataplane.FloatingIP{External: vm.fip, Internal: vm.addr})
				}
			} else {
				dn.Remote = append(dn.Remote, dataplane.RemotePort{Host: c.lab.Hosts[vm.host].Underlay, MAC: vm.mac, Addresses: []netip.Addr{vm.addr}})
			}
		}
		s.Networks = append(s.Networks, dn)
	}
	return s
}

// apply applies every host's state, then configures the VMs' NICs.
func (c *tcluster) apply() {
	c.t.Helper()
	for i, p := range c.planes {
		if err := p.Apply(context.Background(), c.state(i)); err != nil {
			c.t.Fatalf("%s: Apply: %v", c.lab.Hosts[i].Name, err)
		}
	}
	for _, vm := range c.vms {
		n := c.net(vm.net)
		s := n.subnetOf(vm.addr)
		if err := vm.ns.Configure(netip.PrefixFrom(vm.addr, s.CIDR.Bits()), s.Gateway); err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *tcluster) vm(name string) *tvm {
	for _, vm := range c.vms {
		if vm.name == name {
			return vm
		}
	}
	c.t.Fatalf("no VM %s", name)
	return nil
}

func (c *tcluster) mustPing(from string, to netip.Addr) {
	c.t.Helper()
	if err := c.vm(from).ns.Ping(to, 50); err != nil {
		c.t.Fatal(err)
	}
}

func (c *tcluster) mustNotPing(from string, to netip.Addr) {
	c.t.Helper()
	if err := c.vm(from).ns.Ping(to, 3); err == nil {
		c.t.Fatalf("%s reached %s; it must not", from, to)
	}
}

// waitChange waits for a Plane to say something changed behind its back.
func waitChange(t testing.TB, p dataplane.Plane, what string) {
	t.Helper()
	select {
	case <-p.Changes():
	case <-time.After(10 * time.Second):
		t.Fatalf("no change reported within 10s after %s", what)
	}
}

// drainChanges forgets pending change notifications.
func drainChanges(p dataplane.Plane) {
	for {
		select {
		case <-p.Changes():
		case <-time.After(300 * time.Millisecond):
			return
		}
	}
}
