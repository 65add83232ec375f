package controllers

// The scheduler's decision as it was made before the cluster was kept
// incrementally: from a snapshot of every host and placed VM, walked in
// full for each decision. It is kept here as the reference the
// incremental scheduler must agree with (TestClusterAgreesWithSnapshot),
// changed in one way only: a host's free CPU is its capacity less the
// sum of its VMs' CPUs, rather than less each VM's in turn, which could
// round differently in the last bit.

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	api "hearth.dev/hearth/api/v1alpha1"
)

// refPlacement is the cluster as the scheduler sees it at one moment.
type refPlacement struct {
	// hosts sorted by name.
	hosts []*api.Host
	// onHost holds the VMs placed on each host, not being deleted.
	onHost map[string][]*api.VirtualMachine
	// volume finds a Volume by tenant and name; nil finds none.
	volume func(tenant, name string) (*api.Volume, bool)
}

// schedule picks the host for vm: among the hosts it fits, the one with
// the fewest VMs of its spread group, then the most free memory, then the
// first by name. With none it returns "" and a summary such as
// "0/3 hosts: 2 lack memory (need 4Gi, largest free 2Gi), 1 NotReady".
func refSchedule(vm *api.VirtualMachine, p *refPlacement) (string, string) {
	volumeHost, why := refVolumesHost(vm, p)
	if why != "" {
		return "", why
	}
	var fails [numFailures]int
	var largestMem int64 = math.MinInt64
	largestCPU := math.Inf(-1)
	type fit struct {
		name    string
		spread  int
		freeMem int64
	}
	var fits []fit
	for _, h := range p.hosts {
		spec := h.Spec
		spec.Default()
		placed := p.onHost[h.Metadata.Name]
		reason := -1
		switch {
		case volumeHost != "" && h.Metadata.Name != volumeHost:
			reason = failVolume
		case h.Status.Phase != api.HostReady:
			reason = failNotReady
		case spec.Unschedulable:
			reason = failCordoned
		case !vm.Spec.NodeSelector.Matches(h.Metadata.Labels):
			reason = failSelector
		case !refAffinitySatisfied(vm, placed, p):
			reason = failAffinity
		case refAntiAffinityViolated(vm, placed):
			reason = failAntiAffinity
		}
		if reason >= 0 {
			fails[reason]++
			continue
		}
		freeCPU, freeMem := refFree(h, spec, placed)
		if int64(vm.Spec.Memory) > freeMem {
			fails[failMemory]++
			largestMem = max(largestMem, freeMem)
			continue
		}
		if float64(vm.Spec.CPUs) > freeCPU+1e-9 {
			fails[failCPU]++
			largestCPU = max(largestCPU, freeCPU)
			continue
		}
		fits = append(fits, fit{name: h.Metadata.Name, spread: refSpreadCount(vm, placed), freeMem: freeMem - int64(vm.Spec.Memory)})
	}
	if len(fits) > 0 {
		sort.Slice(fits, func(i, j int) bool {
			a, b := fits[i], fits[j]
			if a.spread != b.spread {
				return a.spread < b.spread
			}
			if a.freeMem != b.freeMem {
				return a.freeMem > b.freeMem
			}
			return a.name < b.name
		})
		return fits[0].name, ""
	}
	if len(p.hosts) == 0 {
		return "", "0/0 hosts: no host has registered (run `hearth agent` on one)"
	}
	text := [numFailures]string{
		failVolume:   "do not hold its volumes (volume data lives on " + volumeHost + ")",
		failNotReady: "NotReady",
		failCordoned: "unschedulable (cordoned)",
		failMemory: fmt.Sprintf("lack memory (need %s, largest free %s)",
			vm.Spec.Memory, api.Bytes(max(largestMem, 0))),
		failCPU: fmt.Sprintf("lack CPU (need %d, largest free %s)",
			vm.Spec.CPUs, strconv.FormatFloat(math.Floor(max(largestCPU, 0)*100)/100, 'f', -1, 64)),
		failSelector:     "do not match nodeSelector",
		failAffinity:     "do not satisfy affinity",
		failAntiAffinity: "violate anti-affinity",
	}
	order := make([]int, 0, numFailures)
	for r := range numFailures {
		if fails[r] > 0 {
			order = append(order, r)
		}
	}
	sort.SliceStable(order, func(i, j int) bool { return fails[order[i]] > fails[order[j]] })
	parts := make([]string, len(order))
	for i, r := range order {
		parts[i] = fmt.Sprintf("%d %s", fails[r], text[r])
	}
	return "", fmt.Sprintf("0/%d hosts: %s", len(p.hosts), strings.Join(parts, ", "))
}

// volumesHost returns the host that holds the local volumes vm's disks
// name, "" if none is bound yet (an unbound volume is made where the VM
// goes), or why no host can do: the volumes are bound to different hosts,
// or one waits to be bound to its snapshot's host.
func refVolumesHost(vm *api.VirtualMachine, p *refPlacement) (host, why string) {
	if p.volume == nil {
		return "", ""
	}
	var first string
	for _, d := range vm.Spec.Disks {
		if d.Volume == "" {
			continue
		}
		vol, ok := p.volume(vm.Metadata.Tenant, d.Volume)
		if !ok || (vol.Spec.Backend != "" && vol.Spec.Backend != api.BackendLocal) {
			continue
		}
		switch {
		case vol.Spec.Host == "" && vol.Spec.Source.Snapshot != "":
			return "", fmt.Sprintf("volume %s is not bound to a host yet: it is made from snapshot %s, on that snapshot's host", d.Volume, vol.Spec.Source.Snapshot)
		case vol.Spec.Host == "":
		case host == "":
			host, first = vol.Spec.Host, d.Volume
		case vol.Spec.Host != host:
			return "", fmt.Sprintf("its volumes live on different hosts: volume data lives on %s (volume %s) and on %s (volume %s); a VM can use local volumes of one host only",
				host, first, vol.Spec.Host, d.Volume)
		}
	}
	return host, ""
}

// free is what is left on a host for scheduling: what is allocatable
// (api.HostSpec.Allocatable) less what the placed VMs ask for.
func refFree(h *api.Host, spec api.HostSpec, placed []*api.VirtualMachine) (cpu float64, mem int64) {
	cpu, m := spec.Allocatable(&h.Status)
	mem = int64(m)
	used := 0
	for _, vm := range placed {
		used += vm.Spec.CPUs
		mem -= int64(vm.Spec.Memory)
	}
	return cpu - float64(used), mem
}

// affinitySatisfied reports whether, for every affinity selector, the host
// runs a VM of the VM's tenant that matches it. A selector no placed VM of
// the tenant matches but the VM itself does is satisfied anywhere, so the
// first VM of a group that wants to be together can be placed.
func refAffinitySatisfied(vm *api.VirtualMachine, placed []*api.VirtualMachine, p *refPlacement) bool {
	for _, sel := range vm.Spec.Affinity {
		if !refAnyMatch(vm.Metadata.Tenant, sel, placed) && !(sel.Matches(vm.Metadata.Labels) && !refPlacedAnywhere(vm.Metadata.Tenant, sel, p)) {
			return false
		}
	}
	return true
}

func refPlacedAnywhere(tenant string, sel api.LabelSelector, p *refPlacement) bool {
	for _, placed := range p.onHost {
		if refAnyMatch(tenant, sel, placed) {
			return true
		}
	}
	return false
}

func refAnyMatch(tenant string, sel api.LabelSelector, vms []*api.VirtualMachine) bool {
	for _, o := range vms {
		if o.Metadata.Tenant == tenant && sel.Matches(o.Metadata.Labels) {
			return true
		}
	}
	return false
}

// antiAffinityViolated reports whether the host runs a VM of the VM's
// tenant that one of its anti-affinity selectors matches, or whose own
// anti-affinity matches the VM: the rule holds both ways, as a person
// who wrote it on either VM expects.
func refAntiAffinityViolated(vm *api.VirtualMachine, placed []*api.VirtualMachine) bool {
	for _, o := range placed {
		if o.Metadata.Tenant != vm.Metadata.Tenant || o.Metadata.UID == vm.Metadata.UID {
			continue
		}
		for _, sel := range vm.Spec.AntiAffinity {
			if sel.Matches(o.Metadata.Labels) {
				return true
			}
		}
		for _, sel := range o.Spec.AntiAffinity {
			if sel.Matches(vm.Metadata.Labels) {
				return true
			}
		}
	}
	return false
}

func refSpreadCount(vm *api.VirtualMachine, placed []*api.VirtualMachine) int {
	g := spreadGroup(vm)
	if g == "" {
		return 0
	}
	n := 0
	for _, o := range placed {
		if spreadGroup(o) == g {
			n++
		}
	}
	return n
}
