package controllers

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// world is the ground truth a random test keeps beside a cluster: the
// objects as cached, and the bindings assumed.
type world struct {
	hosts   map[string]*api.Host
	vms     map[string]*api.VirtualMachine
	assumed map[string]assumption
	volumes map[string]*api.Volume
}

type assumption struct{ uid, host string }

func (w *world) volume(tenant, name string) (*api.Volume, bool) {
	v, ok := w.volumes[tenant+"/"+name]
	return v, ok
}

// effectiveHost is where a VM counts, as the snapshot scheduler counted
// it: its spec.host, else a binding assumed for this very VM.
func (w *world) effectiveHost(key string, vm *api.VirtualMachine) string {
	if vm.Spec.Host != "" {
		return vm.Spec.Host
	}
	if a, ok := w.assumed[key]; ok && a.uid == vm.Metadata.UID {
		return a.host
	}
	return ""
}

// fromScratch builds a cluster from the world in one go.
func (w *world) fromScratch() *cluster {
	c := newCluster()
	for name, h := range w.hosts {
		c.setHost(name, h)
	}
	for key, vm := range w.vms {
		c.setVM(key, vm)
	}
	for key, a := range w.assumed {
		if vm := w.vms[key]; vm != nil && vm.Spec.Host == "" && vm.Metadata.UID == a.uid {
			c.assume(key, a.host)
		}
	}
	return c
}

// snapshot is the placement the snapshot scheduler would have built.
func (w *world) snapshot() *refPlacement {
	p := &refPlacement{onHost: map[string][]*api.VirtualMachine{}, volume: w.volume}
	names := make([]string, 0, len(w.hosts))
	for n := range w.hosts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p.hosts = append(p.hosts, w.hosts[n])
	}
	keys := make([]string, 0, len(w.vms))
	for k := range w.vms {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vm := w.vms[k]
		if vm.Metadata.DeletionTimestamp != nil {
			continue
		}
		if h := w.effectiveHost(k, vm); h != "" {
			p.onHost[h] = append(p.onHost[h], vm)
		}
	}
	return p
}

// dump writes everything a cluster counts, in a stable order, so two
// clusters can be compared as text.
func (c *cluster) dump() string {
	var b strings.Builder
	keysOf := func(set map[*vmState]struct{}) string {
		var ks []string
		for v := range set {
			ks = append(ks, v.key)
		}
		sort.Strings(ks)
		return strings.Join(ks, ",")
	}
	fmt.Fprintf(&b, "names %v\n", c.names)
	for _, n := range c.names {
		hs := c.hosts[n]
		fmt.Fprintf(&b, "host %s cap %g/%d used %d/%d vms [%s] spread %v\n", n, hs.capCPU, hs.capMem, hs.usedCPU, hs.usedMem, keysOf(hs.vms), hs.spread)
		var ts []string
		for t := range hs.tenants {
			ts = append(ts, t)
		}
		sort.Strings(ts)
		for _, t := range ts {
			th := hs.tenants[t]
			fmt.Fprintf(&b, "  tenant %s vms [%s] labels %v anti [%s]\n", t, keysOf(th.vms), th.labels, keysOf(th.anti))
		}
	}
	var vks []string
	for k := range c.vms {
		vks = append(vks, k)
	}
	sort.Strings(vks)
	for _, k := range vks {
		v := c.vms[k]
		fmt.Fprintf(&b, "vm %s host %q assumed %q group %q\n", k, v.host, v.assumed, v.group)
	}
	for _, set := range []map[string]*vmState{c.pending, c.unmarked} {
		var ks []string
		for k := range set {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		fmt.Fprintf(&b, "set %v\n", ks)
	}
	var tenants []string
	for t := range c.placed {
		tenants = append(tenants, t)
	}
	sort.Strings(tenants)
	for _, t := range tenants {
		var labels []string
		for l := range c.placed[t] {
			labels = append(labels, l)
		}
		sort.Strings(labels)
		for _, l := range labels {
			fmt.Fprintf(&b, "placed %s %s [%s]\n", t, l, keysOf(c.placed[t][l]))
		}
	}
	return b.String()
}

// TestClusterAgreesWithSnapshot applies random changes (hosts come, go
// and change; VMs are created, bound, relabelled, resized, deleted,
// re-created under the same name; bindings are assumed and forgotten) to
// a cluster one at a time, and after each checks that
//
//   - the cluster equals one counted from scratch from the same objects,
//     so incremental accounting never drifts; and
//   - for every pending VM and some new ones, its decision (the host,
//     or the "0/N hosts: …" summary) is the one the snapshot scheduler
//     makes walking every host and VM.
func TestClusterAgreesWithSnapshot(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { randomCluster(t, seed) })
	}
}

func randomCluster(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 42))
	const gi = api.Bytes(1 << 30)
	w := &world{hosts: map[string]*api.Host{}, vms: map[string]*api.VirtualMachine{}, assumed: map[string]assumption{}, volumes: map[string]*api.Volume{}}
	c := newCluster()
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	hostNames := []string{"h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8"}
	tenants := []string{"a", "b"}
	labelsOf := func() map[string]string {
		l := map[string]string{}
		if rng.IntN(3) > 0 {
			l["app"] = pick("db", "web")
		}
		if rng.IntN(3) == 0 {
			l["tier"] = pick("x", "y")
		}
		if rng.IntN(5) == 0 {
			l[VMSetLabel] = pick("s1", "s2")
		}
		return l
	}
	selectors := []api.LabelSelector{{"app": "db"}, {"app": "web"}, {"app": "db", "tier": "x"}, {"tier": "y"}}
	newHost := func(name string) *api.Host {
		h := &api.Host{Metadata: api.ObjectMeta{Name: name, Labels: map[string]string{"disk": pick("ssd", "hdd")}},
			Status: api.HostStatus{CPUs: 1 + rng.IntN(8), Memory: api.Bytes(1+rng.IntN(16)) * gi}}
		h.Status.Phase = pick(api.HostReady, api.HostReady, api.HostReady, api.HostNotReady)
		h.Spec.Unschedulable = rng.IntN(8) == 0
		h.Spec.CPUOvercommit = []float64{0, 1, 1.5, 1.1, 3}[rng.IntN(5)]
		h.Spec.ReservedCPUs = rng.IntN(2)
		h.Spec.ReservedMemory = api.Bytes(rng.IntN(3)) * 256 << 20
		return h
	}
	uidN := 0
	newVM := func(tenant, name string) *api.VirtualMachine {
		uidN++
		ts := time.Unix(int64(uidN), 0)
		vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"}, Metadata: api.ObjectMeta{Name: name, Tenant: tenant, UID: fmt.Sprint("uid", uidN), Labels: labelsOf(), CreationTimestamp: &ts},
			Spec: api.VirtualMachineSpec{CPUs: 1 + rng.IntN(4), Memory: api.Bytes(1+rng.IntN(8)) * 256 << 20}}
		if rng.IntN(4) == 0 {
			vm.Spec.AntiAffinity = []api.LabelSelector{selectors[rng.IntN(len(selectors))]}
		}
		if rng.IntN(5) == 0 {
			vm.Spec.Affinity = []api.LabelSelector{selectors[rng.IntN(len(selectors))]}
		}
		if rng.IntN(6) == 0 {
			vm.Spec.NodeSelector = api.LabelSelector{"disk": "ssd"}
		}
		if rng.IntN(8) == 0 {
			vm.Spec.Disks = []api.VMDisk{{Volume: pick("v1", "v2", "v3")}}
		}
		return vm
	}
	for _, name := range []string{"v1", "v2", "v3"} {
		for _, tn := range tenants {
			vol := &api.Volume{Metadata: api.ObjectMeta{Name: name, Tenant: tn}}
			vol.Spec.Host = pick("", "h1", "h2", "h9")
			w.volumes[tn+"/"+name] = vol
		}
	}
	// setVM changes the world as an informer event would: the scheduler
	// forgets an assumption once the cache shows a host or another VM.
	setVM := func(key string, vm *api.VirtualMachine) {
		if vm == nil {
			delete(w.vms, key)
			delete(w.assumed, key)
		} else {
			w.vms[key] = vm
			if a, ok := w.assumed[key]; ok && (vm.Spec.Host != "" || vm.Metadata.UID != a.uid) {
				delete(w.assumed, key)
			}
		}
		c.setVM(key, vm)
	}
	anyVM := func() (string, *api.VirtualMachine) {
		keys := make([]string, 0, len(w.vms))
		for k := range w.vms {
			keys = append(keys, k)
		}
		if len(keys) == 0 {
			return "", nil
		}
		sort.Strings(keys)
		k := keys[rng.IntN(len(keys))]
		return k, w.vms[k]
	}
	decisions := 0
	for step := range 1500 {
		op := rng.IntN(100)
		switch {
		case op < 10: // a host joins or changes
			name := pick(hostNames...)
			h := newHost(name)
			w.hosts[name] = h
			c.setHost(name, h)
		case op < 13: // a host goes
			name := pick(hostNames...)
			delete(w.hosts, name)
			c.setHost(name, nil)
		case op < 40: // a VM is created, placed or not
			tn := pick(tenants...)
			name := fmt.Sprintf("vm%d", rng.IntN(60))
			key := tn + "/" + name
			if w.vms[key] != nil && rng.IntN(2) == 0 {
				break
			}
			// Otherwise made again under the same name: a new uid.
			vm := newVM(tn, name)
			if rng.IntN(2) == 0 {
				vm.Spec.Host = pick(append(hostNames, "h9")...)
				vm.Status.Phase = pick("", api.VMPending, api.VMRunning)
			}
			setVM(key, vm)
		case op < 55: // a VM changes
			key, old := anyVM()
			if old == nil {
				break
			}
			vm := api.DeepCopy(old).(*api.VirtualMachine)
			switch rng.IntN(6) {
			case 0:
				vm.Metadata.Labels = labelsOf()
			case 1:
				vm.Spec.CPUs, vm.Spec.Memory = 1+rng.IntN(4), api.Bytes(1+rng.IntN(8))*256<<20
			case 2:
				if vm.Spec.Host == "" {
					vm.Spec.Host = pick(hostNames...) // bound
				}
			case 3:
				vm.Spec.AntiAffinity = []api.LabelSelector{selectors[rng.IntN(len(selectors))]}
			case 4:
				vm.Status.Phase = pick("", api.VMPending, api.VMScheduled, api.VMRunning)
			case 5:
				now := time.Now()
				vm.Metadata.DeletionTimestamp = &now
			}
			setVM(key, vm)
		case op < 65: // a VM goes
			if key, vm := anyVM(); vm != nil {
				setVM(key, nil)
			}
		case op < 85: // a binding is assumed
			key, vm := anyVM()
			if vm == nil || vm.Spec.Host != "" || vm.Metadata.DeletionTimestamp != nil {
				break
			}
			if _, ok := w.assumed[key]; ok {
				break
			}
			host := pick(append(hostNames, "h9")...)
			w.assumed[key] = assumption{vm.Metadata.UID, host}
			c.assume(key, host)
		default: // a binding failed: forgotten
			for key := range w.assumed {
				delete(w.assumed, key)
				c.assume(key, "")
				break
			}
		}

		if got, want := c.dump(), w.fromScratch().dump(); got != want {
			t.Fatalf("step %d: the cluster drifted from a count from scratch:\n--- incremental\n%s--- from scratch\n%s", step, got, want)
		}
		snap := w.snapshot()
		var candidates []*api.VirtualMachine
		for key, vm := range w.vms {
			if vm.Metadata.DeletionTimestamp == nil && w.effectiveHost(key, vm) == "" {
				candidates = append(candidates, vm)
			}
		}
		for range 3 {
			candidates = append(candidates, newVM(pick(tenants...), "new"))
		}
		slices.SortFunc(candidates, func(a, b *api.VirtualMachine) int { return strings.Compare(a.Metadata.UID, b.Metadata.UID) })
		for _, vm := range candidates {
			gotHost, gotWhy := c.schedule(vm, w.volume)
			wantHost, wantWhy := refSchedule(vm, snap)
			if gotHost != wantHost || gotWhy != wantWhy {
				t.Fatalf("step %d: VM %s/%s (%s): cluster decides %q %q, the snapshot %q %q\n%s", step, vm.Metadata.Tenant, vm.Metadata.Name,
					vm.Metadata.UID, gotHost, gotWhy, wantHost, wantWhy, c.dump())
			}
			decisions++
		}
	}
	if decisions < 3000 {
		t.Fatalf("only %d decisions compared", decisions)
	}
}

// BenchmarkSchedule is one decision among 1,000 hosts holding 10,000
// VMs: what the scheduler pays per VM, whatever the number of VMs.
func BenchmarkSchedule(b *testing.B) {
	for _, size := range []struct{ hosts, vms int }{{100, 1000}, {1000, 10000}} {
		b.Run(fmt.Sprintf("%dhosts-%dvms", size.hosts, size.vms), func(b *testing.B) {
			c := newCluster()
			for i := range size.hosts {
				h := &api.Host{Metadata: api.ObjectMeta{Name: fmt.Sprintf("h%04d", i)}, Status: api.HostStatus{CPUs: 64, Memory: 256 << 30}}
				h.Status.Phase = api.HostReady
				c.setHost(h.Metadata.Name, h)
			}
			for i := range size.vms {
				vm := &api.VirtualMachine{Metadata: api.ObjectMeta{Name: fmt.Sprint("vm", i), Tenant: "t", UID: fmt.Sprint(i), Labels: map[string]string{VMSetLabel: fmt.Sprint("s", i%50)}},
					Spec: api.VirtualMachineSpec{CPUs: 1, Memory: 64 << 20, Host: fmt.Sprintf("h%04d", i%size.hosts)}}
				c.setVM("t/"+vm.Metadata.Name, vm)
			}
			vm := &api.VirtualMachine{Metadata: api.ObjectMeta{Name: "new", Tenant: "t", UID: "new", Labels: map[string]string{VMSetLabel: "s1"}},
				Spec: api.VirtualMachineSpec{CPUs: 1, Memory: 64 << 20}}
			b.ResetTimer()
			for range b.N {
				if h, why := c.schedule(vm, nil); h == "" {
					b.Fatal(why)
				}
			}
		})
	}
}
