package agent

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/dataplane"
)

// A small world for hostNetState: host h1 (10.0.0.1) and h2 (10.0.0.2);
// tenants red and blue each with a network "net" on 192.168.1.0/24 (same
// CIDR), red's with a second subnet 192.168.2.0/24 and routed out through
// external network "internet" (203.0.113.0/24).

func nsNet(tenant, name string, vni int, change ...func(*api.Network)) *api.Network {
	n := &api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"},
		Metadata: api.ObjectMeta{Tenant: tenant, Name: name}, Spec: api.NetworkSpec{MTU: 1450}}
	n.Status.VNI = vni
	for _, c := range change {
		c(n)
	}
	return n
}

func nsSubnet(tenant, name, network, cidr string) *api.Subnet {
	s := &api.Subnet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Subnet"},
		Metadata: api.ObjectMeta{Tenant: tenant, Name: name}, Spec: api.SubnetSpec{Network: network, CIDR: cidr}}
	s.Spec.Default()
	return s
}

// nsVM is a VM of tenant on host with one NIC per interface given as
// "network subnet ip mac".
func nsVM(tenant, name, uid, host string, ifcs ...string) *api.VirtualMachine {
	vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
		Metadata: api.ObjectMeta{Tenant: tenant, Name: name, UID: uid}, Spec: api.VirtualMachineSpec{Host: host}}
	for _, s := range ifcs {
		f := strings.Fields(s)
		vm.Spec.NICs = append(vm.Spec.NICs, api.VMNIC{Network: f[0]})
		vm.Status.Interfaces = append(vm.Status.Interfaces, api.VMInterfaceStatus{Network: f[0], Subnet: f[1], IP: f[2], MAC: f[3]})
	}
	return vm
}

func nsExt() *api.ExternalNetwork {
	x := &api.ExternalNetwork{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "ExternalNetwork"},
		Metadata: api.ObjectMeta{Name: "internet"}, Spec: api.ExternalNetworkSpec{CIDR: "203.0.113.0/24", Gateway: "203.0.113.1"}}
	return x
}

func nsFIP(tenant, name, vm, addr, target, host string) *api.FloatingIP {
	f := &api.FloatingIP{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "FloatingIP"},
		Metadata: api.ObjectMeta{Tenant: tenant, Name: name},
		Spec:     api.FloatingIPSpec{ExternalNetwork: "internet", Target: &api.FloatingIPTarget{VM: vm}}}
	f.Status.Phase, f.Status.Address, f.Status.TargetIP, f.Status.Host = api.FloatingIPAssociated, addr, target, host
	return f
}

func hw(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

var (
	nsUnderlay = dataplane.Underlay{Device: "eth1", Address: netip.MustParseAddr("10.0.0.1")}
	nsHosts    = map[string]netip.Addr{"h1": netip.MustParseAddr("10.0.0.1"), "h2": netip.MustParseAddr("10.0.0.2"), "h3": netip.MustParseAddr("10.0.0.3")}
)

// nsWorld is the base world; each case changes a copy.
func nsWorld() netInputs {
	red := nsNet("red", "net", 100, func(n *api.Network) {
		n.Spec.ExternalNetwork = "internet"
		n.Status.Hosts = []string{"h1", "h2"}
		n.Status.Ports = []api.NetworkPort{
			{VM: "a", NIC: 0, Host: "h1", MAC: "52:54:00:00:00:0a", IPs: []string{"192.168.1.10"}},
			{VM: "b", NIC: 0, Host: "h2", MAC: "52:54:00:00:00:0b", IPs: []string{"192.168.1.11"}},
			{VM: "c", NIC: 0, Host: "h1", MAC: "52:54:00:00:00:0c", IPs: []string{"192.168.2.10"}},
		}
		n.Status.Routers = []api.NetworkRouter{{Host: "h1", ExternalAddress: "203.0.113.10"}, {Host: "h2", ExternalAddress: "203.0.113.11"}}
	})
	blue := nsNet("blue", "net", 200, func(n *api.Network) {
		n.Status.Hosts = []string{"h1"}
		n.Status.Ports = []api.NetworkPort{{VM: "a", NIC: 0, Host: "h1", MAC: "52:54:00:00:01:0a", IPs: []string{"192.168.1.10"}}}
		n.Status.Routers = []api.NetworkRouter{{Host: "h1"}}
	})
	return netInputs{
		Host:     "h1",
		Underlay: nsUnderlay,
		VMs: []*api.VirtualMachine{
			nsVM("red", "a", "uid-red-a", "h1", "net one 192.168.1.10 52:54:00:00:00:0a"),
			nsVM("red", "c", "uid-red-c", "h1", "net two 192.168.2.10 52:54:00:00:00:0c"),
			nsVM("blue", "a", "uid-blue-a", "h1", "net one 192.168.1.10 52:54:00:00:01:0a"),
		},
		Networks: []*api.Network{red, blue},
		Subnets: []*api.Subnet{
			nsSubnet("red", "one", "net", "192.168.1.0/24"), nsSubnet("red", "two", "net", "192.168.2.0/24"),
			nsSubnet("blue", "one", "net", "192.168.1.0/24"),
		},
		FloatingIPs:      []*api.FloatingIP{nsFIP("red", "web", "a", "203.0.113.50", "192.168.1.10", "h1")},
		ExternalNetworks: []*api.ExternalNetwork{nsExt()},
		HostAddresses:    nsHosts,
		ExternalDevices:  map[string]string{"": "hext"},
	}
}

// The networks of nsWorld as h1 carries them.
func nsRed() dataplane.Network {
	return dataplane.Network{Name: "red/net", VNI: 100, MTU: 1450,
		Peers: addrs("10.0.0.2"),
		Subnets: []dataplane.Subnet{
			{CIDR: netip.MustParsePrefix("192.168.1.0/24"), Gateway: netip.MustParseAddr("192.168.1.1")},
			{CIDR: netip.MustParsePrefix("192.168.2.0/24"), Gateway: netip.MustParseAddr("192.168.2.1")},
		},
		Ports: []dataplane.Port{
			{Name: dataplane.PortName("uid-red-a/0"), MAC: hw("52:54:00:00:00:0a"), Addresses: addrs("192.168.1.10")},
			{Name: dataplane.PortName("uid-red-c/0"), MAC: hw("52:54:00:00:00:0c"), Addresses: addrs("192.168.2.10")},
		},
		Remote:      []dataplane.RemotePort{{Host: netip.MustParseAddr("10.0.0.2"), MAC: hw("52:54:00:00:00:0b"), Addresses: addrs("192.168.1.11")}},
		External:    &dataplane.External{Device: "hext", Address: netip.MustParsePrefix("203.0.113.10/24"), Gateway: netip.MustParseAddr("203.0.113.1")},
		FloatingIPs: []dataplane.FloatingIP{{External: netip.MustParseAddr("203.0.113.50"), Internal: netip.MustParseAddr("192.168.1.10")}},
	}
}

func nsBlue() dataplane.Network {
	return dataplane.Network{Name: "blue/net", VNI: 200, MTU: 1450,
		Subnets: []dataplane.Subnet{{CIDR: netip.MustParsePrefix("192.168.1.0/24"), Gateway: netip.MustParseAddr("192.168.1.1")}},
		Ports:   []dataplane.Port{{Name: dataplane.PortName("uid-blue-a/0"), MAC: hw("52:54:00:00:01:0a"), Addresses: addrs("192.168.1.10")}},
	}
}

func TestHostNetState(t *testing.T) {
	tests := []struct {
		name   string
		change func(*netInputs)
		want   []dataplane.Network
		// ports is what each VM's NICs get ("" none), when checked.
		ports    map[string][]string
		problems []string // substrings, one per problem, in order
	}{
		{
			name: "two tenants share a CIDR, several subnets, remote ports, SNAT and a floating IP",
			want: []dataplane.Network{nsBlue(), nsRed()},
			ports: map[string][]string{
				"red/a": {dataplane.PortName("uid-red-a/0")}, "red/c": {dataplane.PortName("uid-red-c/0")},
				"blue/a": {dataplane.PortName("uid-blue-a/0")},
			},
		},
		{
			name:   "a VM removed takes its port; its network's last VM takes the network",
			change: func(in *netInputs) { in.VMs = in.VMs[:2] },
			want:   []dataplane.Network{nsRed()},
		},
		{
			name: "a network deleted: its VMs' NICs have no port, and it is said",
			change: func(in *netInputs) {
				in.Networks = in.Networks[:1]
			},
			want:     []dataplane.Network{nsRed()},
			ports:    map[string][]string{"blue/a": {""}, "red/a": {dataplane.PortName("uid-red-a/0")}, "red/c": {dataplane.PortName("uid-red-c/0")}},
			problems: []string{"VirtualMachine blue/a: nics[0]: network net does not exist"},
		},
		{
			name:     "a network without a VNI yet is not carried",
			change:   func(in *netInputs) { in.Networks[1].Status.VNI = 0 },
			want:     []dataplane.Network{nsRed()},
			problems: []string{"Network blue/net: has no VNI yet"},
		},
		{
			name: "a VM on another host is not this host's port",
			change: func(in *netInputs) {
				in.VMs[2].Spec.Host = "h2"
			},
			want: []dataplane.Network{nsRed()},
		},
		{
			name: "another tenant's floating IP naming a VM of the same name does not reach it",
			change: func(in *netInputs) {
				in.FloatingIPs = []*api.FloatingIP{nsFIP("blue", "steal", "a", "203.0.113.60", "192.168.1.10", "h1")}
			},
			want: []dataplane.Network{nsBlue(), func() dataplane.Network { n := nsRed(); n.FloatingIPs = nil; return n }()},
		},
		{
			name: "a floating IP associated on another host, or not associated, is not here",
			change: func(in *netInputs) {
				f2 := nsFIP("red", "other", "a", "203.0.113.51", "192.168.1.10", "h1")
				f2.Status.Phase = api.FloatingIPAllocated
				in.FloatingIPs[0].Status.Host = "h2"
				in.FloatingIPs = append(in.FloatingIPs, f2)
			},
			want: []dataplane.Network{nsBlue(), func() dataplane.Network { n := nsRed(); n.FloatingIPs = nil; return n }()},
		},
		{
			name: "no router address yet: no way out and no floating IP",
			change: func(in *netInputs) {
				in.Networks[0].Status.Routers = nil
			},
			want: []dataplane.Network{nsBlue(), func() dataplane.Network { n := nsRed(); n.External, n.FloatingIPs = nil, nil; return n }()},
		},
		{
			name: "the external network's own device wins over the host.s default",
			change: func(in *netInputs) {
				in.ExternalNetworks[0].Spec.Interface = "brlan"
			},
			want: []dataplane.Network{nsBlue(), func() dataplane.Network { n := nsRed(); n.External.Device = "brlan"; return n }()},
		},
		{
			name: "no device for the external network: said, the network is carried without it",
			change: func(in *netInputs) {
				in.ExternalDevices = nil
			},
			want:     []dataplane.Network{nsBlue(), func() dataplane.Network { n := nsRed(); n.External, n.FloatingIPs = nil, nil; return n }()},
			problems: []string{"ExternalNetwork internet: this host has no device for it"},
		},
		{
			name: "no device configured: the bridge found holding an address in the external CIDR",
			change: func(in *netInputs) {
				in.ExternalDevices = nil
				in.FoundDevices = map[string]string{"internet": "br0"}
			},
			want: []dataplane.Network{nsBlue(), func() dataplane.Network { n := nsRed(); n.External.Device = "br0"; return n }()},
		},
		{
			name: "a device configured wins over the bridge found",
			change: func(in *netInputs) {
				in.FoundDevices = map[string]string{"internet": "br0"}
			},
			want: []dataplane.Network{nsBlue(), nsRed()},
		},
		{
			name: "a peer without an address is said and left out, with its ports",
			change: func(in *netInputs) {
				in.HostAddresses = map[string]netip.Addr{"h1": nsUnderlay.Address}
			},
			want:     []dataplane.Network{nsBlue(), func() dataplane.Network { n := nsRed(); n.Peers, n.Remote = nil, nil; return n }()},
			problems: []string{"Network red/net: host h2 carries it but has no underlay address"},
		},
		{
			name: "a subnet not known yet: the port is made without its address",
			change: func(in *netInputs) {
				in.Subnets = in.Subnets[1:]
				in.FloatingIPs = nil
			},
			want: []dataplane.Network{nsBlue(), func() dataplane.Network {
				n := nsRed()
				n.Subnets = n.Subnets[1:]
				n.Ports[0].Addresses = nil
				n.Remote[0].Addresses = nil
				n.FloatingIPs = nil
				return n
			}()},
			problems: []string{"VirtualMachine red/a: status.interfaces[0].ip: 192.168.1.10 is in no subnet"},
		},
		{
			name: "a subnet with a bad gateway is said; the rest is carried",
			change: func(in *netInputs) {
				in.Subnets[1].Spec.Gateway = "nonsense"
			},
			want: []dataplane.Network{nsBlue(), func() dataplane.Network {
				n := nsRed()
				n.Subnets = n.Subnets[:1]
				n.Ports[1].Addresses = nil
				return n
			}()},
			problems: []string{"Subnet red/two: spec.gateway", "VirtualMachine red/c: status.interfaces[0].ip: 192.168.2.10 is in no subnet"},
		},
		{
			name: "a remote port claiming a local NIC's MAC is left out",
			change: func(in *netInputs) {
				in.Networks[0].Status.Ports[1].MAC = "52:54:00:00:00:0a"
			},
			want: []dataplane.Network{nsBlue(), func() dataplane.Network { n := nsRed(); n.Remote = nil; return n }()},
		},
		{
			name: "another tenant's subnet naming a network of the same name is not on it",
			change: func(in *netInputs) {
				in.Subnets = append(in.Subnets, nsSubnet("blue", "extra", "net", "10.99.0.0/24"))
			},
			want: []dataplane.Network{func() dataplane.Network {
				n := nsBlue()
				// Blue's own network gets it (subnets in name order); red's
				// is as before.
				n.Subnets = append([]dataplane.Subnet{{CIDR: netip.MustParsePrefix("10.99.0.0/24"), Gateway: netip.MustParseAddr("10.99.0.1")}}, n.Subnets...)
				return n
			}(), nsRed()},
		},
		{
			name: "IPv6 through the external network: only the subnets in a prefix delegated to the network's tenant are routed",
			change: func(in *netInputs) {
				in.Subnets = append(in.Subnets, nsSubnet("red", "six", "net", "2001:db8:100:1::/64"), nsSubnet("red", "ula", "net", "fd00:9::/64"),
					nsSubnet("red", "blues", "net", "2001:db8:200:1::/64"))
				in.ExternalNetworks[0].Spec.IPv6 = &api.ExternalIPv6{CIDR: "2001:db8:ff::/64", Gateway: "2001:db8:ff::1", Prefixes: []api.DelegatedPrefix{
					{Prefix: "2001:db8:100::/56", Tenant: "red"}, {Prefix: "2001:db8:200::/56", Tenant: "blue"},
				}}
			},
			want: []dataplane.Network{nsBlue(), func() dataplane.Network {
				n := nsRed()
				sub := func(c string) dataplane.Subnet {
					p := netip.MustParsePrefix(c)
					return dataplane.Subnet{CIDR: p, Gateway: p.Addr().Next()}
				}
				// In name order: blues, one, six, two, ula.
				n.Subnets = []dataplane.Subnet{sub("2001:db8:200:1::/64"), n.Subnets[0], sub("2001:db8:100:1::/64"), n.Subnets[1], sub("fd00:9::/64")}
				a, _ := api.EUI64(netip.MustParsePrefix("2001:db8:ff::/64"), dataplane.ExternalMAC(nsUnderlay.Address, 100))
				n.External.IPv6 = &dataplane.ExternalIPv6{Address: netip.PrefixFrom(a, 64), Gateway: netip.MustParseAddr("2001:db8:ff::1"),
					Routed: []netip.Prefix{netip.MustParsePrefix("2001:db8:100:1::/64")}}
				return n
			}()},
		},
		{
			name: "two networks with one VNI: the later one goes",
			change: func(in *netInputs) {
				in.Networks[1].Status.VNI = 100
			},
			want:     []dataplane.Network{func() dataplane.Network { n := nsBlue(); n.VNI = 100; return n }()},
			problems: []string{"Network red/net: conflicts with another network"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := nsWorld()
			if tt.change != nil {
				tt.change(&in)
			}
			got := hostNetState(in)
			if !reflect.DeepEqual(got.State.Networks, tt.want) {
				t.Errorf("networks:\n got %s\nwant %s", js(got.State.Networks), js(tt.want))
			}
			if got.State.Underlay != nsUnderlay {
				t.Errorf("underlay = %+v, want %+v", got.State.Underlay, nsUnderlay)
			}
			if err := got.State.Validate(); err != nil {
				t.Errorf("the state is not valid: %v", err)
			}
			for vm, want := range tt.ports {
				if g := got.Ports[vm]; !reflect.DeepEqual(g, want) {
					t.Errorf("ports of %s = %q, want %q", vm, g, want)
				}
			}
			if len(got.Problems) != len(tt.problems) {
				t.Fatalf("problems = %q, want %d like %q", got.Problems, len(tt.problems), tt.problems)
			}
			for i, p := range got.Problems {
				if !strings.Contains(p.String(), tt.problems[i]) {
					t.Errorf("problems[%d] = %q, want it to say %q", i, p, tt.problems[i])
				}
			}
		})
	}
}

// TestHostNetStateDHCP: each subnet's DHCP gets the static leases of this
// host's NICs in it and the subnet's options, the network's domain (the
// default one here) as the search domain, and the route to the metadata
// address through its gateway.
func TestHostNetStateDHCP(t *testing.T) {
	in := nsWorld()
	in.Subnets[0].Spec.DNSServers = []string{"9.9.9.9"}
	in.Subnets[0].Spec.Routes = []api.Route{{Destination: "10.99.0.0/16", Gateway: "192.168.1.254"}}
	in.Subnets[2].Spec.DHCP.Disabled = true
	got := hostNetState(in)
	want := map[uint32][]dhcpSubnet{
		100: {
			{Key: "red/one", CIDR: netip.MustParsePrefix("192.168.1.0/24"), Gateway: netip.MustParseAddr("192.168.1.1"),
				DNS: addrs("9.9.9.9"), Routes: []dhcpRoute{{netip.MustParsePrefix("10.99.0.0/16"), netip.MustParseAddr("192.168.1.254")},
					{netip.MustParsePrefix("169.254.169.254/32"), netip.MustParseAddr("192.168.1.1")}},
				MTU: 1450, Domain: "net.red.hearth", Lease: 3600, Leases: map[string]netip.Addr{"52:54:00:00:00:0a": netip.MustParseAddr("192.168.1.10")}},
			{Key: "red/two", CIDR: netip.MustParsePrefix("192.168.2.0/24"), Gateway: netip.MustParseAddr("192.168.2.1"),
				DNS: addrs("192.168.2.1"), Routes: []dhcpRoute{{netip.MustParsePrefix("169.254.169.254/32"), netip.MustParseAddr("192.168.2.1")}},
				MTU: 1450, Domain: "net.red.hearth", Lease: 3600,
				Leases: map[string]netip.Addr{"52:54:00:00:00:0c": netip.MustParseAddr("192.168.2.10")}},
		},
	}
	if !reflect.DeepEqual(got.Subnets, want) {
		t.Errorf("dhcp:\n got %s\nwant %s", js(got.Subnets), js(want))
	}
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestNetPorts: a VM's NICs are plugged into their ports only once the
// plane has them; until then the VM waits, saying which NIC and why.
func TestNetPorts(t *testing.T) {
	vm := nsVM("red", "a", "uid-red-a", "h1", "net one 192.168.1.10 52:54:00:00:00:0a", "net one 192.168.1.12 52:54:00:00:00:0d")
	tap0, tap1 := dataplane.PortName("uid-red-a/0"), dataplane.PortName("uid-red-a/1")
	tests := []struct {
		name    string
		vm      *api.VirtualMachine
		vmPorts []string
		ready   []string
		want    []string
		wait    string
	}{
		{name: "every port there", vm: vm, vmPorts: []string{tap0, tap1}, ready: []string{tap0, tap1}, want: []string{tap0, tap1}},
		{name: "one port not made yet", vm: vm, vmPorts: []string{tap0, tap1}, ready: []string{tap0}, wait: "spec.nics[1]: waiting for its port on network net"},
		{name: "a NIC whose network is not carried", vm: vm, vmPorts: []string{tap0, ""}, ready: []string{tap0}, wait: "spec.nics[1]: waiting for its port"},
		{name: "not allocated yet", vm: func() *api.VirtualMachine {
			v := nsVM("red", "a", "uid-red-a", "h1", "net one 192.168.1.10 52:54:00:00:00:0a")
			v.Status.Interfaces = nil
			return v
		}(), wait: "spec.nics[0]: the server has not allocated its address yet"},
		{name: "no NICs", vm: nsVM("red", "a", "uid-red-a", "h1"), want: []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &netController{ready: map[string]bool{}, vmPorts: map[string][]string{"red/a": tt.vmPorts}}
			for _, p := range tt.ready {
				n.ready[p] = true
			}
			got, err := n.ports(tt.vm)
			if tt.wait != "" {
				var rw *reasonWait
				if !errors.As(err, &rw) || rw.reason != api.ReasonWaitingForNetwork || !strings.Contains(err.Error(), tt.wait) {
					t.Fatalf("ports = %q, %v; want a %s wait saying %q", got, err, api.ReasonWaitingForNetwork, tt.wait)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ports = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
