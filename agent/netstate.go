package agent

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/dataplane"
)

// netInputs is everything the host's network state is computed from: what
// the server publishes (read from the agent's cache) and the host's own
// configuration. hostNetState is a pure function of it, so the agent's
// networking logic is table-tested without root.
type netInputs struct {
	// Host is this host's name (Host.metadata.name, VM spec.host).
	Host string
	// Underlay is this host's VXLAN device and address.
	Underlay dataplane.Underlay
	// VMs are the VirtualMachines placed on this host, with
	// status.interfaces as the server allocated them.
	VMs []*api.VirtualMachine
	// Networks, Subnets and FloatingIPs of every tenant, and every
	// ExternalNetwork.
	Networks         []*api.Network
	Subnets          []*api.Subnet
	FloatingIPs      []*api.FloatingIP
	ExternalNetworks []*api.ExternalNetwork
	// HostAddresses are the other hosts' underlay addresses, by name
	// (their Host's spec.address).
	HostAddresses map[string]netip.Addr
	// ExternalDevices is this host's link to each external network, by
	// the ExternalNetwork's name; the entry "" is for every external
	// network without its own entry. An ExternalNetwork's spec.interface
	// comes between the two.
	ExternalDevices map[string]string
	// FoundDevices are, for external networks none of those name a
	// device for, the bridge of this host holding an address in the
	// network's CIDR (foundExternalDevices), by name.
	FoundDevices map[string]string
	// SecurityGroups of every tenant (netsecgroups.go).
	SecurityGroups []*api.SecurityGroup
	// SSHKeys of every tenant, for the metadata service (netmeta.go).
	SSHKeys []*api.SSHKey
}

// netProblem is something of the API that the host cannot carry as it is
// (and leaves out of its state), for the object it is about.
type netProblem struct {
	// Kind and Key (tenant/name, or name) of the object.
	Kind, Key string
	Message   string
}

func (p netProblem) String() string { return p.Kind + " " + p.Key + ": " + p.Message }

// netState is hostNetState's answer.
type netState struct {
	State dataplane.HostState
	// VNIs are the VNIs of the networks in State, by tenant/name.
	VNIs map[string]uint32
	// Ports are the port names in State, by the key of their VM, in NIC
	// order ("" for a NIC that has no port: its network is not carried).
	Ports map[string][]string
	// Subnets are, by VNI, what each network's DHCP serves.
	Subnets map[uint32][]dhcpSubnet
	// Problems found, sorted; the objects they name are left out.
	Problems []netProblem
	// IPv6 is, by VNI, what each network's router advertises to its
	// local NICs and serves by DHCPv6 (netra.go); only networks with an
	// IPv6 subnet have an entry.
	IPv6 map[uint32]*raNetwork
}

// dhcpSubnet is one subnet's DHCP service in a network's router.
type dhcpSubnet struct {
	// Key of the Subnet (tenant/name).
	Key     string
	CIDR    netip.Prefix
	Gateway netip.Addr
	DNS     []netip.Addr
	Routes  []dhcpRoute
	MTU     int
	Domain  string
	Lease   int // seconds
	// Leases are the static leases of the local NICs in the subnet.
	Leases map[string]netip.Addr // MAC (lowercase) → address
}

type dhcpRoute struct {
	Destination netip.Prefix
	Gateway     netip.Addr
}

// portKey is what names a NIC's port: the VM's uid and the NIC's index.
// dataplane.PortName hashes it into the tap's name, which QEMU opens.
func portKey(uid string, nic int) string { return uid + "/" + strconv.Itoa(nic) }

// hostNetState computes the host's whole desired network state. A network
// carried here is one with a VNI on which a VM of this host has a NIC;
// its ports are those NICs (tap devices, kept while the VM object exists,
// so a stopped VM keeps its address and a running one never loses its
// tap), its remote ports and peers are the NICs and hosts of
// Network.status on the other hosts, its external side is this host's
// router address from status.routers, and its floating IPs those
// associated with a VM here. Whatever would make the state invalid is
// left out and said in Problems: one broken network never keeps the
// others from being carried.
func hostNetState(in netInputs) netState {
	out := netState{VNIs: map[string]uint32{}, Ports: map[string][]string{}, Subnets: map[uint32][]dhcpSubnet{}}
	out.State.Underlay = in.Underlay
	problem := func(kind, key, format string, args ...any) {
		out.Problems = append(out.Problems, netProblem{Kind: kind, Key: key, Message: fmt.Sprintf(format, args...)})
	}

	networks := map[string]*api.Network{}
	for _, n := range in.Networks {
		networks[n.Metadata.Tenant+"/"+n.Metadata.Name] = n
	}
	subnets := map[string][]*api.Subnet{} // by tenant/network
	for _, s := range in.Subnets {
		if s.Metadata.DeletionTimestamp != nil {
			continue
		}
		k := s.Metadata.Tenant + "/" + s.Spec.Network
		subnets[k] = append(subnets[k], s)
	}
	security := api.NewSecurityIndex(in.SecurityGroups, in.Networks)
	groups := map[string][]netip.Addr{} // the address groups rules name
	externals := map[string]*api.ExternalNetwork{}
	for _, x := range in.ExternalNetworks {
		if x.Metadata.DeletionTimestamp == nil {
			externals[x.Metadata.Name] = x
		}
	}

	// The local NICs, by network.
	type localNIC struct {
		vm  *api.VirtualMachine
		nic int
		ifc api.VMInterfaceStatus
		mac net.HardwareAddr
		ip  netip.Addr
		ip6 netip.Addr // the second address of a dual-stack NIC
	}
	local := map[string][]localNIC{}
	vms := slices.Clone(in.VMs)
	slices.SortFunc(vms, func(a, b *api.VirtualMachine) int { return cmp.Compare(vmKey(a), vmKey(b)) })
	for _, vm := range vms {
		if vm.Spec.Host != in.Host {
			continue
		}
		out.Ports[vmKey(vm)] = make([]string, len(vm.Spec.NICs))
		for i, ifc := range vm.Status.Interfaces {
			if i >= len(vm.Spec.NICs) || ifc.Network == "" {
				continue
			}
			mac, err := net.ParseMAC(ifc.MAC)
			if err != nil || len(mac) != 6 {
				problem("VirtualMachine", vmKey(vm), "status.interfaces[%d].mac: %q is not an Ethernet address", i, ifc.MAC)
				continue
			}
			ip, _ := netip.ParseAddr(ifc.IP)
			ip6, _ := netip.ParseAddr(ifc.IPv6)
			k := vm.Metadata.Tenant + "/" + ifc.Network
			local[k] = append(local[k], localNIC{vm: vm, nic: i, ifc: ifc, mac: mac, ip: ip.Unmap(), ip6: ip6})
		}
	}

	fipsByVM := map[string][]*api.FloatingIP{}
	for _, f := range in.FloatingIPs {
		if f.Status.Phase != api.FloatingIPAssociated || f.Status.Host != in.Host || f.Spec.Target == nil || f.Metadata.DeletionTimestamp != nil {
			continue
		}
		// The target is looked up in the floating IP's own tenant only.
		k := f.Metadata.Tenant + "/" + f.Spec.Target.VM
		fipsByVM[k] = append(fipsByVM[k], f)
	}

	keys := make([]string, 0, len(local))
	for k := range local {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		nics := local[key]
		n := networks[key]
		if n == nil {
			for _, l := range nics {
				problem("VirtualMachine", vmKey(l.vm), "nics[%d]: network %s does not exist", l.nic, l.ifc.Network)
			}
			continue
		}
		if n.Status.VNI <= 0 || n.Status.VNI > dataplane.MaxVNI {
			problem("Network", key, "has no VNI yet")
			continue
		}
		vni := uint32(n.Status.VNI)
		dn := dataplane.Network{Name: key, VNI: vni, MTU: n.Spec.MTU}

		// Subnets, in a stable order.
		sns := slices.Clone(subnets[key])
		slices.SortFunc(sns, func(a, b *api.Subnet) int { return cmp.Compare(a.Metadata.Name, b.Metadata.Name) })
		var dhcps []dhcpSubnet
		ra6 := &raNetwork{MTU: n.Spec.MTU, Domain: n.Spec.DNSDomain, Ports: map[string]raPort{}}
		for _, s := range sns {
			sk := s.Metadata.Tenant + "/" + s.Metadata.Name
			p, err := netip.ParsePrefix(s.Spec.CIDR)
			if err != nil {
				problem("Subnet", sk, "spec.cidr: %v", err)
				continue
			}
			gw, err := netip.ParseAddr(s.Spec.Gateway)
			if err != nil {
				problem("Subnet", sk, "spec.gateway: %q is not an address: the router needs one", s.Spec.Gateway)
				continue
			}
			sub := dataplane.Subnet{CIDR: p.Masked(), Gateway: gw.Unmap()}
			clash := false
			for _, o := range dn.Subnets {
				if o.CIDR.Overlaps(sub.CIDR) {
					problem("Subnet", sk, "spec.cidr: %s overlaps %s of the same network", sub.CIDR, o.CIDR)
					clash = true
				}
			}
			if clash {
				continue
			}
			dn.Subnets = append(dn.Subnets, sub)
			if sub.CIDR.Addr().Is6() {
				ra6.addSubnet(s, sub)
			}
			if !s.Spec.DHCP.Disabled && sub.CIDR.Addr().Is4() {
				d := dhcpSubnet{Key: sk, CIDR: sub.CIDR, Gateway: sub.Gateway, MTU: n.Spec.MTU, Domain: networkDomain(n),
					Lease: s.Spec.DHCP.LeaseSeconds, Leases: map[string]netip.Addr{}}
				for _, a := range s.Spec.DNSServers {
					if ip, err := netip.ParseAddr(a); err == nil && ip.Is4() {
						d.DNS = append(d.DNS, ip)
					}
				}
				if len(d.DNS) == 0 {
					d.DNS = []netip.Addr{sub.Gateway}
				}
				for _, r := range s.Spec.Routes {
					dst, err1 := netip.ParsePrefix(r.Destination)
					via, err2 := netip.ParseAddr(r.Gateway)
					if err1 == nil && err2 == nil && dst.Addr().Is4() && via.Is4() {
						d.Routes = append(d.Routes, dhcpRoute{Destination: dst.Masked(), Gateway: via})
					}
				}
				d.Routes = append(d.Routes, metadataRoute(sub.Gateway))
				dhcps = append(dhcps, d)
			}
		}
		// usable is where a NIC's address must be for the router to
		// route it: in a subnet, and not one of its reserved addresses.
		usable := func(a netip.Addr) bool {
			for _, s := range dn.Subnets {
				if s.CIDR.Contains(a) {
					return a != s.Gateway && !api.Reserved(s.CIDR, s.Gateway.String(), a)
				}
			}
			return false
		}

		localMACs := map[string]bool{}
		localIPs := map[netip.Addr]bool{}
		for _, l := range nics {
			port := dataplane.Port{Name: dataplane.PortName(portKey(l.vm.Metadata.UID, l.nic)), MAC: l.mac}
			t := l.vm.Metadata.Tenant
			port.Security = portSecurity(t, security.NIC(t, l.vm.Spec.NICs[l.nic].SecurityGroups), security, groups)
			if localMACs[l.mac.String()] {
				problem("VirtualMachine", vmKey(l.vm), "status.interfaces[%d].mac: %s is another NIC's on network %s", l.nic, l.mac, key)
				continue
			}
			localMACs[l.mac.String()] = true
			switch {
			case !l.ip.IsValid():
			case !usable(l.ip):
				problem("VirtualMachine", vmKey(l.vm), "status.interfaces[%d].ip: %s is in no subnet of network %s this host knows", l.nic, l.ip, key)
			case localIPs[l.ip]:
				problem("VirtualMachine", vmKey(l.vm), "status.interfaces[%d].ip: %s is another NIC's on network %s", l.nic, l.ip, key)
			default:
				localIPs[l.ip] = true
				port.Addresses = []netip.Addr{l.ip}
				for i := range dhcps {
					if dhcps[i].CIDR.Contains(l.ip) {
						dhcps[i].Leases[l.mac.String()] = l.ip
					}
				}
				ra6.addPort(l.mac, l.ip)
			}
			switch {
			case !l.ip6.IsValid():
			case !l.ip6.Is6() || !usable(l.ip6):
				problem("VirtualMachine", vmKey(l.vm), "status.interfaces[%d].ipv6: %s is in no IPv6 subnet of network %s this host knows", l.nic, l.ip6, key)
			case localIPs[l.ip6]:
				problem("VirtualMachine", vmKey(l.vm), "status.interfaces[%d].ipv6: %s is another NIC's on network %s", l.nic, l.ip6, key)
			default:
				localIPs[l.ip6] = true
				port.Addresses = append(port.Addresses, l.ip6)
				ra6.addPort(l.mac, l.ip6)
			}
			dn.Ports = append(dn.Ports, port)
			out.Ports[vmKey(l.vm)][l.nic] = port.Name
		}

		// Peers and the NICs on them.
		peers := map[netip.Addr]bool{}
		for _, h := range n.Status.Hosts {
			if h == in.Host {
				continue
			}
			a, ok := in.HostAddresses[h]
			switch {
			case !ok || !a.IsValid():
				problem("Network", key, "host %s carries it but has no underlay address (its Host's spec.address): its VMs are out of reach", h)
				continue
			case a.Is4() != in.Underlay.Address.Is4() || a == in.Underlay.Address:
				problem("Network", key, "host %s's address %s cannot be a VXLAN peer of %s", h, a, in.Underlay.Address)
				continue
			}
			if !peers[a] {
				peers[a] = true
				dn.Peers = append(dn.Peers, a)
			}
		}
		seenMAC := maps.Clone(localMACs)
		seenIP := maps.Clone(localIPs)
		for _, p := range n.Status.Ports {
			if p.Host == in.Host {
				continue
			}
			a := in.HostAddresses[p.Host]
			if !peers[a] {
				continue // said above, or not in status.hosts yet
			}
			mac, err := net.ParseMAC(p.MAC)
			if err != nil || len(mac) != 6 || seenMAC[mac.String()] {
				continue
			}
			seenMAC[mac.String()] = true
			r := dataplane.RemotePort{Host: a, MAC: mac}
			for _, s := range p.IPs {
				if ip, err := netip.ParseAddr(s); err == nil && usable(ip.Unmap()) && !seenIP[ip.Unmap()] {
					seenIP[ip.Unmap()] = true
					r.Addresses = append(r.Addresses, ip.Unmap())
				}
			}
			dn.Remote = append(dn.Remote, r)
		}

		// The way out, and the floating IPs.
		if name := n.Spec.ExternalNetwork; name != "" {
			dn.External = externalOf(in, key, n, externals[name], problem)
			if dn.External != nil {
				dn.External.IPv6 = external6(in, n, externals[name], vni, dn.Subnets, problem)
			}
		}
		if dn.External != nil {
			for _, l := range nics {
				for _, f := range fipsByVM[vmKey(l.vm)] {
					if f.Spec.Target.NIC != l.nic {
						continue
					}
					fk := f.Metadata.Tenant + "/" + f.Metadata.Name
					ext, err1 := netip.ParseAddr(f.Status.Address)
					internal, err2 := netip.ParseAddr(f.Status.TargetIP)
					switch {
					case f.Spec.ExternalNetwork != n.Spec.ExternalNetwork:
						problem("FloatingIP", fk, "is on external network %s, but network %s routes to %s", f.Spec.ExternalNetwork, key, n.Spec.ExternalNetwork)
					case err1 != nil || !dn.External.Address.Contains(ext.Unmap()):
						problem("FloatingIP", fk, "status.address: %q is not in external network %s", f.Status.Address, n.Spec.ExternalNetwork)
					case err2 != nil || internal.Unmap() != l.ip || !localIPs[l.ip] || !l.ip.Is4():
						problem("FloatingIP", fk, "status.targetIP: %q is not the address of VM %s nics[%d]", f.Status.TargetIP, vmKey(l.vm), l.nic)
					default:
						dn.FloatingIPs = append(dn.FloatingIPs, dataplane.FloatingIP{External: ext.Unmap(), Internal: internal.Unmap()})
					}
				}
			}
		}

		// A last check of the network on its own, so that what the
		// API lets through and the data plane refuses costs only this
		// network.
		one := dataplane.HostState{Underlay: in.Underlay, Networks: []dataplane.Network{dn}, AddressGroups: addressGroups(groups)}
		if err := one.Validate(); err != nil {
			problem("Network", key, "cannot be carried: %v", err)
			for _, l := range nics {
				out.Ports[vmKey(l.vm)][l.nic] = ""
			}
			continue
		}
		out.State.Networks = append(out.State.Networks, dn)
		out.VNIs[key] = vni
		if len(dhcps) > 0 {
			out.Subnets[vni] = dhcps
		}
		if len(ra6.Subnets) > 0 {
			if out.IPv6 == nil {
				out.IPv6 = map[uint32]*raNetwork{}
			}
			out.IPv6[vni] = ra6
		}
	}

	out.State.AddressGroups = addressGroups(groups)
	// What only the whole state can tell (two networks with one VNI, one
	// external address twice): the later network goes.
	if err := out.State.Validate(); err != nil {
		var kept []dataplane.Network
		for _, n := range out.State.Networks {
			try := dataplane.HostState{Underlay: in.Underlay, Networks: append(slices.Clone(kept), n), AddressGroups: out.State.AddressGroups}
			if err := try.Validate(); err != nil {
				var fe dataplane.FieldErrors
				if errors.As(err, &fe) {
					problem("Network", n.Name, "conflicts with another network on this host: %v", fe)
				}
				delete(out.VNIs, n.Name)
				delete(out.Subnets, n.VNI)
				delete(out.IPv6, n.VNI)
				for _, p := range n.Ports {
					for _, names := range out.Ports {
						for i := range names {
							if names[i] == p.Name {
								names[i] = ""
							}
						}
					}
				}
				continue
			}
			kept = append(kept, n)
		}
		out.State.Networks = kept
	}
	slices.SortFunc(out.Problems, func(a, b netProblem) int { return cmp.Compare(a.String(), b.String()) })
	return out
}

// externalOf is network n's way out on this host: its router's address on
// the external network (from status.routers), the external network's
// prefix and gateway, and this host's device on it.
func externalOf(in netInputs, key string, n *api.Network, x *api.ExternalNetwork, problem func(kind, key, format string, args ...any)) *dataplane.External {
	name := n.Spec.ExternalNetwork
	if x == nil {
		return nil // the Routed condition says so
	}
	var addr string
	for _, r := range n.Status.Routers {
		if r.Host == in.Host {
			addr = r.ExternalAddress
		}
	}
	if addr == "" {
		return nil // none allocated (yet): the Routed condition says why
	}
	cidr, err := netip.ParsePrefix(x.Spec.CIDR)
	if err != nil {
		problem("ExternalNetwork", name, "spec.cidr: %v", err)
		return nil
	}
	gw, err := netip.ParseAddr(x.Spec.Gateway)
	if err != nil {
		problem("ExternalNetwork", name, "spec.gateway: %q is not an address", x.Spec.Gateway)
		return nil
	}
	a, err := netip.ParseAddr(addr)
	if err != nil || !cidr.Contains(a.Unmap()) {
		problem("Network", key, "status.routers: this host's external address %q is not in %s", addr, cidr)
		return nil
	}
	dev := in.ExternalDevices[name]
	if dev == "" {
		dev = x.Spec.Interface
	}
	if dev == "" {
		dev = in.ExternalDevices[""]
	}
	if dev == "" {
		dev = in.FoundDevices[name]
	}
	if dev == "" {
		problem("ExternalNetwork", name, "this host has no device for it: no bridge here holds an address in %s; set the ExternalNetwork's spec.interface or the agent's --external-interface %s=BRIDGE", cidr, name)
		return nil
	}
	return &dataplane.External{Device: dev, Address: netip.PrefixFrom(a.Unmap(), cidr.Bits()), Gateway: gw.Unmap()}
}

func vmKey(vm *api.VirtualMachine) string { return vm.Metadata.Tenant + "/" + vm.Metadata.Name }
