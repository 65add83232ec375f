package controllers

import (
	"sort"

	api "hearth.dev/hearth/api/v1alpha1"
)

// cluster is the scheduler's view of hosts and VMs, kept up to date one
// change at a time (informer events and the scheduler's own assumed
// bindings) rather than rebuilt for every decision: each host's room,
// the VMs placed on it and what (anti-)affinity and spreading look at
// are sums and indexes, so a decision costs the same with ten VMs or ten
// thousand. schedule (scheduler.go) reads it; checkCluster in the tests
// compares it with a count from scratch.
//
// It is not safe for concurrent use: the Scheduler holds its lock.
type cluster struct {
	hosts map[string]*hostState
	// names are the hosts' names, sorted, and order their states in the
	// same order: decisions go through hosts in this order, so ties go to
	// the first name.
	names []string
	order []*hostState
	// vms are every cached VM not being deleted, by key.
	vms map[string]*vmState
	// placed indexes the VMs that count on some host by tenant and label
	// ("key=value"), for affinity's "is a VM it wants to be with
	// anywhere yet".
	placed map[string]map[string]map[*vmState]struct{}
	// pending are the VMs with no host (nor an assumed one); unmarked
	// the placed ones whose status does not say so yet. The scheduler
	// has work on both.
	pending, unmarked map[string]*vmState
	// antiTenants counts, per tenant, the placed VMs with anti-affinity
	// rules: a decision for a tenant with none skips checking them.
	antiTenants map[string]int
}

// hostState is one host and what is placed on it.
type hostState struct {
	name string
	obj  *api.Host
	spec api.HostSpec // defaulted
	// ready and cordoned are read from obj once, not per decision.
	ready, cordoned bool
	// capCPU and capMem are what the VMs may take (api.HostSpec.Allocatable).
	capCPU float64
	capMem int64
	// usedCPU and usedMem are the sums over vms.
	usedCPU int
	usedMem int64
	vms     map[*vmState]struct{}
	// spread counts the VMs of each spread group.
	spread map[string]int
	// tenants holds, per tenant, its VMs here and how many carry each
	// label, so affinity rules read a host's VMs of one tenant only, and
	// a rule on one label not at all.
	tenants map[string]*tenantOnHost
}

type tenantOnHost struct {
	vms    map[*vmState]struct{}
	labels map[string]int // "key=value" → VMs carrying it
	// anti are its VMs here with anti-affinity rules, which every
	// decision for the tenant checks the other way round.
	anti map[*vmState]struct{}
}

// vmState is one cached VM as the scheduler counts it.
type vmState struct {
	key string
	obj *api.VirtualMachine
	// assumed is a host this scheduler bound it to that the cache has
	// not shown yet.
	assumed string
	// host is where it counts ("" nowhere): spec.host, else assumed.
	host  string
	group string // spread group
}

func newCluster() *cluster {
	return &cluster{hosts: map[string]*hostState{}, vms: map[string]*vmState{},
		placed: map[string]map[string]map[*vmState]struct{}{}, pending: map[string]*vmState{}, unmarked: map[string]*vmState{},
		antiTenants: map[string]int{}}
}

// setHost records a host as cached now (nil: gone).
func (c *cluster) setHost(name string, h *api.Host) {
	hs := c.hosts[name]
	if h == nil {
		if hs == nil {
			return
		}
		delete(c.hosts, name)
		i := sort.SearchStrings(c.names, name)
		c.names = append(c.names[:i], c.names[i+1:]...)
		c.order = append(c.order[:i], c.order[i+1:]...)
		// Its VMs still count there should it come back; they stay
		// indexed on the orphaned state, which nothing reads.
		c.orphans(hs)
		return
	}
	if hs == nil {
		hs = &hostState{name: name, vms: map[*vmState]struct{}{}, spread: map[string]int{}, tenants: map[string]*tenantOnHost{}}
		c.hosts[name] = hs
		i := sort.SearchStrings(c.names, name)
		c.names = append(c.names, "")
		copy(c.names[i+1:], c.names[i:])
		c.names[i] = name
		c.order = append(c.order, nil)
		copy(c.order[i+1:], c.order[i:])
		c.order[i] = hs
		// VMs that named this host before it was cached count on it now.
		for _, v := range c.vms {
			if v.host == name {
				c.addToHost(hs, v)
			}
		}
	}
	hs.obj = h
	hs.spec = h.Spec
	hs.spec.Default()
	hs.ready, hs.cordoned = h.Status.Phase == api.HostReady, hs.spec.Unschedulable
	cpu, mem := hs.spec.Allocatable(&h.Status)
	hs.capCPU, hs.capMem = cpu, int64(mem)
}

// orphans forgets a removed host's VMs' contributions: a host cached
// again is counted afresh from c.vms.
func (c *cluster) orphans(hs *hostState) {
	hs.vms, hs.spread, hs.tenants = nil, nil, nil
}

// setVM records a VM as cached now (nil: gone). A VM being deleted
// counts nowhere.
func (c *cluster) setVM(key string, vm *api.VirtualMachine) {
	old := c.vms[key]
	if vm == nil || vm.Metadata.DeletionTimestamp != nil {
		if old != nil {
			c.unplace(old)
			delete(c.vms, key)
			delete(c.pending, key)
			delete(c.unmarked, key)
		}
		return
	}
	v := old
	if v == nil {
		v = &vmState{key: key}
		c.vms[key] = v
	} else {
		c.unplace(v)
	}
	if v.obj != nil && v.obj.Metadata.UID != vm.Metadata.UID {
		v.assumed = "" // another VM of the same name: not the one bound
	}
	v.obj = vm
	if vm.Spec.Host != "" {
		v.assumed = "" // the cache has caught up with the binding
	}
	v.group = spreadGroup(vm)
	c.place(v)
}

// assume counts a binding the scheduler has decided before the cache
// shows it; host "" forgets one (the binding failed).
func (c *cluster) assume(key, host string) {
	v := c.vms[key]
	if v == nil {
		return
	}
	c.unplace(v)
	v.assumed = host
	c.place(v)
}

// place counts v where it now belongs.
func (c *cluster) place(v *vmState) {
	v.host = v.obj.Spec.Host
	if v.host == "" {
		v.host = v.assumed
	}
	delete(c.pending, v.key)
	delete(c.unmarked, v.key)
	switch {
	case v.host == "":
		c.pending[v.key] = v
		return
	case v.obj.Spec.Host != "" && (v.obj.Status.Phase == "" || v.obj.Status.Phase == api.VMPending):
		c.unmarked[v.key] = v
	}
	tenant := v.obj.Metadata.Tenant
	if len(v.obj.Spec.AntiAffinity) > 0 {
		c.antiTenants[tenant]++
	}
	byLabel := c.placed[tenant]
	if byLabel == nil {
		byLabel = map[string]map[*vmState]struct{}{}
		c.placed[tenant] = byLabel
	}
	for k, val := range v.obj.Metadata.Labels {
		set := byLabel[k+"="+val]
		if set == nil {
			set = map[*vmState]struct{}{}
			byLabel[k+"="+val] = set
		}
		set[v] = struct{}{}
	}
	if hs := c.hosts[v.host]; hs != nil {
		c.addToHost(hs, v)
	}
}

func (c *cluster) addToHost(hs *hostState, v *vmState) {
	hs.vms[v] = struct{}{}
	hs.usedCPU += v.obj.Spec.CPUs
	hs.usedMem += int64(v.obj.Spec.Memory)
	if v.group != "" {
		hs.spread[v.group]++
	}
	t := hs.tenants[v.obj.Metadata.Tenant]
	if t == nil {
		t = &tenantOnHost{vms: map[*vmState]struct{}{}, labels: map[string]int{}, anti: map[*vmState]struct{}{}}
		hs.tenants[v.obj.Metadata.Tenant] = t
	}
	t.vms[v] = struct{}{}
	for k, val := range v.obj.Metadata.Labels {
		t.labels[k+"="+val]++
	}
	if len(v.obj.Spec.AntiAffinity) > 0 {
		t.anti[v] = struct{}{}
	}
}

// unplace takes v's counts away from where it was counted.
func (c *cluster) unplace(v *vmState) {
	delete(c.pending, v.key)
	delete(c.unmarked, v.key)
	if v.host == "" || v.obj == nil {
		return
	}
	tenant := v.obj.Metadata.Tenant
	if len(v.obj.Spec.AntiAffinity) > 0 {
		if c.antiTenants[tenant]--; c.antiTenants[tenant] == 0 {
			delete(c.antiTenants, tenant)
		}
	}
	if byLabel := c.placed[tenant]; byLabel != nil {
		for k, val := range v.obj.Metadata.Labels {
			if set := byLabel[k+"="+val]; set != nil {
				delete(set, v)
				if len(set) == 0 {
					delete(byLabel, k+"="+val)
				}
			}
		}
		if len(byLabel) == 0 {
			delete(c.placed, tenant)
		}
	}
	hs := c.hosts[v.host]
	v.host = ""
	if hs == nil {
		return
	}
	if _, ok := hs.vms[v]; !ok {
		return
	}
	delete(hs.vms, v)
	hs.usedCPU -= v.obj.Spec.CPUs
	hs.usedMem -= int64(v.obj.Spec.Memory)
	if v.group != "" {
		if hs.spread[v.group]--; hs.spread[v.group] == 0 {
			delete(hs.spread, v.group)
		}
	}
	t := hs.tenants[tenant]
	delete(t.vms, v)
	delete(t.anti, v)
	for k, val := range v.obj.Metadata.Labels {
		if t.labels[k+"="+val]--; t.labels[k+"="+val] == 0 {
			delete(t.labels, k+"="+val)
		}
	}
	if len(t.vms) == 0 {
		delete(hs.tenants, tenant)
	}
}

// anyMatch reports whether a VM of tenant placed on hs (other than the
// VM with uid skip) matches sel.
func (hs *hostState) anyMatch(tenant string, sel api.LabelSelector, skip string) bool {
	t := hs.tenants[tenant]
	if t == nil {
		return false
	}
	// A label no VM here carries rules the selector out; one that is the
	// selector's only term, carried by a VM that is not skip, decides it.
	for k, val := range sel {
		if t.labels[k+"="+val] == 0 {
			return false
		}
	}
	for v := range t.vms {
		if v.obj.Metadata.UID != skip && sel.Matches(v.obj.Metadata.Labels) {
			return true
		}
	}
	return false
}

// placedAnywhere reports whether some placed VM of tenant matches sel.
func (c *cluster) placedAnywhere(tenant string, sel api.LabelSelector) bool {
	byLabel := c.placed[tenant]
	if byLabel == nil {
		return false
	}
	// Look through the VMs carrying the selector's rarest label.
	var fewest map[*vmState]struct{}
	for k, val := range sel {
		set := byLabel[k+"="+val]
		if len(set) == 0 {
			return false
		}
		if fewest == nil || len(set) < len(fewest) {
			fewest = set
		}
	}
	if fewest == nil {
		// An empty selector (validation refuses it) matches any VM.
		for _, set := range byLabel {
			return len(set) > 0
		}
		return false
	}
	for v := range fewest {
		if sel.Matches(v.obj.Metadata.Labels) {
			return true
		}
	}
	return false
}

// free is what is left on the host for scheduling.
func (hs *hostState) free() (cpu float64, mem int64) {
	return hs.capCPU - float64(hs.usedCPU), hs.capMem - hs.usedMem
}
