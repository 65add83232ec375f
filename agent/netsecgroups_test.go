package agent

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/dataplane"
)

func nsSG(tenant, name string, rules ...api.SecurityGroupRule) *api.SecurityGroup {
	g := &api.SecurityGroup{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "SecurityGroup"},
		Metadata: api.ObjectMeta{Tenant: tenant, Name: name}, Spec: api.SecurityGroupSpec{Rules: rules}}
	g.Spec.Default()
	return g
}

// withGroups names groups on a VM's first NIC, and in its network's
// status.ports (as the server's controller publishes them).
func withGroups(in *netInputs, tenant, vm string, groups ...string) {
	for _, v := range in.VMs {
		if v.Metadata.Tenant == tenant && v.Metadata.Name == vm {
			v.Spec.NICs[0].SecurityGroups = groups
		}
	}
	for _, n := range in.Networks {
		if n.Metadata.Tenant != tenant {
			continue
		}
		for i := range n.Status.Ports {
			if n.Status.Ports[i].VM == vm {
				n.Status.Ports[i].SecurityGroups = groups
			}
		}
	}
}

// The effective rules of each NIC, from its groups: none leaves the port
// unfiltered; groups that allow nothing (or do not exist, or are another
// tenant's) leave it filtered with no rules (default deny in); remote
// groups become address groups of the tenant's NICs that name them, on
// any host.
func TestHostNetStateSecurityGroups(t *testing.T) {
	web := nsSG("red", "web",
		api.SecurityGroupRule{Ports: "80"},
		api.SecurityGroupRule{Protocol: api.ProtocolICMP, CIDR: "10.0.0.0/8"},
		api.SecurityGroupRule{Protocol: api.ProtocolTCP, Ports: "22", RemoteGroup: "admin"},
		api.SecurityGroupRule{Direction: api.Egress, Protocol: api.ProtocolUDP, Ports: "53-54", CIDR: "192.168.1.1/32"},
	)
	admin := nsSG("red", "admin")
	blueOps := nsSG("blue", "ops", api.SecurityGroupRule{Protocol: api.ProtocolAny, RemoteGroup: "admin"})
	redA := dataplane.PortName(portKey("uid-red-a", 0))
	redC := dataplane.PortName(portKey("uid-red-c", 0))
	blueA := dataplane.PortName(portKey("uid-blue-a", 0))
	webRules := &dataplane.PortSecurity{
		Ingress: []dataplane.SecurityRule{
			{Protocol: "tcp", FromPort: 80, ToPort: 80},
			{Protocol: "icmp", CIDR: netip.MustParsePrefix("10.0.0.0/8")},
			{Protocol: "tcp", FromPort: 22, ToPort: 22, Group: "red/admin"},
		},
		Egress: []dataplane.SecurityRule{{Protocol: "udp", FromPort: 53, ToPort: 54, CIDR: netip.MustParsePrefix("192.168.1.1/32")}},
	}
	tests := []struct {
		name       string
		change     func(*netInputs)
		wantPorts  map[string]*dataplane.PortSecurity
		wantGroups []dataplane.AddressGroup
	}{
		{
			name:      "no groups: unfiltered",
			change:    func(in *netInputs) { in.SecurityGroups = []*api.SecurityGroup{web, admin} },
			wantPorts: map[string]*dataplane.PortSecurity{redA: nil, redC: nil, blueA: nil},
		},
		{
			name: "a group's rules, and its remote group's members on every host",
			change: func(in *netInputs) {
				in.SecurityGroups = []*api.SecurityGroup{web, admin}
				withGroups(in, "red", "a", "web")
				withGroups(in, "red", "b", "admin") // on h2
			},
			wantPorts:  map[string]*dataplane.PortSecurity{redA: webRules, redC: nil, blueA: nil},
			wantGroups: []dataplane.AddressGroup{{Name: "red/admin", Addresses: addrs("192.168.1.11")}},
		},
		{
			name: "a group that does not exist allows nothing",
			change: func(in *netInputs) {
				in.SecurityGroups = []*api.SecurityGroup{web}
				withGroups(in, "red", "c", "nosuch")
			},
			wantPorts: map[string]*dataplane.PortSecurity{redA: nil, redC: {}, blueA: nil},
		},
		{
			name: "a group being deleted allows nothing",
			change: func(in *netInputs) {
				gone := nsSG("red", "web", api.SecurityGroupRule{Ports: "80"})
				now := time.Now()
				gone.Metadata.DeletionTimestamp = &now
				in.SecurityGroups = []*api.SecurityGroup{gone}
				withGroups(in, "red", "a", "web")
			},
			wantPorts: map[string]*dataplane.PortSecurity{redA: {}, redC: nil, blueA: nil},
		},
		{
			name: "another tenant's group of the same name is not found",
			change: func(in *netInputs) {
				in.SecurityGroups = []*api.SecurityGroup{web, admin}
				withGroups(in, "blue", "a", "web")
			},
			wantPorts: map[string]*dataplane.PortSecurity{redA: nil, redC: nil, blueA: {}},
		},
		{
			name: "a remote group has only its own tenant's members",
			change: func(in *netInputs) {
				in.SecurityGroups = []*api.SecurityGroup{web, admin, blueOps}
				withGroups(in, "red", "b", "admin")
				withGroups(in, "blue", "a", "ops")
			},
			wantPorts:  map[string]*dataplane.PortSecurity{redA: nil, redC: nil, blueA: {Ingress: []dataplane.SecurityRule{{Group: "blue/admin"}}}},
			wantGroups: []dataplane.AddressGroup{{Name: "blue/admin"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := nsWorld()
			tt.change(&in)
			got := hostNetState(in)
			if len(got.Problems) > 0 {
				t.Errorf("problems: %v", got.Problems)
			}
			ports := map[string]*dataplane.PortSecurity{}
			for _, n := range got.State.Networks {
				for _, p := range n.Ports {
					ports[p.Name] = p.Security
				}
			}
			if !reflect.DeepEqual(ports, tt.wantPorts) {
				t.Errorf("ports' security:\n got %s\nwant %s", js(ports), js(tt.wantPorts))
			}
			if !reflect.DeepEqual(got.State.AddressGroups, tt.wantGroups) {
				t.Errorf("address groups:\n got %s\nwant %s", js(got.State.AddressGroups), js(tt.wantGroups))
			}
			if err := got.State.Validate(); err != nil {
				t.Errorf("the state is invalid: %v", err)
			}
		})
	}
}
