package controllers_test

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// TestNetworkStatusIPv6: a dual-stack NIC's port carries both its
// addresses (the hosts' routers get a neighbour entry for each), and the
// IPv6 subnet counts the address it holds.
func TestNetworkStatusIPv6(t *testing.T) {
	env := networksEnv(t)
	env.Tenant("lab")
	o := netObjs{t, env}
	six := &api.Subnet{TypeMeta: tmeta("Subnet"), Metadata: api.ObjectMeta{Name: "dual-6", Tenant: "lab"},
		Spec: api.SubnetSpec{Network: "dual", CIDR: "fd00:9::/120", IPv6Mode: api.IPv6ModeDHCPv6}}
	o.create(
		&api.Host{TypeMeta: tmeta("Host"), Metadata: api.ObjectMeta{Name: "h1"}, Spec: api.HostSpec{Address: "10.99.0.1"}},
		&api.Network{TypeMeta: tmeta("Network"), Metadata: api.ObjectMeta{Name: "dual", Tenant: "lab"}},
		&api.Subnet{TypeMeta: tmeta("Subnet"), Metadata: api.ObjectMeta{Name: "dual-4", Tenant: "lab"}, Spec: api.SubnetSpec{Network: "dual", CIDR: "10.9.0.0/24"}},
		six,
		nvm("lab", "web", "h1", api.VMNIC{Network: "dual"}),
	)
	ifc := o.get("VirtualMachine", "lab", "web").(*api.VirtualMachine).Status.Interfaces[0]
	if ifc.IP != "10.9.0.2" || ifc.IPv6 != "fd00:9::2" {
		t.Fatalf("web's interface %+v, want 10.9.0.2 and fd00:9::2", ifc)
	}
	// A floating IP cannot point at an IPv6-only NIC.
	o.create(
		&api.ExternalNetwork{TypeMeta: tmeta("ExternalNetwork"), Metadata: api.ObjectMeta{Name: "uplink6"},
			Spec: api.ExternalNetworkSpec{CIDR: "192.0.2.0/24"}},
		&api.Network{TypeMeta: tmeta("Network"), Metadata: api.ObjectMeta{Name: "only6", Tenant: "lab"}, Spec: api.NetworkSpec{ExternalNetwork: "uplink6"}},
		&api.Subnet{TypeMeta: tmeta("Subnet"), Metadata: api.ObjectMeta{Name: "only6-a", Tenant: "lab"}, Spec: api.SubnetSpec{Network: "only6", CIDR: "fd00:a::/64"}},
		nvm("lab", "v6", "h1", api.VMNIC{Network: "only6"}),
		nfip("lab", "f6", "uplink6", "v6"),
	)
	servertest.Eventually(t, 10*time.Second, func() error {
		f := o.get("FloatingIP", "lab", "f6").(*api.FloatingIP)
		c := f.Status.Condition(api.ConditionAssociated)
		if f.Status.Phase == api.FloatingIPAssociated || c == nil || c.Reason != "NotIPv4" {
			return fmt.Errorf("floating IP f6: phase %s condition %+v, want not associated, NotIPv4", f.Status.Phase, c)
		}
		return nil
	})

	want := []api.NetworkPort{{VM: "web", NIC: 0, Host: "h1", MAC: ifc.MAC, IPs: []string{"10.9.0.2", "fd00:9::2"}}}
	servertest.Eventually(t, 10*time.Second, func() error {
		n := o.get("Network", "lab", "dual").(*api.Network)
		if !reflect.DeepEqual(n.Status.Ports, want) {
			return fmt.Errorf("ports %+v, want %+v", n.Status.Ports, want)
		}
		// fd00:9::1 to ::ff less the gateway is 254; web holds one.
		s := o.get("Subnet", "lab", "dual-6").(*api.Subnet)
		if s.Status.Allocated != 1 || s.Status.Available != 253 {
			return fmt.Errorf("dual-6: allocated %d available %d, want 1 and 253", s.Status.Allocated, s.Status.Available)
		}
		return nil
	})
}
