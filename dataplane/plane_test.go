package dataplane_test

import (
	"net/netip"
	"testing"
)

// Two VMs of one network on different hosts reach each other over the
// VXLAN, and each reaches its gateway on its own host.
func TestTwoHostsOneNetwork(t *testing.T) {
	c := newCluster(t, 2)
	c.addNet("blue", 100, false, "10.0.0.0/24")
	c.addVM("a", "blue", 0, "10.0.0.2")
	c.addVM("b", "blue", 1, "10.0.0.3")
	c.apply()
	c.mustPing("a", netip.MustParseAddr("10.0.0.3"))
	c.mustPing("b", netip.MustParseAddr("10.0.0.2"))
	c.mustPing("a", netip.MustParseAddr("10.0.0.1"))
	c.mustPing("b", netip.MustParseAddr("10.0.0.1"))
}
