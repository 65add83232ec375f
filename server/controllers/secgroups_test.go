package controllers_test

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

// TestNetworkPortsCarrySecurityGroups: Network.status.ports name each
// NIC's security groups (hosts learn remote groups' members from them),
// and follow a change of the VM's groups. A NIC naming a group that only
// another tenant has gets none of its rules: what the NIC's tenant can
// read (and the index hosts and the CLI share) does not have it.
func TestNetworkPortsCarrySecurityGroups(t *testing.T) {
	env := networksEnv(t)
	env.Tenant("lab")
	env.Tenant("other")
	o := netObjs{t, env}
	ctx := servertest.Ctx(t)
	o.create(
		&api.Host{TypeMeta: tmeta("Host"), Metadata: api.ObjectMeta{Name: "h1"}, Spec: api.HostSpec{Address: "10.99.0.1"}},
		&api.Network{TypeMeta: tmeta("Network"), Metadata: api.ObjectMeta{Name: "lan", Tenant: "lab"}},
		&api.Subnet{TypeMeta: tmeta("Subnet"), Metadata: api.ObjectMeta{Name: "lan-a", Tenant: "lab"}, Spec: api.SubnetSpec{Network: "lan", CIDR: "10.0.0.0/24"}},
		&api.SecurityGroup{TypeMeta: tmeta("SecurityGroup"), Metadata: api.ObjectMeta{Name: "web", Tenant: "lab"},
			Spec: api.SecurityGroupSpec{Rules: []api.SecurityGroupRule{{Ports: "80"}}}},
		&api.SecurityGroup{TypeMeta: tmeta("SecurityGroup"), Metadata: api.ObjectMeta{Name: "db", Tenant: "other"},
			Spec: api.SecurityGroupSpec{Rules: []api.SecurityGroupRule{{Ports: "5432"}}}},
		nvm("lab", "web-1", "h1", api.VMNIC{Network: "lan", IP: "10.0.0.10", SecurityGroups: []string{"web"}}),
	)
	groupsOf := func(want []string) {
		t.Helper()
		servertest.Eventually(t, 10*time.Second, func() error {
			n := o.get("Network", "lab", "lan").(*api.Network)
			if len(n.Status.Ports) != 1 || !reflect.DeepEqual(n.Status.Ports[0].SecurityGroups, want) {
				return fmt.Errorf("ports %+v, want one with groups %v", n.Status.Ports, want)
			}
			return nil
		})
	}
	groupsOf([]string{"web"})
	if _, err := env.Admin.Patch(ctx, "VirtualMachine", "lab", "web-1", map[string]any{"spec": map[string]any{
		"nics": []any{map[string]any{"network": "lan", "ip": "10.0.0.10", "securityGroups": []string{"web", "db"}}}}}, false); err != nil {
		t.Fatal(err)
	}
	groupsOf([]string{"web", "db"})

	// What lab's user reads gives the NIC web's rules and none of
	// other's db.
	user := env.User("alice", "lab", api.RoleTenantAdmin)
	if _, _, err := user.List(ctx, "SecurityGroup", "other", client.ListOptions{}); err == nil {
		t.Fatal("a tenant listed another tenant's security groups")
	}
	gs, _, err := user.List(ctx, "SecurityGroup", "lab", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns, _, err := user.List(ctx, "Network", "lab", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var groups []*api.SecurityGroup
	for _, g := range gs {
		groups = append(groups, g.(*api.SecurityGroup))
	}
	var nets []*api.Network
	for _, n := range ns {
		nets = append(nets, n.(*api.Network))
	}
	sec := api.NewSecurityIndex(groups, nets).NIC("lab", []string{"web", "db"})
	if !sec.Filtered || !slices.Equal(sec.Missing, []string{"db"}) || len(sec.Rules) != 1 || sec.Rules[0].Ports != "80" {
		t.Errorf("NIC security %+v: want web's one rule, db missing", sec)
	}
}
