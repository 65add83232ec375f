package controllers_test

import (
	"fmt"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// TestPortsFollowLiveMigration: a running VM whose spec.host changes
// keeps its network port, its network's host and its floating IP on the
// host it runs on while it moves (status.host, phase Running, then
// Migrating), and they move to the new host only once the destination
// reports the VM Running there. A stopped VM's port follows spec.host
// at once.
func TestPortsFollowLiveMigration(t *testing.T) {
	env := networksEnv(t)
	env.Tenant("lab")
	o := netObjs{t, env}
	ctx := servertest.Ctx(t)
	o.create(
		&api.ExternalNetwork{TypeMeta: tmeta("ExternalNetwork"), Metadata: api.ObjectMeta{Name: "uplink"}, Spec: api.ExternalNetworkSpec{CIDR: "192.0.2.0/24"}},
		&api.Host{TypeMeta: tmeta("Host"), Metadata: api.ObjectMeta{Name: "h1"}},
		&api.Host{TypeMeta: tmeta("Host"), Metadata: api.ObjectMeta{Name: "h2"}},
		&api.Network{TypeMeta: tmeta("Network"), Metadata: api.ObjectMeta{Name: "lan", Tenant: "lab"}, Spec: api.NetworkSpec{ExternalNetwork: "uplink"}},
		&api.Subnet{TypeMeta: tmeta("Subnet"), Metadata: api.ObjectMeta{Name: "lan-a", Tenant: "lab"}, Spec: api.SubnetSpec{Network: "lan", CIDR: "10.0.0.0/24"}},
		nvm("lab", "web", "h1", api.VMNIC{Network: "lan", IP: "10.0.0.5"}),
		nfip("lab", "public", "uplink", "web"),
	)
	status := func(st map[string]any) {
		t.Helper()
		if _, err := env.Admin.Patch(ctx, "VirtualMachine", "lab", "web", map[string]any{"status": st}, true); err != nil {
			t.Fatal(err)
		}
	}
	move := func(host string) {
		t.Helper()
		if _, err := env.Admin.Patch(ctx, "VirtualMachine", "lab", "web", map[string]any{"spec": map[string]any{"host": host}}, false); err != nil {
			t.Fatal(err)
		}
	}
	want := func(step, host string) {
		t.Helper()
		servertest.Eventually(t, 10*time.Second, func() error {
			n := o.get("Network", "lab", "lan").(*api.Network)
			f := o.get("FloatingIP", "lab", "public").(*api.FloatingIP)
			if len(n.Status.Ports) != 1 || n.Status.Ports[0].Host != host || fmt.Sprint(n.Status.Hosts) != "["+host+"]" {
				return fmt.Errorf("%s: network hosts %v ports %+v, want all on %s", step, n.Status.Hosts, n.Status.Ports, host)
			}
			if f.Status.Phase != api.FloatingIPAssociated || f.Status.Host != host {
				return fmt.Errorf("%s: floating IP %s on %q, want associated on %s", step, f.Status.Phase, f.Status.Host, host)
			}
			return nil
		})
	}
	status(map[string]any{"phase": api.VMRunning, "host": "h1"})
	want("running on h1", "h1")
	move("h2")
	// Give the controller time to act on the change: the port must stay.
	time.Sleep(300 * time.Millisecond)
	want("asked to move to h2", "h1")
	status(map[string]any{"phase": api.VMMigrating, "migration": map[string]any{"from": "h1", "incoming": "tcp:192.0.2.2:4444"}})
	time.Sleep(300 * time.Millisecond)
	want("migrating to h2", "h1")
	status(map[string]any{"phase": api.VMRunning, "host": "h2", "migration": nil})
	want("running on h2", "h2")

	// Stopped, it has no host to wait for: the port follows spec.host.
	status(map[string]any{"phase": api.VMStopped})
	move("h1")
	want("stopped, moved to h1", "h1")
}
