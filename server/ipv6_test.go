package server_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/ipam"
	"hearth.dev/hearth/server/servertest"
)

// TestIPv6NICAddresses: in a SLAAC subnet a NIC's address is the EUI-64
// of its MAC (and a static one must be that address); in a DHCPv6 subnet
// IPAM picks the lowest free; on a dual-stack network a NIC takes an
// address in both subnets, keeps both across status writes, and frees
// both when the VM goes.
func TestIPv6NICAddresses(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	c := env.Admin
	mustCreate(t, c, network("lab", "six", ""))
	sl := mustCreate(t, c, subnet("lab", "six-a", "six", "fd00:6::/64"))
	if sl.Spec.IPv6Mode != api.IPv6ModeSLAAC || sl.Spec.Gateway != "fd00:6::1" {
		t.Errorf("an IPv6 subnet defaults to mode %q gateway %q, want slaac and fd00:6::1", sl.Spec.IPv6Mode, sl.Spec.Gateway)
	}
	mustCreate(t, c, network("lab", "stateful", ""))
	st := subnet("lab", "stateful-a", "stateful", "fd00:7::/120")
	st.Spec.IPv6Mode = api.IPv6ModeDHCPv6
	mustCreate(t, c, st)
	mustCreate(t, c, network("lab", "dual", ""))
	mustCreate(t, c, subnet("lab", "dual-4", "dual", "10.5.0.0/24"))
	mustCreate(t, c, subnet("lab", "dual-6", "dual", "fd00:5::/64"))
	mustCreate(t, c, network("lab", "multi", ""))
	mustCreate(t, c, subnet("lab", "m4", "multi", "10.6.0.0/24"))
	mustCreate(t, c, subnet("lab", "m6a", "multi", "fd00:6a::/64"))
	mustCreate(t, c, subnet("lab", "m6b", "multi", "fd00:6b::/64"))

	eui := func(prefix, mac string) string {
		hw, _ := net.ParseMAC(mac)
		a, ok := api.EUI64(netip.MustParsePrefix(prefix), hw)
		if !ok {
			t.Fatalf("no EUI-64 of %s in %s", mac, prefix)
		}
		return a.String()
	}
	if got, want := eui("fd00:6::/64", "52:54:00:12:34:56"), "fd00:6::5054:ff:fe12:3456"; got != want {
		t.Fatalf("EUI64 = %s, want %s (RFC 4291: ff:fe inserted, universal/local bit flipped)", got, want)
	}

	s1 := mustCreate(t, c, nicVM("lab", "s1", api.VMNIC{Network: "six", MAC: "52:54:00:12:34:56"}))
	s2 := mustCreate(t, c, nicVM("lab", "s2", api.VMNIC{Network: "six"}))
	d1 := mustCreate(t, c, nicVM("lab", "d1", api.VMNIC{Network: "stateful"}))
	d2 := mustCreate(t, c, nicVM("lab", "d2", api.VMNIC{Network: "stateful", IP: "fd00:7::40"}))
	ds := mustCreate(t, c, nicVM("lab", "ds", api.VMNIC{Network: "dual"}))
	m1 := mustCreate(t, c, nicVM("lab", "m1", api.VMNIC{Network: "multi", Subnet: "m4", IPv6Subnet: "m6b"}))
	m2 := mustCreate(t, c, nicVM("lab", "m2", api.VMNIC{Network: "multi", Subnet: "m4"}))
	for _, tc := range []struct {
		vm                api.Object
		subnet, ip        string
		ipv6Subnet, ipv6  string
		ipFromMAC, v6From string
	}{
		{vm: s1, subnet: "six-a", ip: "fd00:6::5054:ff:fe12:3456"},
		{vm: s2, subnet: "six-a", ipFromMAC: "fd00:6::/64"},
		{vm: d1, subnet: "stateful-a", ip: "fd00:7::2"},
		{vm: d2, subnet: "stateful-a", ip: "fd00:7::40"},
		{vm: ds, subnet: "dual-4", ip: "10.5.0.2", ipv6Subnet: "dual-6", v6From: "fd00:5::/64"},
		{vm: m1, subnet: "m4", ip: "10.6.0.2", ipv6Subnet: "m6b", v6From: "fd00:6b::/64"},
		{vm: m2, subnet: "m4", ip: "10.6.0.3"}, // two IPv6 subnets, none named: IPv4 only
	} {
		ifs := ifaces(t, tc.vm)
		name := tc.vm.GetMetadata().Name
		if len(ifs) != 1 {
			t.Fatalf("%s: interfaces %+v", name, ifs)
		}
		got := ifs[0]
		want := api.VMInterfaceStatus{Network: got.Network, Subnet: tc.subnet, IP: tc.ip, MAC: got.MAC, IPv6Subnet: tc.ipv6Subnet, IPv6: tc.ipv6}
		if tc.ipFromMAC != "" {
			want.IP = eui(tc.ipFromMAC, got.MAC)
		}
		if tc.v6From != "" {
			want.IPv6 = eui(tc.v6From, got.MAC)
		}
		if got != want {
			t.Errorf("%s: interface %+v, want %+v", name, got, want)
		}
	}
	keys := ipamKeys(t, env)
	dsIf := ifaces(t, ds)[0]
	for _, a := range []string{dsIf.IP, dsIf.IPv6} {
		if h := holderAt(t, keys, ipam.IPPrefix, "/"+a); h.Name != "ds" {
			t.Errorf("%s is held by %+v, want ds", a, h)
		}
	}

	// A status write (the agent's) keeps both addresses.
	ds.Status.Phase = api.VMRunning
	up, err := c.UpdateStatus(ctx, ds)
	if err != nil {
		t.Fatal(err)
	}
	if got := ifaces(t, up)[0]; got != dsIf {
		t.Errorf("after a status write: %+v, want %+v", got, dsIf)
	}

	before := ipamKeys(t, env)
	for _, tc := range []struct {
		name         string
		nics         []api.VMNIC
		field, words string
	}{
		{"slaac static ip", []api.VMNIC{{Network: "six", IP: "fd00:6::99", MAC: "52:54:00:00:00:09"}}, "spec.nics[0].ip",
			"the EUI-64 of its MAC, fd00:6::5054:ff:fe00:9"},
		{"slaac mac taken", []api.VMNIC{{Network: "six", MAC: "52:54:00:12:34:56"}}, "spec.nics[0].mac", "already used on this network by VM s1"},
		{"dhcpv6 taken", []api.VMNIC{{Network: "stateful", IP: "fd00:7::40"}}, "spec.nics[0].ip", "already used in subnet stateful-a by VM d2"},
		{"dhcpv6 gateway", []api.VMNIC{{Network: "stateful", IP: "fd00:7::1"}}, "spec.nics[0].ip", "gateway"},
		{"no ipv6 subnet", []api.VMNIC{{Network: "multi", Subnet: "m4", IPv6Subnet: "nope"}}, "spec.nics[0].ipv6Subnet", `subnet "nope" does not exist in tenant lab`},
		{"ipv6 subnet is ipv4", []api.VMNIC{{Network: "dual", Subnet: "dual-4", IPv6Subnet: "dual-4"}}, "spec.nics[0].ipv6Subnet", "is not an IPv6 subnet"},
		{"ipv6 subnet elsewhere", []api.VMNIC{{Network: "multi", Subnet: "m4", IPv6Subnet: "dual-6"}}, "spec.nics[0].ipv6Subnet", `is on network "dual", not "multi"`},
		{"ipv6 subnet on ipv6", []api.VMNIC{{Network: "multi", Subnet: "m6a", IPv6Subnet: "m6b"}}, "spec.nics[0].ipv6Subnet", "subnet m6a is IPv6 already"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Create(ctx, nicVM("lab", "bad", tc.nics...))
			wantFieldError(t, err, tc.field, tc.words)
			if after := ipamKeys(t, env); !mapsEqual(after, before) {
				t.Errorf("a refused create changed the allocations:\nbefore %v\nafter  %v", before, after)
			}
		})
	}

	// Naming another IPv6 subnet moves the second address; the first
	// and the MAC stay.
	m1.Spec.NICs[0].IPv6Subnet = "m6a"
	moved, err := c.Update(ctx, m1)
	if err != nil {
		t.Fatal(err)
	}
	was := ifaces(t, m1)[0]
	if got := ifaces(t, moved)[0]; got.IP != was.IP || got.MAC != was.MAC || got.IPv6Subnet != "m6a" || got.IPv6 != eui("fd00:6a::/64", was.MAC) {
		t.Errorf("after naming m6a: %+v, want %s and %s kept and the EUI-64 in m6a", got, was.IP, was.MAC)
	}
	if _, ok := findKey(ipamKeys(t, env), ipam.IPPrefix, "/"+was.IPv6); ok {
		t.Errorf("the address in m6b (%s) is still held", was.IPv6)
	}

	if _, err := c.Delete(ctx, "VirtualMachine", "lab", "ds"); err != nil {
		t.Fatal(err)
	}
	for k := range ipamKeys(t, env) {
		if strings.HasSuffix(k, "/"+dsIf.IP) || strings.HasSuffix(k, "/"+dsIf.IPv6) {
			t.Errorf("deleting ds left %s", k)
		}
	}
}

// TestIPv6SubnetValidation: what is wrong with an IPv6 subnet is refused
// with the field that is wrong.
func TestIPv6SubnetValidation(t *testing.T) {
	for _, tc := range []struct {
		name         string
		cidr, mode   string
		field, words string
	}{
		{"slaac needs a /64", "fd00:1::/80", "", "spec.cidr", "SLAAC needs a /64"},
		{"explicit slaac /56", "fd00:1::/56", "slaac", "spec.cidr", "SLAAC needs a /64"},
		{"unknown mode", "fd00:1::/64", "stateless", "spec.ipv6Mode", `"stateless" is not a mode: use slaac or dhcpv6`},
		{"mode on ipv4", "10.0.0.0/24", "slaac", "spec.ipv6Mode", "only IPv6 subnets have a mode"},
		{"link-local", "fe80::/64", "", "spec.cidr", "link-local or multicast"},
		{"dhcpv6 too small", "fd00:1::/127", "dhcpv6", "spec.cidr", "no room"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := api.SubnetSpec{Network: "n", CIDR: tc.cidr, IPv6Mode: tc.mode}
			s.Default()
			es := s.Validate("spec")
			if len(es) != 1 || es[0].Field != tc.field || !strings.Contains(es[0].Detail, tc.words) {
				t.Errorf("got %+v, want one error on %s containing %q", es, tc.field, tc.words)
			}
		})
	}
	for _, cidr := range []string{"fd00:1::/64", "2001:db8:1:2::/64"} {
		s := api.SubnetSpec{Network: "n", CIDR: cidr}
		s.Default()
		if es := s.Validate("spec"); len(es) != 0 {
			t.Errorf("%s: %v", cidr, es)
		}
	}
	old := api.SubnetSpec{Network: "n", CIDR: "fd00:1::/64", IPv6Mode: "slaac"}
	next := old
	next.IPv6Mode = "dhcpv6"
	if es := next.ValidateUpdate("spec", &old); len(es) != 1 || es[0].Field != "spec.ipv6Mode" {
		t.Errorf("changing the mode: %+v, want one error on spec.ipv6Mode", es)
	}
}
