package agent

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TestDHCP6Reply: a NIC in a dhcpv6 subnet is answered with IPAM's
// address in the IA it asked with, from the network's server; a NIC in
// a SLAAC subnet or with no lease, a message for another server, and a
// request without a server are not answered.
func TestDHCP6Reply(t *testing.T) {
	const vni = 77
	n := &raNetwork{
		Subnets: []raSubnet{
			{Key: "t/stateful", CIDR: netip.MustParsePrefix("fd00:7::/120"), Mode: api.IPv6ModeDHCPv6, Lease: 600, DNS: addrs("fd00:53::1")},
			{Key: "t/slaac", CIDR: netip.MustParsePrefix("fd00:8::/64"), Mode: api.IPv6ModeSLAAC},
		},
		Ports: map[string]raPort{
			"52:54:00:00:00:01": {Subnet: 0, Address: netip.MustParseAddr("fd00:7::10")},
			"52:54:00:00:00:02": {Subnet: 1, Address: netip.MustParseAddr("fd00:8::5054:ff:fe00:2")},
		},
	}
	stateful, slaac, stranger := hw("52:54:00:00:00:01"), hw("52:54:00:00:00:02"), hw("52:54:00:00:00:03")
	solicit := func(mac net.HardwareAddr, mods ...dhcpv6.Modifier) *dhcpv6.Message {
		m, err := dhcpv6.NewSolicit(mac, append([]dhcpv6.Modifier{dhcpv6.WithIAID([4]byte{1, 2, 3, 4})}, mods...)...)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	request := func(mac net.HardwareAddr, server dhcpv6.DUID) *dhcpv6.Message {
		m := solicit(mac)
		m.MessageType = dhcpv6.MessageTypeRequest
		if server != nil {
			m.AddOption(dhcpv6.OptServerID(server))
		}
		return m
	}
	other := &dhcpv6.DUIDLL{HWType: 1, LinkLayerAddr: hw("02:00:00:00:00:01")}
	for _, tc := range []struct {
		name     string
		mac      net.HardwareAddr
		msg      *dhcpv6.Message
		wantType dhcpv6.MessageType // 0: no answer
		wantAddr bool
	}{
		{"solicit", stateful, solicit(stateful), dhcpv6.MessageTypeAdvertise, true},
		{"rapid commit", stateful, solicit(stateful, dhcpv6.WithRapidCommit), dhcpv6.MessageTypeReply, true},
		{"request", stateful, request(stateful, serverDUID(vni)), dhcpv6.MessageTypeReply, true},
		{"request to another server", stateful, request(stateful, other), 0, false},
		{"request to no server", stateful, request(stateful, nil), 0, false},
		{"slaac subnet", slaac, solicit(slaac), 0, false},
		{"no lease", stranger, solicit(stranger), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := dhcp6Reply(n, vni, tc.mac, tc.msg)
			if tc.wantType == 0 {
				if ok {
					t.Fatalf("answered %s, want no answer", got.Summary())
				}
				return
			}
			if !ok || got.Type() != tc.wantType || got.TransactionID != tc.msg.TransactionID {
				t.Fatalf("answer %v (%t), want a %s with the request's transaction", got, ok, tc.wantType)
			}
			if sid := got.Options.ServerID(); sid == nil || !sid.Equal(serverDUID(vni)) {
				t.Errorf("server ID %v, want %v", sid, serverDUID(vni))
			}
			if cid := got.Options.ClientID(); cid == nil || !cid.Equal(tc.msg.Options.ClientID()) {
				t.Errorf("client ID %v, want the client's", cid)
			}
			ia := got.Options.OneIANA()
			if !tc.wantAddr {
				return
			}
			if ia == nil || ia.IaId != [4]byte{1, 2, 3, 4} {
				t.Fatalf("IA_NA %v, want the client's IAID", ia)
			}
			a := ia.Options.OneAddress()
			if a == nil || !a.IPv6Addr.Equal(net.ParseIP("fd00:7::10")) || a.ValidLifetime.Seconds() != 600 {
				t.Errorf("address %v, want fd00:7::10 for 600s", a)
			}
			if dns := got.Options.DNS(); len(dns) != 1 || !dns[0].Equal(net.ParseIP("fd00:53::1")) {
				t.Errorf("DNS %v, want fd00:53::1", dns)
			}
		})
	}
}

// TestDHCP6Frames: a client's frame is read back as its MAC, link-local
// address, port and message, and an answer frame goes to them from the
// gateway with a correct UDP checksum.
func TestDHCP6Frames(t *testing.T) {
	const vni = 77
	mac := hw("52:54:00:00:00:01")
	ll := netip.MustParseAddr("fe80::5054:ff:fe00:1")
	msg, err := dhcpv6.NewSolicit(mac)
	if err != nil {
		t.Fatal(err)
	}
	// A client's frame is an answer's mirror image.
	f := dhcp6Frame(vni, mac, ll, 547, msg)
	copy(f[6:12], mac)
	copy(f[22:38], ll.AsSlice())
	binary.BigEndian.PutUint16(f[54:56], 546)
	gotMAC, gotIP, gotPort, gotMsg, ok := parseDHCP6Request(f)
	if !ok || !slices.Equal(gotMAC, mac) || gotIP != ll || gotPort != 546 || gotMsg.TransactionID != msg.TransactionID {
		t.Fatalf("parsed %s %s %d %v (%t), want %s %s 546 and the solicit", gotMAC, gotIP, gotPort, gotMsg, ok, mac, ll)
	}
	reply := dhcp6Frame(vni, mac, ll, 546, msg)
	if dst := netip.AddrFrom16([16]byte(reply[38:54])); dst != ll || !slices.Equal(reply[0:6], mac) {
		t.Errorf("answer to %s at %s, want %s at %s", net.HardwareAddr(reply[0:6]), dst, mac, ll)
	}
	// Summing a correct UDP datagram with its pseudo-header gives 0xffff.
	var sum uint32
	for _, b := range [][]byte{reply[22:38], reply[38:54], reply[54:]} {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	sum += uint32(len(reply)-54) + 17
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Errorf("UDP checksum does not verify (sum %#x)", sum)
	}
	if _, err := dhcp6Filter(); err != nil {
		t.Errorf("the socket filter does not assemble: %v", err)
	}
}

// FuzzDHCP6Request: whatever frame a guest sends the DHCPv6 server, it
// is parsed and answered without a panic, and an answer only ever
// carries the asking NIC's own lease.
func FuzzDHCP6Request(f *testing.F) {
	const vni = 77
	mac := hw("52:54:00:00:00:01")
	n := &raNetwork{
		Subnets: []raSubnet{{Key: "t/s", CIDR: netip.MustParsePrefix("fd00:7::/120"), Mode: api.IPv6ModeDHCPv6, Lease: 600}},
		Ports:   map[string]raPort{mac.String(): {Subnet: 0, Address: netip.MustParseAddr("fd00:7::10")}},
	}
	for _, mk := range []func() (*dhcpv6.Message, error){
		func() (*dhcpv6.Message, error) { return dhcpv6.NewSolicit(mac) },
		func() (*dhcpv6.Message, error) { return dhcpv6.NewSolicit(mac, dhcpv6.WithRapidCommit) },
	} {
		m, err := mk()
		if err != nil {
			f.Fatal(err)
		}
		fr := dhcp6Frame(vni, mac, netip.MustParseAddr("fe80::1"), 547, m)
		copy(fr[6:12], mac)
		copy(fr[22:38], netip.MustParseAddr("fe80::5054:ff:fe00:1").AsSlice())
		f.Add(fr)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		from, ip, port, msg, ok := parseDHCP6Request(frame)
		if !ok {
			return
		}
		reply, ok := dhcp6Reply(n, vni, from, msg)
		if !ok {
			return
		}
		if from.String() != mac.String() {
			t.Fatalf("answered %s, which has no lease", from)
		}
		if ia := reply.Options.OneIANA(); ia != nil {
			for _, a := range ia.Options.Addresses() {
				if !a.IPv6Addr.Equal(net.ParseIP("fd00:7::10")) {
					t.Fatalf("offered %s, not the NIC's lease", a.IPv6Addr)
				}
			}
		}
		_ = dhcp6Frame(vni, from, ip, port, reply)
	})
}
