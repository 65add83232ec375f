package dataplane

import "net/netip"

// MetadataAddress is where a network's VMs find their metadata (EC2,
// OpenStack and NoCloud over HTTP): every router holds it as a /32 on its
// internal leg, next to the gateways, and the agent's metadata server
// listens on it in the router namespace. Guests reach it through their
// gateway (the agent's DHCP hands out a classless route for it), never
// on-link: ARP for it would cross the VXLAN device to every host's
// router, while the gateway's is answered by the guest's own host only,
// and only that host's router knows the guest.
var MetadataAddress = netip.AddrFrom4([4]byte{169, 254, 169, 254})
