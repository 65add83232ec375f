package agent

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/cloudinit"
	"hearth.dev/hearth/dataplane"
)

// The metadata service answers at dataplane.MetadataAddress, port 80 (and
// over IPv6 at dataplane.MetadataAddress6, on networks with IPv6), in
// every router namespace, for the VMs of this host on the network:
// EC2's tree (/latest/meta-data/, /latest/user-data, any version),
// OpenStack's (/openstack/latest/meta_data.json, network_data.json,
// user_data) and NoCloud's (/nocloud/meta-data, user-data, vendor-data,
// network-config; cloud-init's ds=nocloud;s=http://169.254.169.254/nocloud/).
// The documents come from the same cloudinit.Seed as the VM's seed disk
// (cloudinit.Instance) and are made at each Apply, so the first request
// after a lease is a map lookup.
//
// The asker is the VM whose NIC on this network (the namespace the
// request arrived in) has the request's source address; there is no way
// to name another VM. The source address cannot be borrowed: the router
// holds a permanent neighbour entry for every NIC's address with the
// NIC's MAC (package dataplane), so its answers go to that MAC and a NIC
// sending from another's address never completes the TCP handshake; and
// anti-spoofing drops such packets on the NIC's port before the router
// sees them. A source address no local NIC of the network has is refused
// (403).
//
// Guests reach the address through their gateway: every subnet's DHCP
// hands out a classless route (option 121) to it via the gateway
// (metadataRoute), so a guest whose default route goes elsewhere, or one
// with a link-local 169.254.0.0/16 on-link route, still asks its own
// host's router, and no ARP for it crosses hosts.

// metaTable is one network's metadata: the documents of each local NIC,
// by its address.
type metaTable map[netip.Addr]*metaEntry

type metaEntry struct {
	// VM is the VM's key (tenant/name) and MAC its NIC's, for logs and
	// tests.
	VM, MAC string
	Docs    cloudinit.Documents
}

// metadataRoute is the classless route that takes a subnet's guests to the
// metadata address through their gateway.
func metadataRoute(gateway netip.Addr) dhcpRoute {
	return dhcpRoute{Destination: netip.PrefixFrom(dataplane.MetadataAddress, 32), Gateway: gateway}
}

// metaTables computes the metadata of every local NIC of the networks in
// st. It is pure: table-tested without root.
func metaTables(in netInputs, st netState) map[uint32]*metaTable {
	out := map[uint32]*metaTable{}
	networks := map[string]*api.Network{}
	for _, n := range in.Networks {
		networks[n.Metadata.Tenant+"/"+n.Metadata.Name] = n
	}
	keys := map[string]map[string]string{} // tenant → SSHKey name → public key
	for _, k := range in.SSHKeys {
		t := k.Metadata.Tenant
		if keys[t] == nil {
			keys[t] = map[string]string{}
		}
		keys[t][k.Metadata.Name] = k.Spec.PublicKey
	}
	for _, vm := range in.VMs {
		if vm.Spec.Host != in.Host {
			continue
		}
		tenant := vm.Metadata.Tenant
		ports := st.Ports[vmKey(vm)]
		keyList, keyNames, _ := vmSSHKeys(vm, keys[tenant])
		base := cloudinit.Instance{
			Seed: cloudinit.Seed{InstanceID: vm.Metadata.UID, Hostname: vm.Metadata.Name, SSHKeys: keyList,
				UserData: vm.Spec.CloudInit.UserData, NetworkConfig: vm.Spec.CloudInit.NetworkConfig},
			KeyNames: keyNames, Project: tenant,
		}
		var dnsServers []string
		for _, ifc := range vm.Status.Interfaces {
			mtu := 0
			if n := networks[tenant+"/"+ifc.Network]; n != nil {
				mtu = n.Spec.MTU
			}
			base.Interfaces = append(base.Interfaces, cloudinit.Interface{MAC: strings.ToLower(ifc.MAC), MTU: mtu})
			ip, err := netip.ParseAddr(ifc.IP)
			if err != nil {
				continue
			}
			for _, d := range st.Subnets[st.VNIs[tenant+"/"+ifc.Network]] {
				if d.CIDR.Contains(ip.Unmap()) {
					for _, a := range d.DNS {
						if !slices.Contains(dnsServers, a.String()) {
							dnsServers = append(dnsServers, a.String())
						}
					}
				}
			}
		}
		base.DNS = dnsServers
		for i, ifc := range vm.Status.Interfaces {
			vni, carried := st.VNIs[tenant+"/"+ifc.Network]
			ip, err := netip.ParseAddr(ifc.IP)
			// Only a NIC the state carries (it has its port) has an
			// address the router routes and pins to its MAC.
			if ifc.Network == "" || !carried || err != nil || i >= len(ports) || ports[i] == "" {
				continue
			}
			ip = ip.Unmap()
			inst := base
			inst.MAC = strings.ToLower(ifc.MAC)
			if ip.Is4() {
				inst.LocalIPv4 = ip.String()
			}
			inst.PublicIPv4 = floatingIPOf(in.FloatingIPs, vm, i)
			t := out[vni]
			if t == nil {
				t = &metaTable{}
				out[vni] = t
			}
			e := &metaEntry{VM: vmKey(vm), MAC: inst.MAC, Docs: inst.Documents()}
			(*t)[ip] = e
			// Over IPv6 (dataplane.MetadataAddress6, link-local) a guest
			// asks from its link-local address, or from its IPv6 one:
			// both are the NIC's alone (anti-spoofing, and the router's
			// permanent neighbour entries for them).
			if mac, err := net.ParseMAC(ifc.MAC); err == nil && len(mac) == 6 {
				(*t)[dataplane.LinkLocal(mac)] = e
			}
			if ip6, err := netip.ParseAddr(ifc.IPv6); err == nil && ip6.Is6() {
				(*t)[ip6] = e
			}
		}
	}
	return out
}

// floatingIPOf is the address of the associated floating IP of vm's tenant
// that points at its NIC nic, "" for none.
func floatingIPOf(fips []*api.FloatingIP, vm *api.VirtualMachine, nic int) string {
	var found []string
	for _, f := range fips {
		if f.Metadata.Tenant == vm.Metadata.Tenant && f.Spec.Target != nil && f.Spec.Target.VM == vm.Metadata.Name &&
			f.Spec.Target.NIC == nic && f.Status.Phase == api.FloatingIPAssociated && f.Status.Address != "" {
			found = append(found, f.Status.Address)
		}
	}
	sort.Strings(found)
	if len(found) == 0 {
		return ""
	}
	return found[0]
}

// vmSSHKeys are the public keys a VM gets, and their SSHKeys' names: the
// SSHKeys its spec.cloudInit.sshKeys names, or every key of its tenant
// (byName, SSHKey name → public key). A named key that does not exist is
// left out and returned as a *notFoundError for the first one.
func vmSSHKeys(vm *api.VirtualMachine, byName map[string]string) (keys, names []string, err error) {
	if len(vm.Spec.CloudInit.SSHKeys) == 0 {
		for n := range byName {
			names = append(names, n)
		}
		// Sorted by key, as the seed always had them.
		sort.Slice(names, func(i, j int) bool { return byName[names[i]] < byName[names[j]] })
		for _, n := range names {
			keys = append(keys, byName[n])
		}
		return keys, names, nil
	}
	for i, n := range vm.Spec.CloudInit.SSHKeys {
		k, ok := byName[n]
		if !ok {
			if err == nil {
				err = fmt.Errorf("spec.cloudInit.sshKeys[%d]: %w", i, &notFoundError{kind: "SSHKey", tenant: vm.Metadata.Tenant, name: n})
			}
			continue
		}
		keys = append(keys, k)
		names = append(names, n)
	}
	return keys, names, err
}

// metaHandler serves the metadata of the VM that asks.
func (s *networkServices) metaHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		src, err := netip.ParseAddrPort(r.RemoteAddr)
		var e *metaEntry
		if err == nil {
			// An IPv6 link-local asker's address carries the zone
			// (the internal leg): the NIC is told by the address.
			e = (*s.table.Load())[src.Addr().Unmap().WithZone("")]
		}
		if e == nil {
			http.Error(w, fmt.Sprintf("no VM of this network on this host has the address %s", src.Addr().Unmap()), http.StatusForbidden)
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
		case http.MethodPut:
			// IMDSv2's session token: clients that ask for one (cloud-init
			// does first) get one; the VM is told apart by its address,
			// not by the token.
			if strings.TrimSuffix(r.URL.Path, "/") == "/latest/api/token" {
				var b [16]byte
				rand.Read(b[:])
				if ttl := r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"); ttl != "" {
					w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", ttl)
				}
				w.Header().Set("Content-Type", "text/plain")
				w.Write([]byte(hex.EncodeToString(b[:])))
				return
			}
			fallthrough
		default:
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the metadata service is read-only", http.StatusMethodNotAllowed)
			return
		}
		body, ok := e.Docs.Lookup(r.URL.Path)
		if !ok {
			http.NotFound(w, r)
			return
		}
		ct := "text/plain; charset=utf-8"
		if strings.HasSuffix(r.URL.Path, ".json") {
			ct = "application/json"
		} else if strings.HasSuffix(r.URL.Path, "user-data") || strings.HasSuffix(r.URL.Path, "user_data") {
			ct = "application/octet-stream"
		}
		w.Header().Set("Content-Type", ct)
		w.Write(body)
	})
}
