package agent

import (
	"net/netip"

	"github.com/vishvananda/netlink"

	api "hearth.dev/hearth/api/v1alpha1"
)

// foundExternalDevices finds, for each external network this host has no
// device configured for (neither the agent's --external-interface NAME=…
// or its default entry, nor the ExternalNetwork's spec.interface), the
// bridge of this host that holds an address in the network's CIDR: the
// way an administrator usually wires a host to its LAN (a bridge br0 with
// the host's address, the physical NIC its port), so a homelab needs no
// setting at all. Only a bridge qualifies, since a router's external leg
// is a port of it; a host with none is told so in its NetworkReady
// condition (hostNetState).
func foundExternalDevices(externals []*api.ExternalNetwork, configured map[string]string) map[string]string {
	var want []*api.ExternalNetwork
	for _, x := range externals {
		if configured[x.Metadata.Name] == "" && x.Spec.Interface == "" && configured[""] == "" {
			want = append(want, x)
		}
	}
	if len(want) == 0 {
		return nil
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil
	}
	bridges := map[int]string{}
	links, err := netlink.LinkList()
	if err != nil {
		return nil
	}
	for _, l := range links {
		if l.Type() == "bridge" {
			bridges[l.Attrs().Index] = l.Attrs().Name
		}
	}
	out := map[string]string{}
	for _, x := range want {
		cidr, err := netip.ParsePrefix(x.Spec.CIDR)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if name := bridges[a.LinkIndex]; ok && name != "" && cidr.Masked().Contains(ip.Unmap()) {
				out[x.Metadata.Name] = name
				break
			}
		}
	}
	return out
}
