package agent

import (
	"cmp"
	"slices"
	"sync"

	api "hearth.dev/hearth/api/v1alpha1"
)

// The data plane's side of a live migration (agent/migrate.go moves the
// guest). A VM's ports are where its guest runs:
//
//   - On the destination, the VM is in the cache as soon as its spec.host
//     names this host, so its taps are made on its network's bridge (with
//     its security groups and anti-spoofing) before QEMU starts with
//     -incoming and opens them. Until the move is done the server keeps
//     the VM's port on the source (api.VMPortHost), so this host has no
//     forwarding entry for the VM's MAC: frames from here to it flood to
//     the network's hosts, the source among them, as for any unknown MAC.
//   - On the source, the VM left the cache when its spec.host changed,
//     but its QEMU runs here until the destination has it: leavingTracker
//     keeps its ports (and, since the server keeps the floating IP's
//     status.host here, its floating IP) until the VM controller has
//     torn its QEMU down (release). A migration that fails leaves them
//     all in place.
//   - When the destination reports the VM Running there, the server moves
//     its port and floating IP to the new host: every other host points
//     its forwarding entry for the MAC at the new host's VTEP, the new
//     host's router translates the floating IP (and announces it on the
//     external network with a gratuitous ARP), and the destination asks
//     QEMU to announce the NICs (QMP announce-self: the guest sends its
//     own gratuitous ARPs and unsolicited neighbour advertisements).

// leavingTracker remembers the VMs placed on this host that the last
// network state was computed from, so that one that leaves the cache
// (it moves live to another host) keeps its ports until the VM
// controller, which alone knows whether its QEMU runs here, releases it.
//
// Whether a VM that left ran here is not judged from its status as the
// last state saw it: a VM's status changes do not call for an Apply, so
// that may be from before its QEMU started (status Pending), and a VM
// moved within the 10 s resync of its start would lose its taps under its
// running QEMU. QEMU 7.2 then spins on the dead tap's descriptor, its
// main loop never gets to the migration's connection, and the
// destination, which reads the TLS handshake on its own main loop,
// blocks with it, QMP silent, until the source gives up (TestLeavingTracker).
// A VM that did not run here costs nothing by it: the VM controller
// tears it down and releases it at once.
type leavingTracker struct {
	mu      sync.Mutex
	last    map[string]*api.VirtualMachine
	leaving map[string]*api.VirtualMachine
}

// update takes the VMs of the cache now and returns the VMs leaving this
// host (host): those of the last call that are gone from the cache, not
// being deleted, and not released since.
func (l *leavingTracker) update(host string, vms []*api.VirtualMachine) []*api.VirtualMachine {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := make(map[string]*api.VirtualMachine, len(vms))
	for _, vm := range vms {
		if vm.Spec.Host == host {
			cur[vmKey(vm)] = vm
		}
	}
	if l.leaving == nil {
		l.leaving = map[string]*api.VirtualMachine{}
	}
	for k, vm := range l.last {
		if _, ok := cur[k]; !ok && vm.Metadata.DeletionTimestamp == nil {
			l.leaving[k] = vm
		}
	}
	for k := range l.leaving {
		if _, ok := cur[k]; ok {
			delete(l.leaving, k) // back here
		}
	}
	l.last = cur
	out := make([]*api.VirtualMachine, 0, len(l.leaving))
	for _, vm := range l.leaving {
		out = append(out, vm)
	}
	slices.SortFunc(out, func(a, b *api.VirtualMachine) int { return cmp.Compare(vmKey(a), vmKey(b)) })
	return out
}

// release forgets the leaving VM with uid at key (its QEMU here is
// gone), and says whether it was one. One released before an update saw
// it go is not leaving either. Only that VM: another of the same name
// (deleted and made again) may be placed here, or leaving, by now.
func (l *leavingTracker) release(key, uid string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if vm, ok := l.last[key]; ok && vm.Metadata.UID == uid {
		delete(l.last, key)
	}
	vm, ok := l.leaving[key]
	if !ok || vm.Metadata.UID != uid {
		return false
	}
	delete(l.leaving, key)
	return true
}

// netReleased tells the network controller that the VM with uid at key
// no longer runs here (torn down, or moved away): a leaving VM's ports
// go.
func (a *Agent) netReleased(key, uid string) {
	if a.net != nil && a.net.leaving.release(key, uid) {
		a.net.changed()
	}
}

// leavingVMs are in.Leaving but for VMs that are also in in.VMs on this
// host (a VM that came back is carried as any other).
func leavingVMs(in netInputs) []*api.VirtualMachine {
	var out []*api.VirtualMachine
	for _, vm := range in.Leaving {
		if !slices.ContainsFunc(in.VMs, func(o *api.VirtualMachine) bool { return vmKey(o) == vmKey(vm) && o.Spec.Host == in.Host }) {
			out = append(out, vm)
		}
	}
	return out
}
