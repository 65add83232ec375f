package agent

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"reflect"
	"testing"

	"github.com/mdlayher/ndp"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/dataplane"
)

// TestRAFrame: the advertisement a NIC gets is an Ethernet frame to its
// MAC from the gateway MAC, IPv6 from the gateway's link-local address
// to all-nodes with hop limit 255 and a correct checksum, and says what
// the subnet's mode asks: autonomous prefix for SLAAC, managed for
// DHCPv6, on-link only for a subnet without DHCP.
func TestRAFrame(t *testing.T) {
	const vni = 4242
	n := &raNetwork{MTU: 1400}
	prefix := netip.MustParsePrefix("fd00:42::/64")
	for _, tc := range []struct {
		name                  string
		sub                   raSubnet
		auto, managed, onlink bool
		wantDNS               []netip.Addr
	}{
		{name: "slaac", sub: raSubnet{CIDR: prefix, Mode: api.IPv6ModeSLAAC}, auto: true, onlink: true},
		{name: "dhcpv6", sub: raSubnet{CIDR: prefix, Mode: api.IPv6ModeDHCPv6}, managed: true, onlink: true},
		{name: "static", sub: raSubnet{CIDR: prefix, Mode: api.IPv6ModeSLAAC, Static: true}, onlink: true},
		{name: "dns", sub: raSubnet{CIDR: prefix, Mode: api.IPv6ModeSLAAC, DNS: addrs("fd00:53::1")}, auto: true, onlink: true, wantDNS: addrs("fd00:53::1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := hw("52:54:00:12:34:56")
			f, err := raFrame(vni, dst, raMessage(n, tc.sub, vni))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(f[0:6], dst) || !bytes.Equal(f[6:12], dataplane.GatewayMAC(vni)) || binary.BigEndian.Uint16(f[12:14]) != 0x86dd {
				t.Fatalf("Ethernet header % x, want to %s from %s, IPv6", f[:14], dst, dataplane.GatewayMAC(vni))
			}
			ip := f[14:54]
			src, _ := netip.AddrFromSlice(ip[8:24])
			to, _ := netip.AddrFromSlice(ip[24:40])
			wantSrc := netip.MustParseAddr("fe80::68:67ff:fe00:1092") // EUI-64 of 02:68:67:00:10:92
			if ip[0]>>4 != 6 || ip[6] != 58 || ip[7] != 255 || src != wantSrc || to != allNodes || int(binary.BigEndian.Uint16(ip[4:6])) != len(f)-54 {
				t.Fatalf("IPv6 header % x: want version 6, ICMPv6, hop limit 255, %s to ff02::1, payload %d", ip, wantSrc, len(f)-54)
			}
			body := f[54:]
			m, err := ndp.ParseMessage(body)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := ndp.MarshalMessageChecksum(m, src, to)
			if !bytes.Equal(again, body) {
				t.Errorf("checksum %x, want %x", body[2:4], again[2:4])
			}
			ra := m.(*ndp.RouterAdvertisement)
			if ra.ManagedConfiguration != tc.managed || ra.OtherConfiguration != tc.managed || ra.RouterLifetime == 0 {
				t.Errorf("flags M=%t O=%t lifetime %s, want M=O=%t and a lifetime", ra.ManagedConfiguration, ra.OtherConfiguration, ra.RouterLifetime, tc.managed)
			}
			var pi *ndp.PrefixInformation
			var mtu *ndp.MTU
			var lla *ndp.LinkLayerAddress
			var dns []netip.Addr
			for _, o := range ra.Options {
				switch o := o.(type) {
				case *ndp.PrefixInformation:
					pi = o
				case *ndp.MTU:
					mtu = o
				case *ndp.LinkLayerAddress:
					lla = o
				case *ndp.RecursiveDNSServer:
					dns = o.Servers
				}
			}
			if pi == nil || pi.Prefix != prefix.Addr() || pi.PrefixLength != 64 || pi.AutonomousAddressConfiguration != tc.auto || pi.OnLink != tc.onlink {
				t.Errorf("prefix %+v, want %s autonomous=%t on-link=%t", pi, prefix, tc.auto, tc.onlink)
			}
			if mtu == nil || mtu.MTU != 1400 {
				t.Errorf("MTU option %+v, want 1400", mtu)
			}
			if lla == nil || !bytes.Equal(lla.Addr, dataplane.GatewayMAC(vni)) {
				t.Errorf("source link-layer option %+v, want the gateway MAC", lla)
			}
			if !reflect.DeepEqual(dns, tc.wantDNS) {
				t.Errorf("RDNSS %v, want %v", dns, tc.wantDNS)
			}
		})
	}
}

// TestHostNetStateIPv6: NICs on IPv6 and dual-stack networks have all
// their addresses on their ports (and remote ones in the routers'
// neighbour entries), each local NIC is advertised its own subnet only,
// and an IPv6 address outside the network's subnets is a problem that
// keeps the address out.
func TestHostNetStateIPv6(t *testing.T) {
	six := nsNet("red", "six", 300, func(n *api.Network) {
		n.Status.Hosts = []string{"h1", "h2"}
		n.Status.Ports = []api.NetworkPort{
			{VM: "r", NIC: 0, Host: "h2", MAC: "52:54:00:00:02:0b", IPs: []string{"fd00:b::5054:ff:fe00:20b"}},
		}
	})
	dual := nsNet("red", "dual", 301, func(n *api.Network) { n.Status.Hosts = []string{"h1"} })
	sixA, sixB := nsSubnet("red", "six-a", "six", "fd00:a::/64"), nsSubnet("red", "six-b", "six", "fd00:b::/64")
	sixB.Spec.IPv6Mode = api.IPv6ModeSLAAC
	d4, d6 := nsSubnet("red", "dual-4", "dual", "10.9.0.0/24"), nsSubnet("red", "dual-6", "dual", "fd00:d::/64")
	d6.Spec.DNSServers = []string{"10.9.0.1", "fd00:d::53"}
	dualVM := nsVM("red", "d", "uid-d", "h1", "dual dual-4 10.9.0.2 52:54:00:00:03:01")
	dualVM.Status.Interfaces[0].IPv6Subnet, dualVM.Status.Interfaces[0].IPv6 = "dual-6", "fd00:d::5054:ff:fe00:301"
	badVM := nsVM("red", "x", "uid-x", "h1", "dual dual-4 10.9.0.3 52:54:00:00:03:02")
	badVM.Status.Interfaces[0].IPv6 = "fd00:99::1"
	in := netInputs{
		Host: "h1", Underlay: nsUnderlay, HostAddresses: nsHosts,
		VMs: []*api.VirtualMachine{
			nsVM("red", "a", "uid-a", "h1", "six six-a fd00:a::5054:ff:fe00:10a 52:54:00:00:01:0a"),
			dualVM, badVM,
		},
		Networks: []*api.Network{six, dual},
		Subnets:  []*api.Subnet{sixA, sixB, d4, d6},
	}
	got := hostNetState(in)
	wantProblems := []netProblem{{Kind: "VirtualMachine", Key: "red/x", Message: "status.interfaces[0].ipv6: fd00:99::1 is in no IPv6 subnet of network red/dual this host knows"}}
	if !reflect.DeepEqual(got.Problems, wantProblems) {
		t.Errorf("problems %v, want %v", got.Problems, wantProblems)
	}
	byVNI := map[uint32]dataplane.Network{}
	for _, n := range got.State.Networks {
		byVNI[n.VNI] = n
	}
	ports := map[string][]netip.Addr{}
	for _, n := range got.State.Networks {
		for _, p := range n.Ports {
			ports[p.MAC.String()] = p.Addresses
		}
	}
	wantPorts := map[string][]netip.Addr{
		"52:54:00:00:01:0a": addrs("fd00:a::5054:ff:fe00:10a"),
		"52:54:00:00:03:01": addrs("10.9.0.2", "fd00:d::5054:ff:fe00:301"),
		"52:54:00:00:03:02": addrs("10.9.0.3"),
	}
	if !reflect.DeepEqual(ports, wantPorts) {
		t.Errorf("port addresses %v, want %v", ports, wantPorts)
	}
	if r := byVNI[300].Remote; len(r) != 1 || !reflect.DeepEqual(r[0].Addresses, addrs("fd00:b::5054:ff:fe00:20b")) {
		t.Errorf("remote ports of six: %+v, want the IPv6 NIC on h2", r)
	}

	ra := got.IPv6[300]
	if ra == nil || len(ra.Subnets) != 2 {
		t.Fatalf("advertisements of six: %+v, want both IPv6 subnets", ra)
	}
	p := ra.Ports["52:54:00:00:01:0a"]
	if ra.Subnets[p.Subnet].Key != "red/six-a" || p.Address != netip.MustParseAddr("fd00:a::5054:ff:fe00:10a") {
		t.Errorf("NIC a is advertised %+v (%s), want six-a", p, ra.Subnets[p.Subnet].Key)
	}
	if len(ra.Ports) != 1 {
		t.Errorf("six advertises to %v, want only the local NIC", ra.Ports)
	}
	rd := got.IPv6[301]
	if rd == nil || len(rd.Subnets) != 1 || !reflect.DeepEqual(rd.Subnets[0].DNS, addrs("fd00:d::53")) || rd.Subnets[0].Mode != api.IPv6ModeSLAAC {
		t.Fatalf("advertisements of dual: %+v, want dual-6 in slaac with its IPv6 DNS server only", rd)
	}
	if _, ok := rd.Ports["52:54:00:00:03:02"]; ok || len(rd.Ports) != 1 {
		t.Errorf("dual advertises to %v, want only the NIC with an IPv6 address", rd.Ports)
	}
	if _, ok := got.Subnets[301]; !ok || len(got.Subnets[301]) != 1 || got.Subnets[301][0].Key != "red/dual-4" {
		t.Errorf("DHCP of dual: %+v, want the IPv4 subnet only", got.Subnets[301])
	}
}

// TestHostNetStateIPv6FloatingIP: a floating IP pointed at an IPv6-only
// NIC is a problem of its own, and its network is still carried (the
// data plane refuses IPv6 floating IPs, which would drop the network).
func TestHostNetStateIPv6FloatingIP(t *testing.T) {
	six := nsNet("red", "six", 300, func(n *api.Network) {
		n.Spec.ExternalNetwork = "internet"
		n.Status.Hosts = []string{"h1"}
		n.Status.Routers = []api.NetworkRouter{{Host: "h1", ExternalAddress: "203.0.113.10"}}
	})
	in := netInputs{
		Host: "h1", Underlay: nsUnderlay, HostAddresses: nsHosts,
		VMs:              []*api.VirtualMachine{nsVM("red", "a", "uid-a", "h1", "six six-a fd00:a::5054:ff:fe00:10a 52:54:00:00:01:0a")},
		Networks:         []*api.Network{six},
		Subnets:          []*api.Subnet{nsSubnet("red", "six-a", "six", "fd00:a::/64")},
		FloatingIPs:      []*api.FloatingIP{nsFIP("red", "f", "a", "203.0.113.50", "fd00:a::5054:ff:fe00:10a", "h1")},
		ExternalNetworks: []*api.ExternalNetwork{nsExt()},
		ExternalDevices:  map[string]string{"": "hext"},
	}
	got := hostNetState(in)
	if len(got.State.Networks) != 1 || len(got.State.Networks[0].FloatingIPs) != 0 {
		t.Fatalf("networks %+v, want six carried without the floating IP", got.State.Networks)
	}
	if len(got.Problems) != 1 || got.Problems[0].Kind != "FloatingIP" || got.Problems[0].Key != "red/f" {
		t.Errorf("problems %v, want one about floating IP red/f", got.Problems)
	}
}
