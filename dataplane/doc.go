// Package dataplane is the host side of tenant networks: everything a
// host does so that its VMs' NICs are on their tenant's network, behind
// one small declarative interface, Plane. The agent computes the host's
// whole desired state from the API (HostState: networks, their subnets,
// the NICs here and on the other hosts, external networks, floating IPs)
// and calls Apply, every few seconds and whenever Changes says someone
// touched the host; applying the same state again changes nothing. The
// package takes plain values: it never imports the API or its client, so
// the agent's logic is table-tested against a fake Plane without root,
// and this package is tested with root on simulated hosts (network
// namespaces, dataplanetest).
//
// Everything goes through netlink (vishvananda/netlink) and nftables
// (google/nftables); nothing shells out. Namespaces are entered through
// package netns only.
//
// # What a host has per network
//
//   - A bridge hbrVNI with the network's MTU, and a VXLAN device hvxVNI on
//     it (learning off, bound to the underlay device and address so its
//     MTU is the underlay's less 50, UDP port 4789). Its forwarding table
//     is programmed from the state: an all-zero entry per peer host (the
//     hosts that carry the network, and only they, get its broadcast and
//     unknown unicast: head-end replication, no multicast underlay) and an
//     entry per remote NIC's MAC.
//   - A persistent tap per local NIC (PortName names it; QEMU opens it
//     with -netdev tap,ifname=NAME,script=no,downscript=no), on the bridge.
//   - A router: a network namespace PREFIX-router-VNI joined to the
//     bridge by a veth (hriVNI on the bridge, "internal" inside), holding
//     the gateway address of every subnet with the same MAC (GatewayMAC)
//     and addresses on every host, forwarding between the subnets, and
//     MetadataAddress (169.254.169.254/32), where the agent's metadata
//     server listens (its DNS listens on the gateways). Guests reach it
//     through their gateway (the agent's DHCP hands out a classless
//     route), never on-link: ARP for it would cross the VXLAN device to
//     every host's router, while the gateway's is answered by the
//     guest's own host only, and only that host's router knows the
//     guest.
//   - With an external network: a second veth (hreVNI on the host's
//     external bridge, "external" inside) with the host's external address
//     for the network, a default route to the external gateway, SNAT, and
//     per floating IP a DNAT in, an SNAT out and the address itself on the
//     external leg (so the router answers ARP for it); a gratuitous ARP
//     announces every address that appears there, so a floating IP that
//     moved is found at once.
//
// # A distributed router
//
// Every host that carries a network routes its own VMs' traffic: there
// is no gateway host. This takes four things. The gateway MAC is pinned
// (static, sticky) to the router's port on each bridge, so a VM's frame
// to its gateway never floods to another host. Frames from and to the
// gateway MAC, ARP for the gateways, DHCP and router advertisements are
// dropped on the VXLAN device (nftables, bridge family): each host
// answers its own VMs, and exactly one DHCP server (the VM's host's)
// answers each request. Routed packets that cross to a VM on another host
// leave with their source MAC rewritten to the host's RoutedMAC, so no
// bridge learns the gateway MAC behind its VXLAN port. And each router is
// given every NIC's MAC for its addresses (permanent neighbour entries,
// from the state), because it cannot ask: the answer to its ARP would go
// to the gateway MAC, which is the answering host's own router.
//
// IPv6 works the same way. The router's leg has IPv6 only in networks
// with an IPv6 subnet; its link-local address is the EUI-64 of the
// gateway MAC, so the same on every host, and its neighbour discovery
// stays on the host with the rest of the gateway MAC's frames. Router
// advertisements and DHCPv6 are the agent's (agent/netra.go), sent in
// the router namespace to the host's own NICs; on the VXLAN device they
// are dropped like DHCP. The external leg speaks IPv4 only, so tenant
// IPv6 does not leave the network.
//
// Routers are network namespaces rather than VRFs: this kernel has no
// VRF support (the vrf link type is missing), and a namespace gives each
// network its own conntrack and nftables (NAT per network), its own
// sockets (the network's DHCP, DNS and metadata servers bind the same
// addresses in every network, 169.254.169.254 included), and nothing of
// the host's is reachable from it by accident.
//
// # Isolation
//
// Networks share nothing on a host but the underlay: separate VNIs,
// bridges, routers. Tenant frames never reach the host itself (hostTable
// drops what arrives on Hearth's ports for the host's own stack, and
// IPv6 is off on every Hearth link in the host namespace), and nothing
// from the external network reaches a tenant address except through a
// floating IP or as the answer to a connection from inside.
//
// # Anti-spoofing and security groups
//
// Every port has an anti-spoofing chain in hostTable (bridge family,
// antispoof.go), always: a frame from a VM passes only with the port's
// MAC, ARP only for its own addresses, IPv4 and IPv6 only from its own
// addresses (and DHCP discovery from 0.0.0.0, its EUI-64 link-local
// address, duplicate address detection), neighbour advertisements only
// for its own addresses, and never a DHCP server's answer, a router
// advertisement, a redirect, a VLAN tag or another ether type. What
// identifies a VM to its peers, the DHCP server and the metadata
// service is then sound.
//
// Security groups (secgroups.go) are enforced on the host the port is
// on, where the bridge forwards, not in the router: two VMs of one
// subnet on one host talk across the bridge and never reach the router,
// and only the bridge sees all of a port's traffic (to the router, to
// another tap, to and from the VXLAN device). Rules are stateful, which
// needs connection tracking of bridged packets; the bridge family has
// none on the kernels Hearth runs on (nf_conntrack_bridge is not
// built), so each filtered network's bridge hands its IP packets to the
// inet hooks (br_netfilter, per bridge: nf_call_iptables), where the
// table hearth-sg tracks each network in a conntrack zone of its own
// (tenants with the same addresses never share a connection), lets
// established and related packets through first, and sends new ones
// through the rules of the port they come from (by source MAC) and the
// port they go to (by destination MAC): MACs are trustworthy because of
// anti-spoofing; broadcast and multicast IP, which have no port's MAC,
// are kept from filtered ports in hostTable, where the port is known.
// Remote groups are nftables sets of addresses. The table
// is rewritten whole in one transaction (one netlink message, however
// many rules) when anything in it changes, before the networks converge,
// so a new port's rules are in force before its link is up, and
// conntrack entries outlive the rewrite: connections the new rules still
// allow go on.
//
// # Names and ownership
//
// A Plane touches only what it can tell is Hearth's, by name: host links
// hbrVNI, hvxVNI, hriVNI, hreVNI and ports named by PortName ("ht" and
// 13 base32 characters), namespaces named NetnsPrefix+"router-"+VNI, and
// the nftables tables hearth-host and hearth-sg (host) and hearth-router
// (routers).
// naming.go makes every name and MAC. A new Plane on a host (the agent
// restarted) reads what is there on its first Apply and changes only what
// differs from the state, so running VMs see no flap; what is Hearth's
// but in no network of the state is removed.
//
// # Cost
//
// A Plane keeps what it last made of each network. Apply compares the
// state with it and touches only the networks that changed, or that an
// event (netlink link, neighbour, address and route notifications, and
// nftables changes, in the host and every router namespace) says were
// changed by someone else; a change of one NIC costs one NIC's changes.
// The whole host is read again at the first Apply, after lost events, and
// every Config.ResyncInterval.
package dataplane
