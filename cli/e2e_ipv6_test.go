package cli

import (
	"context"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TestE2ENetworkIPv6: a dual-stack NIC's two addresses show in get -o
// wide and in describe of the VM, of each of its subnets and of its
// network.
func TestE2ENetworkIPv6(t *testing.T) {
	const tenant = "e2e-net6"
	dir := t.TempDir()
	lab := writeFile(t, dir, "lab.yaml", `apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata: {name: e2e-net6}
---
apiVersion: hearth.dev/v1alpha1
kind: Host
metadata: {name: e2e-net6-h1}
spec: {address: 10.99.6.1}
---
apiVersion: hearth.dev/v1alpha1
kind: Network
metadata: {name: dual, tenant: e2e-net6}
---
apiVersion: hearth.dev/v1alpha1
kind: Subnet
metadata: {name: dual-4, tenant: e2e-net6}
spec: {network: dual, cidr: 10.30.0.0/24}
---
apiVersion: hearth.dev/v1alpha1
kind: Subnet
metadata: {name: dual-6, tenant: e2e-net6}
spec: {network: dual, cidr: "fd00:30::/64"}
---
apiVersion: hearth.dev/v1alpha1
kind: VirtualMachine
metadata: {name: web, tenant: e2e-net6}
spec:
  host: e2e-net6-h1
  boot: {from: network}
  nics: [{network: dual, mac: "52:54:00:aa:bb:06"}]
`)
	hearth(t, "", "apply", "-f", lab)
	const v6 = "fd00:30::5054:ff:feaa:bb06"
	out := hearth(t, "", "get", "vm", "web", "-t", tenant, "-o", "wide")
	wantContains(t, "get vm -o wide", out, "10.30.0.2+"+v6)
	out = hearth(t, "", "get", "subnet", "dual-6", "-t", tenant, "-o", "wide")
	wantContains(t, "get subnet", out, "fd00:30::/64", "fd00:30::1")
	out = hearth(t, "", "describe", "vm", "web", "-t", tenant)
	wantContains(t, "describe vm", out, "nics[0] on dual/dual-4", "10.30.0.2", "nics[0] on dual/dual-6", v6)
	out = hearth(t, "", "describe", "subnet", "dual-6", "-t", tenant)
	wantContains(t, "describe subnet", out, "vm/web nics[0]", v6)
	c := adminClient(t)
	waitFor(t, "the network's ports", func() bool {
		n, err := c.Get(context.Background(), "Network", tenant, "dual")
		return err == nil && len(n.(*api.Network).Status.Ports) == 1
	})
	out = hearth(t, "", "describe", "network", "dual", "-t", tenant)
	wantContains(t, "describe network", out, "vm/web nics[0]", "10.30.0.2", v6)
	// A second apply changes nothing.
	out = hearth(t, "", "apply", "-f", lab)
	wantContains(t, "apply again", out, "subnet/dual-6 unchanged", "virtualmachine/web unchanged")
}
