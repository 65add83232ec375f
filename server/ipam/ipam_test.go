package ipam_test

import (
	"net/netip"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/dataplane"
)

// TestReservedMACsMatchTheDataPlane: the MACs the API refuses for NICs
// are the ones the data plane gives its own devices, and QEMU's range,
// which IPAM picks from, is not among them.
func TestReservedMACsMatchTheDataPlane(t *testing.T) {
	for _, mac := range []string{
		dataplane.GatewayMAC(4096).String(),
		dataplane.GatewayMAC(1<<24 - 1).String(),
		dataplane.RoutedMAC(netip.MustParseAddr("10.9.8.7")).String(),
		dataplane.RoutedMAC(netip.MustParseAddr("2001:db8::1")).String(),
		"02:68:62:00:10:00", // the bridges'
	} {
		if !api.ReservedMAC(mac) {
			t.Errorf("the data plane's %s is not refused for NICs", mac)
		}
	}
	for _, mac := range []string{"52:54:00:00:00:01", "52:54:00:ff:ff:ff", "02:68:66:00:00:01"} {
		if api.ReservedMAC(mac) {
			t.Errorf("%s is refused for NICs", mac)
		}
	}
}
