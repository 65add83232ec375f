package auth

import (
	api "hearth.dev/hearth/api/v1alpha1"
)

// What a host credential may read. An agent needs its own VMs and what
// they use, not every tenant's objects: a compromised host of a homelab
// shared with friends must not learn the VMs, keys and rules of tenants
// that have nothing on it. So a host reads:
//
//   - the VMs that involve it (VMHosts: placed on it, running on it,
//     migrating from it, failed over from it) and the VMs that use a
//     Volume placed on it (the agent that manages a shared volume checks
//     that no VM runs on it before it grows it);
//   - the Volumes and Snapshots placed on it, the Volumes its VMs name,
//     and the Volumes cloned from a snapshot in the tenants it holds
//     something of (a snapshot's data is deleted only once no volume
//     is cloned from it, wherever that volume is placed);
//   - the SSHKeys its VMs name (every key of the tenant for a VM that
//     names none, as the VM gets them all) and the SecurityGroups its
//     VMs' NICs name;
//   - the Networks, Subnets, FloatingIPs, Snapshots and Images of the
//     tenants it holds something of (a VM that involves it, a Volume
//     placed on it), and every shared Image. A network's status lists
//     its ports on every host, the peers a host's FDB, DNS and remote
//     security groups need (a remote group's members are the tenant's
//     NICs on any of its networks), so the whole tenant's networks are
//     read, as they are;
//   - the events it recorded;
//   - cluster infrastructure as before (Hosts, ExternalNetworks,
//     StoragePools and their keyrings, Sites, Machines), and no
//     VirtualMachineSets or Users.
//
// Whatever depends on other objects (a key named by a VM on the host) is
// decided by a HostScope the server keeps current from its watch of VMs
// and Volumes, so deciding costs a map lookup, not a walk of every VM.

// HostScope says, for the objects whose visibility to a host depends on
// other objects, whether the host needs them.
type HostScope interface {
	// Needs reports whether host needs obj (one of the HostScoped kinds).
	Needs(host string, obj api.Object) bool
}

// hostScopedKinds are the kinds a host reads only in part.
var hostScopedKinds = map[string]bool{
	"VirtualMachine": true, "Volume": true, "Snapshot": true, "SSHKey": true, "SecurityGroup": true,
	"Network": true, "Subnet": true, "FloatingIP": true, "Image": true, "Event": true,
	"VirtualMachineSet": true, "User": true,
}

// HostScoped reports whether p is an agent's credential that reads only
// some objects of kind k: its lists and watches are filtered object by
// object (never passed through as stored), and what it reads changes as
// objects are placed on its host.
func HostScoped(p *Principal, k *api.KindInfo) bool {
	return p.Host != "" && hostScopedKinds[k.Kind]
}

// VMHosts are the hosts a VM involves: the one it is placed on, the one
// it runs on as its agent reports, the one it migrates from, and the one
// it failed over from. Each of their agents reads it.
func VMHosts(vm *api.VirtualMachine) []string {
	out := make([]string, 0, 2)
	add := func(h string) {
		for _, o := range out {
			if o == h {
				return
			}
		}
		if h != "" {
			out = append(out, h)
		}
	}
	add(vm.Spec.Host)
	add(vm.Status.Host)
	if m := vm.Status.Migration; m != nil {
		add(m.From)
	}
	if f := vm.Status.Failover; f != nil {
		add(f.From)
	}
	return out
}

// hostReads reports whether the agent credential p may read obj.
func hostReads(p *Principal, obj api.Object) bool {
	switch o := obj.(type) {
	case *api.User, *api.VirtualMachineSet:
		return false
	case *api.Event:
		return o.Spec.Source == p.Name
	case *api.VirtualMachine:
		for _, h := range VMHosts(o) {
			if h == p.Host {
				return true
			}
		}
	case *api.Volume:
		if o.Spec.Host == p.Host {
			return true
		}
	case *api.Snapshot:
		if o.Spec.Host == p.Host {
			return true
		}
	case *api.Image:
		if o.Metadata.Tenant == "" {
			return true
		}
	}
	if !hostScopedKinds[obj.GetTypeMeta().Kind] {
		return true
	}
	return p.Scope != nil && p.Scope.Needs(p.Host, obj)
}
