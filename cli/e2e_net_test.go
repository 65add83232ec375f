package cli

import (
	"context"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TestE2ENetworkAddresses: the CLI shows what IPAM allocated: a VM's IPs
// and MACs with `get -o wide`, a subnet's used and free addresses, who
// holds which address with describe (VM, subnet, network, external
// network), and refuses to delete a subnet in use, naming the VMs; the
// whole lab deletes from its file.
func TestE2ENetworkAddresses(t *testing.T) {
	const tenant = "e2e-net"
	dir := t.TempDir()
	lab := writeFile(t, dir, "lab.yaml", `apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata: {name: e2e-net}
---
apiVersion: hearth.dev/v1alpha1
kind: ExternalNetwork
metadata: {name: e2e-net-uplink}
spec: {cidr: 192.0.2.0/24, rangeStart: 192.0.2.100, rangeEnd: 192.0.2.120}
---
apiVersion: hearth.dev/v1alpha1
kind: Host
metadata: {name: e2e-net-h1}
spec: {address: 10.99.0.1}
---
apiVersion: hearth.dev/v1alpha1
kind: Network
metadata: {name: lan, tenant: e2e-net}
spec: {externalNetwork: e2e-net-uplink}
---
apiVersion: hearth.dev/v1alpha1
kind: Subnet
metadata: {name: lan-a, tenant: e2e-net}
spec: {network: lan, cidr: 10.20.0.0/24}
---
apiVersion: hearth.dev/v1alpha1
kind: VirtualMachine
metadata: {name: web, tenant: e2e-net}
spec:
  host: e2e-net-h1
  boot: {from: network}
  nics: [{network: lan, ip: 10.20.0.10, mac: "52:54:00:aa:bb:01"}]
---
apiVersion: hearth.dev/v1alpha1
kind: VirtualMachine
metadata: {name: db, tenant: e2e-net}
spec:
  boot: {from: network}
  nics: [{network: lan}]
---
apiVersion: hearth.dev/v1alpha1
kind: FloatingIP
metadata: {name: web, tenant: e2e-net}
spec: {externalNetwork: e2e-net-uplink, address: 192.0.2.110, target: {vm: web}}
`)
	hearth(t, "", "apply", "-f", lab)

	out := hearth(t, "", "get", "vm", "web", "db", "-t", tenant, "-o", "wide")
	wantContains(t, "get vm -o wide", out, "IPS", "MACS", "10.20.0.10", "52:54:00:aa:bb:01", "10.20.0.2")
	out = hearth(t, "", "get", "fip", "-t", tenant)
	wantContains(t, "get fip", out, "192.0.2.110")

	// The controller counts and publishes.
	c := adminClient(t)
	waitFor(t, "the subnet's counts and the network's ports", func() bool {
		sn, err1 := c.Get(context.Background(), "Subnet", tenant, "lan-a")
		n, err2 := c.Get(context.Background(), "Network", tenant, "lan")
		return err1 == nil && err2 == nil && sn.(*api.Subnet).Status.Allocated == 2 &&
			len(n.(*api.Network).Status.Routers) == 1 && n.(*api.Network).Status.Routers[0].ExternalAddress != ""
	})
	out = hearth(t, "", "get", "subnets", "-t", tenant)
	wantContains(t, "get subnets", out, "USED", "FREE", "lan-a", " 2 ", " 251")

	out = hearth(t, "", "describe", "subnet", "lan-a", "-t", tenant)
	wantContains(t, "describe subnet", out, "Allocations:", "HOLDER", "vm/db nics[0]", "10.20.0.2", "vm/web nics[0]", "10.20.0.10", "52:54:00:aa:bb:01", "e2e-net-h1")
	out = hearth(t, "", "describe", "network", "lan", "-t", tenant)
	wantContains(t, "describe network", out, "Allocations:", "vm/web nics[0]", "router (external address)", "192.0.2.100")
	if strings.Contains(out, "vm/db") {
		t.Errorf("describe network lists db, which is on no host:\n%s", out)
	}
	out = hearth(t, "", "describe", "vm", "web", "-t", tenant)
	wantContains(t, "describe vm", out, "Allocations:", "nics[0] on lan/lan-a", "10.20.0.10")
	out = hearth(t, "", "describe", "externalnetwork", "e2e-net-uplink")
	wantContains(t, "describe external network", out, "Allocations:", "floatingip/e2e-net/web", "192.0.2.110", "router of network/e2e-net/lan", "192.0.2.100")

	_, errOut, err := hearthErr(t, "", "delete", "subnet", "lan-a", "-t", tenant)
	if err == nil {
		t.Fatalf("deleting a subnet in use succeeded")
	}
	wantContains(t, "delete of a subnet in use", errOut, `subnet "lan-a" is in use by VMs db, web`)

	// Dependents go first: the whole lab deletes from its file.
	hearth(t, "", "delete", "-f", lab, "--wait")
	if _, err := c.Get(context.Background(), "ExternalNetwork", "", "e2e-net-uplink"); !api.IsNotFound(err) {
		t.Errorf("the external network is still there: %v", err)
	}
}
