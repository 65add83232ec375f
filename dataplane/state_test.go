package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func validState() HostState {
	return HostState{
		Underlay: Underlay{Device: "eth0", Address: netip.MustParseAddr("192.0.2.1")},
		Networks: []Network{{
			Name:    "t/blue",
			VNI:     7,
			Peers:   []netip.Addr{netip.MustParseAddr("192.0.2.2")},
			Subnets: []Subnet{{CIDR: netip.MustParsePrefix("10.0.0.0/24"), Gateway: netip.MustParseAddr("10.0.0.1")}},
			Ports: []Port{{Name: PortName("vm-a/0"), MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1},
				Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.2")}}},
			Remote: []RemotePort{{Host: netip.MustParseAddr("192.0.2.2"), MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2},
				Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.3")}}},
			External:    &External{Device: "br-ext", Address: netip.MustParsePrefix("198.51.100.10/24"), Gateway: netip.MustParseAddr("198.51.100.1")},
			FloatingIPs: []FloatingIP{{External: netip.MustParseAddr("198.51.100.50"), Internal: netip.MustParseAddr("10.0.0.2")}},
		}},
	}
}

func TestValidate(t *testing.T) {
	if err := (&HostState{Underlay: validState().Underlay}).Validate(); err != nil {
		t.Fatalf("a host with no networks: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(s *HostState)
		want   []string // field paths with errors, in order
	}{
		{"valid", func(s *HostState) {}, nil},
		{"no underlay", func(s *HostState) { s.Underlay = Underlay{} }, []string{"underlay.device", "underlay.address"}},
		{"long device name", func(s *HostState) { s.Underlay.Device = "a-very-long-link-name" }, []string{"underlay.device"}},
		{"VNI zero", func(s *HostState) { s.Networks[0].VNI = 0 }, []string{"networks[0].vni"}},
		{"VNI too large", func(s *HostState) { s.Networks[0].VNI = 1 << 24 }, []string{"networks[0].vni"}},
		{"VNI twice", func(s *HostState) {
			n := s.Networks[0]
			n.Ports, n.FloatingIPs, n.External = nil, nil, nil
			s.Networks = append(s.Networks, n)
		}, []string{"networks[1].vni"}},
		{"MTU out of range", func(s *HostState) { s.Networks[0].MTU = 100 }, []string{"networks[0].mtu"}},
		{"no name", func(s *HostState) { s.Networks[0].Name = "" }, []string{"networks[0].name"}},
		{"peer is self", func(s *HostState) { s.Networks[0].Peers = append(s.Networks[0].Peers, s.Underlay.Address) }, []string{"networks[0].peers[1]"}},
		{"peer twice", func(s *HostState) { s.Networks[0].Peers = append(s.Networks[0].Peers, s.Networks[0].Peers[0]) }, []string{"networks[0].peers[1]"}},
		{"IPv6 peer of an IPv4 underlay", func(s *HostState) { s.Networks[0].Peers[0] = netip.MustParseAddr("2001:db8::2") }, []string{"networks[0].peers[0]", "networks[0].remote[0].host"}},
		{"subnet with host bits", func(s *HostState) { s.Networks[0].Subnets[0].CIDR = netip.MustParsePrefix("10.0.0.1/24") }, []string{"networks[0].subnets[0].cidr"}},
		{"gateway outside", func(s *HostState) { s.Networks[0].Subnets[0].Gateway = netip.MustParseAddr("10.0.1.1") }, []string{"networks[0].subnets[0].gateway"}},
		{"gateway is the broadcast address", func(s *HostState) { s.Networks[0].Subnets[0].Gateway = netip.MustParseAddr("10.0.0.255") }, []string{"networks[0].subnets[0].gateway"}},
		{"overlapping subnets", func(s *HostState) {
			s.Networks[0].Subnets = append(s.Networks[0].Subnets, Subnet{CIDR: netip.MustParsePrefix("10.0.0.128/25"), Gateway: netip.MustParseAddr("10.0.0.129")})
		}, []string{"networks[0].subnets[1].cidr"}},
		{"port name not Hearth's", func(s *HostState) { s.Networks[0].Ports[0].Name = "tap0" }, []string{"networks[0].ports[0].name"}},
		{"port name twice", func(s *HostState) {
			p := s.Networks[0].Ports[0]
			p.MAC = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 9}
			p.Addresses = []netip.Addr{netip.MustParseAddr("10.0.0.9")}
			s.Networks[0].Ports = append(s.Networks[0].Ports, p)
		}, []string{"networks[0].ports[1].name"}},
		{"multicast MAC", func(s *HostState) { s.Networks[0].Ports[0].MAC[0] = 0x01 }, []string{"networks[0].ports[0].mac"}},
		{"the gateway's MAC", func(s *HostState) { s.Networks[0].Ports[0].MAC = GatewayMAC(7) }, []string{"networks[0].ports[0].mac"}},
		{"a routed MAC", func(s *HostState) { s.Networks[0].Remote[0].MAC = RoutedMAC(netip.MustParseAddr("192.0.2.2")) }, []string{"networks[0].remote[0].mac"}},
		{"MAC twice", func(s *HostState) { s.Networks[0].Remote[0].MAC = s.Networks[0].Ports[0].MAC }, []string{"networks[0].remote[0].mac"}},
		{"address outside the subnets", func(s *HostState) { s.Networks[0].Ports[0].Addresses[0] = netip.MustParseAddr("10.9.0.2") }, []string{"networks[0].ports[0].addresses[0]", "networks[0].floatingIPs[0].internal"}},
		{"address is the gateway", func(s *HostState) { s.Networks[0].Remote[0].Addresses[0] = netip.MustParseAddr("10.0.0.1") }, []string{"networks[0].remote[0].addresses[0]"}},
		{"address twice", func(s *HostState) { s.Networks[0].Remote[0].Addresses[0] = netip.MustParseAddr("10.0.0.2") }, []string{"networks[0].remote[0].addresses[0]"}},
		{"remote on a host that is not a peer", func(s *HostState) { s.Networks[0].Remote[0].Host = netip.MustParseAddr("192.0.2.9") }, []string{"networks[0].remote[0].host"}},
		{"relative veth namespace", func(s *HostState) { s.Networks[0].Ports[0].Veth = &VethPeer{Netns: "vm"} }, []string{"networks[0].ports[0].veth.netns"}},
		{"external device is Hearth's", func(s *HostState) { s.Networks[0].External.Device = "hbr7" }, []string{"networks[0].external.device"}},
		{"IPv6 external", func(s *HostState) { s.Networks[0].External.Address = netip.MustParsePrefix("2001:db8::10/64") }, []string{"networks[0].external.address", "networks[0].external.gateway", "networks[0].floatingIPs[0].external"}},
		{"IPv6 side", func(s *HostState) {
			n := &s.Networks[0]
			n.Subnets = append(n.Subnets, Subnet{CIDR: netip.MustParsePrefix("2001:db8:1::/64"), Gateway: netip.MustParseAddr("2001:db8:1::1")})
			n.External.IPv6 = &ExternalIPv6{Address: netip.MustParsePrefix("2001:db8:ff::10/64"), Gateway: netip.MustParseAddr("fe80::1"), Routed: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/64")}}
		}, nil},
		{"bad IPv6 side", func(s *HostState) {
			s.Networks[0].External.IPv6 = &ExternalIPv6{Address: netip.MustParsePrefix("2001:db8:ff::10/64"), Gateway: netip.MustParseAddr("2001:db8:9::1"),
				Routed: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("2001:db8:ff::/64")}}
		}, []string{"networks[0].external.ipv6.gateway", "networks[0].external.ipv6.routed[0]", "networks[0].external.ipv6.routed[1]", "networks[0].external.ipv6.routed[1]"}},
		{"IPv6 subnet routed by two networks", func(s *HostState) {
			six := Subnet{CIDR: netip.MustParsePrefix("2001:db8:1::/64"), Gateway: netip.MustParseAddr("2001:db8:1::1")}
			x6 := &ExternalIPv6{Address: netip.MustParsePrefix("2001:db8:ff::10/64"), Gateway: netip.MustParseAddr("2001:db8:ff::1"), Routed: []netip.Prefix{six.CIDR}}
			n := validState().Networks[0]
			n.VNI, n.Peers, n.Remote, n.Ports, n.FloatingIPs = 8, nil, nil, nil, nil
			n.External.Address = netip.MustParsePrefix("198.51.100.11/24")
			n.Subnets = append(n.Subnets, six)
			n.External.IPv6 = x6
			s.Networks[0].Subnets = append(s.Networks[0].Subnets, six)
			x := *x6
			s.Networks[0].External.IPv6 = &x
			s.Networks = append(s.Networks, n)
		}, []string{"networks[1].external.ipv6.routed[0]"}},
		{"external gateway outside", func(s *HostState) { s.Networks[0].External.Gateway = netip.MustParseAddr("203.0.113.1") }, []string{"networks[0].external.gateway"}},
		{"floating IP without external", func(s *HostState) { s.Networks[0].External = nil }, []string{"networks[0].floatingIPs[0]"}},
		{"floating IP is the external address", func(s *HostState) { s.Networks[0].FloatingIPs[0].External = netip.MustParseAddr("198.51.100.10") }, []string{"networks[0].floatingIPs[0].external"}},
		{"floating IP of a remote NIC", func(s *HostState) { s.Networks[0].FloatingIPs[0].Internal = netip.MustParseAddr("10.0.0.3") }, []string{"networks[0].floatingIPs[0].internal"}},
		{"floating IP used by two networks", func(s *HostState) {
			n := validState().Networks[0]
			n.VNI, n.Peers, n.Remote = 8, nil, nil
			n.Ports[0].Name = PortName("vm-b/0")
			n.External.Address = netip.MustParsePrefix("198.51.100.11/24")
			s.Networks = append(s.Networks, n)
		}, []string{"networks[1].floatingIPs[0].external"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := validState()
			tc.change(&s)
			err := s.Validate()
			var got []string
			var fes FieldErrors
			if errors.As(err, &fes) {
				for _, fe := range fes {
					got = append(got, fe.Field)
				}
			} else if err != nil {
				t.Fatalf("Validate returned %T %v, want FieldErrors", err, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("errors at %v, want %v (%v)", got, tc.want, err)
			}
		})
	}
}

func TestNormalizedOrderDoesNotMatter(t *testing.T) {
	a := validState()
	b := validState()
	n := &b.Networks[0]
	n.Peers = append(n.Peers, netip.MustParseAddr("192.0.2.3"))
	a.Networks[0].Peers = append([]netip.Addr{netip.MustParseAddr("192.0.2.3")}, a.Networks[0].Peers...)
	if !reflect.DeepEqual(a.normalized(1500), b.normalized(1500)) {
		t.Error("the same state in another order normalizes differently")
	}
	if got := a.normalized(1500).Networks[0].MTU; got != 1450 {
		t.Errorf("default MTU over a 1500 IPv4 underlay is %d, want 1450", got)
	}
	v6 := HostState{Underlay: Underlay{Device: "eth0", Address: netip.MustParseAddr("2001:db8::1")}, Networks: []Network{{VNI: 1}}}
	if got := (&v6).normalized(1500).Networks[0].MTU; got != 1430 {
		t.Errorf("default MTU over a 1500 IPv6 underlay is %d, want 1430", got)
	}
}

func TestNames(t *testing.T) {
	for _, key := range []string{"", "a", strings.Repeat("x", 500), "0b8a1f2e-0000-4000-8000-000000000000/3"} {
		name := PortName(key)
		if len(name) != 15 || !IsPortName(name) {
			t.Errorf("PortName(%q) = %q: not a 15-character port name", key, name)
		}
		if _, kind, ok := ownedLink(name); !ok || kind != kindPort {
			t.Errorf("ownedLink(%q) does not see a port", name)
		}
	}
	if PortName("a") == PortName("b") {
		t.Error("two keys, one name")
	}
	for _, tc := range []struct {
		name string
		vni  uint32
		kind string
		ok   bool
	}{
		{bridgeName(MaxVNI), MaxVNI, kindBridge, true},
		{vxlanName(1), 1, kindVXLAN, true},
		{routerLink(4097), 4097, kindRouter, true},
		{externalLeg(12), 12, kindExternal, true},
		{"hbr0", 0, "", false},
		{"hbr012", 0, "", false},
		{"hbr16777216", 0, "", false},
		{"hbrx", 0, "", false},
		{"eth0", 0, "", false},
		{"htABCDEFGHIJKLM", 0, "", false},
	} {
		vni, kind, ok := ownedLink(tc.name)
		if vni != tc.vni || kind != tc.kind || ok != tc.ok {
			t.Errorf("ownedLink(%q) = %d, %q, %v; want %d, %q, %v", tc.name, vni, kind, ok, tc.vni, tc.kind, tc.ok)
		}
		if len(tc.name) > 15 && tc.ok {
			t.Errorf("%q is longer than a link name may be", tc.name)
		}
	}
	if v, ok := routerNetnsVNI("hearth-", routerNetns("hearth-", 99)); !ok || v != 99 {
		t.Errorf("router namespace name does not parse back: %d %v", v, ok)
	}
	if _, ok := routerNetnsVNI("hearth-", "hearth-router-x"); ok {
		t.Error("hearth-router-x parsed as a router namespace")
	}
	for _, mac := range []net.HardwareAddr{GatewayMAC(MaxVNI), bridgeMAC(1), RoutedMAC(netip.MustParseAddr("192.0.2.1")), RoutedMAC(netip.MustParseAddr("2001:db8::1")), externalMAC(netip.MustParseAddr("192.0.2.1"), 5)} {
		if mac[0]&1 != 0 || mac[0]&2 == 0 {
			t.Errorf("%s is not a locally administered unicast MAC", mac)
		}
	}
	if RoutedMAC(netip.MustParseAddr("192.0.2.1")).String() == RoutedMAC(netip.MustParseAddr("192.0.2.2")).String() {
		t.Error("two hosts, one routed MAC")
	}
}

// The rule ids are stable (a Plane compares them across restarts) and
// change with what the rule does.
func TestRuleIDs(t *testing.T) {
	vs := validState()
	s := vs.normalized(1500)
	n := &s.Networks[0]
	a := l2Rules(n, s.Underlay.Address).ids()
	b := l2Rules(n, s.Underlay.Address).ids()
	if !reflect.DeepEqual(a, b) {
		t.Error("the same rules got different ids")
	}
	n.Subnets[0].Gateway = netip.MustParseAddr("10.0.0.254")
	if c := l2Rules(n, s.Underlay.Address).ids(); reflect.DeepEqual(a, c) {
		t.Error("another gateway, the same rule ids")
	}
	r1 := routerRules(n).ids()
	n.FloatingIPs[0].Internal = netip.MustParseAddr("10.0.0.7")
	if r2 := routerRules(n).ids(); reflect.DeepEqual(r1, r2) {
		t.Error("a floating IP to another address, the same rule ids")
	}
	n.External = nil
	if routerRules(n).ids() != nil {
		t.Error("a network without external has router rules")
	}
}

// A port with egress rules on a network with an IPv6 subnet: its rules
// let it reach the IPv6 gateway's DNS. Building them used to take the
// IPv6 gateway for an IPv4 address and panic, which a tenant could cause
// with its own security group, stopping the host's whole data plane.
func TestSecurityRulesWithIPv6Subnet(t *testing.T) {
	s := validState()
	n := &s.Networks[0]
	n.Subnets = append(n.Subnets, Subnet{CIDR: netip.MustParsePrefix("2001:db8:1::/64"), Gateway: netip.MustParseAddr("2001:db8:1::1")})
	n.Ports[0].Security = &PortSecurity{Egress: []SecurityRule{{Protocol: "tcp", FromPort: 443, ToPort: 443}}}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	norm := s.normalized(1500)
	m := sgRules(&norm)
	var found bool
	for _, r := range m.table.rules {
		found = found || r.name == "dns-udp-2001:db8:1::1"
	}
	if !found {
		t.Errorf("no rule lets the port ask the IPv6 gateway's DNS")
	}
}
