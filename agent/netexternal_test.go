package agent

import (
	"net"
	"os"
	"testing"

	"github.com/vishvananda/netlink"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/netns"
)

// TestFoundExternalDevices, in a namespace of its own: an external
// network with no device configured is plugged into the bridge holding an
// address in its CIDR, never into a non-bridge link holding one, and not
// looked for at all when a device is configured.
func TestFoundExternalDevices(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a network namespace); CI runs as root")
	}
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	ext := func(name, cidr, iface string) *api.ExternalNetwork {
		x := &api.ExternalNetwork{Spec: api.ExternalNetworkSpec{CIDR: cidr, Interface: iface}}
		x.Metadata.Name = name
		return x
	}
	var got, configured map[string]string
	err = netns.Do(ns, func() error {
		for _, l := range []struct {
			link netlink.Link
			addr string
		}{
			{&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "brlan"}}, "192.0.2.5/24"},
			{&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "nic0"}, PeerName: "nic1"}, "198.51.100.5/24"},
		} {
			if err := netlink.LinkAdd(l.link); err != nil {
				return err
			}
			ip, n, _ := net.ParseCIDR(l.addr)
			n.IP = ip
			if err := netlink.AddrAdd(l.link, &netlink.Addr{IPNet: n}); err != nil {
				return err
			}
		}
		got = foundExternalDevices([]*api.ExternalNetwork{
			ext("lan", "192.0.2.0/24", ""),         // the bridge holds .5
			ext("plain", "198.51.100.0/24", ""),    // only a veth holds one
			ext("none", "203.0.113.0/24", ""),      // nothing here
			ext("set", "192.0.2.0/24", "br-other"), // spec.interface wins
			ext("flagged", "192.0.2.0/24", ""),     // the agent's flag wins
		}, map[string]string{"flagged": "brflag"})
		configured = foundExternalDevices([]*api.ExternalNetwork{ext("lan", "192.0.2.0/24", "")}, map[string]string{"": "brdefault"})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"lan": "brlan"}
	if len(got) != len(want) || got["lan"] != "brlan" {
		t.Errorf("found %v, want %v", got, want)
	}
	if len(configured) != 0 {
		t.Errorf("with the agent's default device set, found %v, want nothing looked for", configured)
	}
}
