package cli

import (
	"reflect"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

// describe vm shows each NIC's effective rules: its groups' rules with
// remote groups resolved to their members, missing groups, and the
// defaults; a NIC without groups is unfiltered. Only the VM's tenant's
// groups and networks count.
func TestSecurityRows(t *testing.T) {
	sg := func(tenant, name string, rules ...api.SecurityGroupRule) *api.SecurityGroup {
		g := &api.SecurityGroup{Metadata: api.ObjectMeta{Tenant: tenant, Name: name}, Spec: api.SecurityGroupSpec{Rules: rules}}
		g.Spec.Default()
		return g
	}
	net := func(tenant string, ports ...api.NetworkPort) *api.Network {
		n := &api.Network{Metadata: api.ObjectMeta{Tenant: tenant, Name: "lan"}}
		n.Status.Ports = ports
		return n
	}
	index := api.NewSecurityIndex(
		[]*api.SecurityGroup{
			sg("lab", "web", api.SecurityGroupRule{Ports: "80"}, api.SecurityGroupRule{Protocol: "tcp", Ports: "22", RemoteGroup: "admin"}),
			sg("other", "db", api.SecurityGroupRule{Ports: "5432"}),
		},
		[]*api.Network{
			net("lab", api.NetworkPort{VM: "bastion", MAC: "52:54:00:00:00:01", IPs: []string{"10.0.0.5"}, SecurityGroups: []string{"admin"}}),
			net("other", api.NetworkPort{VM: "x", MAC: "52:54:00:00:00:02", IPs: []string{"10.0.0.6"}, SecurityGroups: []string{"admin"}}),
		})
	vm := &api.VirtualMachine{Metadata: api.ObjectMeta{Tenant: "lab", Name: "web-1"},
		Spec: api.VirtualMachineSpec{NICs: []api.VMNIC{{Network: "lan", SecurityGroups: []string{"web", "db"}}, {Network: "lan"}}}}
	got := securityRows(vm, index)
	want := [][]string{
		{"NIC", "GROUP", "DIRECTION", "PROTOCOL", "PORTS", "REMOTE"},
		{"nics[0]", "web", "ingress", "tcp", "80", "anywhere"},
		{"nics[0]", "web", "ingress", "tcp", "22", "group admin (10.0.0.5)"},
		{"nics[0]", "db", "-", "-", "-", "group does not exist: allows nothing"},
		{"nics[0]", "<default>", "ingress", "any", "all", "denied unless allowed above; replies to allowed traffic pass"},
		{"nics[0]", "<default>", "egress", "any", "all", "anywhere (no egress rules)"},
		{"nics[1]", "<none>", "all", "any", "all", "unfiltered (anti-spoofing only)"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rows:\n got %q\nwant %q", got, want)
	}
}
