package controllers

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/reconcile"
)

// VMSetLabel is the label a VirtualMachineSet puts on the VMs it makes,
// with the set's name as its value. The set finds its VMs by it, and the
// scheduler spreads VMs carrying the same value over hosts.
const VMSetLabel = "hearth.dev/vmset"

// ConditionScheduled is the VM condition that says where it was placed.
// The API server sets it in the write that binds the VM (see
// api.SpecFollower); the scheduler sets it False with the reason a VM
// cannot be placed.
const ConditionScheduled = api.ConditionScheduled

// Scheduler places VirtualMachines that name no host (spec.host) on a
// Ready host with room for them, and keeps every Host's
// status.allocatedCPUs and allocatedMemory equal to what its VMs ask for.
//
// It decides one VM at a time (under decide), so two decisions never both
// count the same free memory, but writes bindings from several workers at
// once, so a slow write does not hold up the VMs behind it. A binding it
// has decided but its cache has not seen yet is remembered ("assumed") and
// counted, so VMs created together do not all land on the host that
// looked emptiest.
type Scheduler struct {
	Client   *client.Client
	Recorder *client.Recorder
	// Resync is how often every pending VM is tried again even without a
	// change (default 30s).
	Resync time.Duration
	Now    func() time.Time

	hosts *client.Informer
	vms   *client.Informer
	// volumes are read for where local volumes live: a VM goes where its
	// bound volumes are.
	volumes *client.Informer
	ctl     *reconcile.Controller // VM keys
	alloc   *reconcile.Controller // host names

	// decide is held from reading the snapshot to recording the
	// assumption.
	decide sync.Mutex
	mu     sync.Mutex
	// assumed are bindings made but not yet in the VM cache, by VM key.
	assumed map[string]assumption
	// seenVMs and seenHosts hold the scheduling-relevant fingerprint of
	// every cached VM and host, so that a heartbeat does not make every
	// pending VM be tried again.
	seenVMs   map[string]vmSeen
	seenHosts map[string]string
	// seenVolumeHosts is the host of every cached volume, so that only a
	// binding, not a status report, tries the pending VMs again.
	seenVolumeHosts map[string]string
	// warned is the last FailedScheduling event per VM key.
	warned map[string]warning
	// synced is set once both caches are filled; before, the first
	// resync is about to try every pending VM anyway.
	synced atomic.Bool
}

type assumption struct {
	uid, host string
}

type vmSeen struct {
	host, fingerprint string
}

type warning struct {
	msg string
	at  time.Time
}

// bindWorkers is how many VMs are reconciled at once (decisions are still
// made one at a time).
const bindWorkers = 4

// warnEvery is how often an unchanged FailedScheduling event is recorded
// again (the recorder then bumps its count) while a VM stays pending.
const warnEvery = 5 * time.Minute

// Run runs the scheduler until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Resync == 0 {
		s.Resync = 30 * time.Second
	}
	s.assumed = map[string]assumption{}
	s.seenVMs = map[string]vmSeen{}
	s.seenHosts = map[string]string{}
	s.seenVolumeHosts = map[string]string{}
	s.warned = map[string]warning{}
	s.hosts = client.NewInformer(s.Client, "Host", "", client.ListOptions{})
	s.vms = client.NewInformer(s.Client, "VirtualMachine", "", client.ListOptions{AllTenants: true})
	s.volumes = client.NewInformer(s.Client, "Volume", "", client.ListOptions{AllTenants: true})
	s.ctl = &reconcile.Controller{Name: "scheduler", Reconciler: s, Workers: bindWorkers, Resync: s.Resync, List: s.pendingKeys}
	s.alloc = &reconcile.Controller{Name: "host-allocation", Reconciler: reconcile.ReconcilerFunc(s.reconcileAllocation), Workers: 1,
		Resync: time.Minute, List: func(context.Context) ([]string, error) { return s.hosts.Keys(), nil }}
	s.hosts.OnChange(s.hostChanged)
	s.vms.OnUpdate(s.vmChanged)
	s.volumes.OnChange(s.volumeChanged)
	go s.hosts.Run(ctx)
	go s.vms.Run(ctx)
	go s.volumes.Run(ctx)
	if s.hosts.WaitSynced(ctx) != nil || s.vms.WaitSynced(ctx) != nil || s.volumes.WaitSynced(ctx) != nil {
		return nil
	}
	s.synced.Store(true)
	errc := make(chan error, 1)
	go func() { errc <- s.alloc.Run(ctx) }()
	err := s.ctl.Run(ctx)
	if aerr := <-errc; err == nil {
		err = aerr
	}
	return err
}

// hostChanged recounts the host's allocation and, when something the
// scheduler looks at changed (phase, cordon, labels, capacity), tries the
// pending VMs again.
func (s *Scheduler) hostChanged(key string, obj api.Object) {
	s.alloc.Enqueue(key)
	fp := ""
	if obj != nil {
		h := obj.(*api.Host)
		fp = fmt.Sprint(h.Status.Phase, h.Spec.Unschedulable, api.LabelSelector(h.Metadata.Labels).String(),
			h.Status.CPUs, int64(h.Status.Memory), h.Spec.CPUOvercommit, h.Spec.MemoryOvercommit, h.Spec.ReservedCPUs, int64(h.Spec.ReservedMemory))
	}
	s.mu.Lock()
	prev, seen := s.seenHosts[key]
	if obj == nil {
		delete(s.seenHosts, key)
	} else {
		s.seenHosts[key] = fp
	}
	s.mu.Unlock()
	if !seen || prev != fp {
		s.enqueuePending()
	}
}

// vmChanged reconciles the VM itself, recounts the hosts it was and is on,
// and, when a placed VM came, went or changed in a way that frees or
// takes room or changes (anti-)affinity, tries the pending VMs again.
func (s *Scheduler) vmChanged(ch client.Change) {
	key, obj := ch.Key, ch.New
	enqueueOwn(s.ctl, "")(ch)
	var cur vmSeen
	if obj != nil {
		vm := obj.(*api.VirtualMachine)
		cur.host = vm.Spec.Host
		cur.fingerprint = fmt.Sprint(vm.Spec.Host, vm.Metadata.DeletionTimestamp != nil, vm.Spec.CPUs, int64(vm.Spec.Memory),
			api.LabelSelector(vm.Metadata.Labels).String(), vm.Spec.AntiAffinity)
	}
	s.mu.Lock()
	prev := s.seenVMs[key]
	if obj == nil {
		delete(s.seenVMs, key)
		delete(s.warned, key)
	} else {
		s.seenVMs[key] = cur
	}
	if a, ok := s.assumed[key]; ok && (obj == nil || cur.host != "" || obj.GetMetadata().UID != a.uid) {
		// The cache has caught up with the binding (or the VM is gone).
		delete(s.assumed, key)
	}
	s.mu.Unlock()
	if prev.fingerprint == cur.fingerprint {
		return
	}
	for _, h := range []string{prev.host, cur.host} {
		if h != "" {
			s.alloc.Enqueue(h)
		}
	}
	if prev.host != "" || cur.host != "" {
		s.enqueuePending()
	}
}

// volumeChanged tries the pending VMs again when a volume was bound to a
// host or went away: either may decide where a VM that uses it can go.
func (s *Scheduler) volumeChanged(key string, obj api.Object) {
	host, exists := "", obj != nil
	if exists {
		host = obj.(*api.Volume).Spec.Host
	}
	s.mu.Lock()
	prev, seen := s.seenVolumeHosts[key]
	if exists {
		s.seenVolumeHosts[key] = host
	} else {
		delete(s.seenVolumeHosts, key)
	}
	s.mu.Unlock()
	if prev != host || seen != exists {
		s.enqueuePending()
	}
}

// enqueuePending queues every VM waiting for a host, oldest first.
func (s *Scheduler) enqueuePending() {
	if !s.synced.Load() {
		return
	}
	keys, _ := s.pendingKeys(context.Background())
	for _, k := range keys {
		s.ctl.Enqueue(k)
	}
}

// pendingKeys lists the VMs the scheduler still has work on: those with
// no host, and placed ones whose status does not say so yet.
func (s *Scheduler) pendingKeys(context.Context) ([]string, error) {
	var vms []*api.VirtualMachine
	for _, o := range s.vms.List() {
		vm := o.(*api.VirtualMachine)
		if vm.Metadata.DeletionTimestamp == nil && (vm.Spec.Host == "" || vm.Status.Phase == "" || vm.Status.Phase == api.VMPending) {
			vms = append(vms, vm)
		}
	}
	sort.SliceStable(vms, func(i, j int) bool {
		a, b := vms[i].Metadata.CreationTimestamp, vms[j].Metadata.CreationTimestamp
		return a != nil && b != nil && a.Before(*b)
	})
	keys := make([]string, len(vms))
	for i, vm := range vms {
		keys[i] = client.Key(vm)
	}
	return keys, nil
}

// Reconcile places one VM, or records why it cannot be placed.
func (s *Scheduler) Reconcile(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := s.vms.Get(key)
	if !ok {
		return reconcile.Result{}, nil
	}
	vm := obj.(*api.VirtualMachine)
	if vm.Metadata.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	if vm.Spec.Host != "" {
		return reconcile.Result{}, s.markScheduled(ctx, vm)
	}
	s.mu.Lock()
	a, bound := s.assumed[key]
	s.mu.Unlock()
	if bound && a.uid == vm.Metadata.UID {
		// Bound already; the cache will bring the VM with its host.
		return reconcile.Result{}, nil
	}
	s.decide.Lock()
	host, why := schedule(vm, s.snapshot())
	if host != "" {
		// Assume before binding: the cache may bring the bound VM
		// (which ends the assumption) before Patch returns, and the
		// next decision must count it.
		s.mu.Lock()
		s.assumed[key] = assumption{uid: vm.Metadata.UID, host: host}
		delete(s.warned, key)
		s.mu.Unlock()
	}
	s.decide.Unlock()
	if host == "" {
		return reconcile.Result{}, s.markUnschedulable(ctx, key, vm, why)
	}
	patch := map[string]any{
		"metadata": map[string]any{"resourceVersion": vm.Metadata.ResourceVersion},
		"spec":     map[string]any{"host": host},
	}
	out, err := s.Client.Patch(ctx, "VirtualMachine", vm.Metadata.Tenant, vm.Metadata.Name, patch, false)
	if err != nil {
		s.mu.Lock()
		delete(s.assumed, key)
		s.mu.Unlock()
	}
	switch {
	case api.IsConflict(err):
		// The VM changed since the cache saw it: decide again on the
		// newer version, which the cache is about to bring.
		return reconcile.Result{RequeueAfter: 200 * time.Millisecond}, nil
	case api.IsNotFound(err):
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("binding %s to host %s: %w", key, host, err)
	}
	s.alloc.Enqueue(host)
	s.Recorder.Eventf(ctx, out, api.EventNormal, "Scheduled", "placed on %s", host)
	// The API server made the VM Scheduled in the binding write itself.
	return reconcile.Result{}, nil
}

// markScheduled records on a placed VM that it is placed, when the
// binding write did not (objects stored before the API server did it):
// the Scheduled condition always, the phase only until the agent takes
// the phase over.
func (s *Scheduler) markScheduled(ctx context.Context, vm *api.VirtualMachine) error {
	return s.writeVMStatus(ctx, vm, func(vm *api.VirtualMachine, st *api.VirtualMachineStatus) bool {
		return st.SetScheduled(vm.Spec.Host, vm.Metadata.Generation, s.Now().UTC())
	})
}

// markUnschedulable records why no host fits: a condition, phase Pending,
// and a FailedScheduling event (again only when the reason changes or
// warnEvery has passed).
func (s *Scheduler) markUnschedulable(ctx context.Context, key string, vm *api.VirtualMachine, why string) error {
	err := s.writeVMStatus(ctx, vm, func(vm *api.VirtualMachine, st *api.VirtualMachineStatus) bool {
		if vm.Spec.Host != "" {
			return false
		}
		changed := st.Phase != api.VMPending
		st.Phase = api.VMPending
		c := api.Condition{Type: ConditionScheduled, Status: api.ConditionFalse, Reason: api.ReasonUnschedulable,
			Message: why, ObservedGeneration: vm.Metadata.Generation}
		return st.SetCondition(c, s.Now().UTC()) || changed
	})
	now := s.Now()
	s.mu.Lock()
	w, ok := s.warned[key]
	warn := !ok || w.msg != why || now.Sub(w.at) >= warnEvery
	if warn {
		s.warned[key] = warning{msg: why, at: now}
	}
	s.mu.Unlock()
	if warn {
		s.Recorder.Eventf(ctx, vm, api.EventWarning, "FailedScheduling", "%s", why)
	}
	return err
}

// writeVMStatus applies change to the VM's phase and conditions and
// writes them if it reports a change (client.WriteStatus: conditional on
// the resourceVersion, because the VM's agent writes status too, and on a
// conflict change is applied again to the VM as it is then).
func (s *Scheduler) writeVMStatus(ctx context.Context, vm *api.VirtualMachine, change func(*api.VirtualMachine, *api.VirtualMachineStatus) bool) error {
	_, _, err := client.WriteStatus(ctx, s.Client, s.vms, vm, func(vm *api.VirtualMachine) { change(vm, &vm.Status) })
	if err != nil && !api.IsNotFound(err) {
		return fmt.Errorf("writing the status of VirtualMachine %s/%s: %w", vm.Metadata.Tenant, vm.Metadata.Name, err)
	}
	return nil
}

// reconcileAllocation writes what a host's VMs ask for into its status.
// It merge-patches only the two allocation fields (api.HostAllocation),
// without a resourceVersion, so it never overwrites what the agent
// reports.
func (s *Scheduler) reconcileAllocation(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := s.hosts.Get(key)
	if !ok {
		return reconcile.Result{}, nil
	}
	h := obj.(*api.Host)
	var cpus int
	var mem api.Bytes
	for _, vm := range s.snapshot().onHost[key] {
		cpus += vm.Spec.CPUs
		mem += vm.Spec.Memory
	}
	if h.Status.AllocatedCPUs == cpus && h.Status.AllocatedMemory == mem {
		return reconcile.Result{}, nil
	}
	if _, err := s.Client.PatchStatus(ctx, "Host", "", key, api.HostAllocation{AllocatedCPUs: cpus, AllocatedMemory: mem}); err != nil && !api.IsNotFound(err) {
		return reconcile.Result{}, fmt.Errorf("writing the allocation of host %s: %w", key, err)
	}
	return reconcile.Result{}, nil
}

// placement is the cluster as the scheduler sees it at one moment.
type placement struct {
	// hosts sorted by name.
	hosts []*api.Host
	// onHost holds the VMs placed on each host, not being deleted.
	onHost map[string][]*api.VirtualMachine
	// volume finds a Volume by tenant and name; nil finds none.
	volume func(tenant, name string) (*api.Volume, bool)
}

// snapshot builds the placement from the caches and the assumed bindings.
func (s *Scheduler) snapshot() *placement {
	p := &placement{onHost: map[string][]*api.VirtualMachine{}, volume: func(tenant, name string) (*api.Volume, bool) {
		o, ok := s.volumes.Get(tenant + "/" + name)
		if !ok {
			return nil, false
		}
		return o.(*api.Volume), true
	}}
	for _, o := range s.hosts.List() {
		p.hosts = append(p.hosts, o.(*api.Host))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.vms.List() {
		vm := o.(*api.VirtualMachine)
		if vm.Metadata.DeletionTimestamp != nil {
			continue
		}
		host := vm.Spec.Host
		if a, ok := s.assumed[client.Key(vm)]; ok && host == "" && a.uid == vm.Metadata.UID {
			host = a.host
		}
		if host != "" {
			p.onHost[host] = append(p.onHost[host], vm)
		}
	}
	return p
}

// Why a host cannot take a VM, in the order the summary lists them when
// counts are equal. A host is counted under the first check it fails;
// the checks run volumes, NotReady, cordoned, nodeSelector, affinity,
// anti-affinity, then memory and CPU, so "largest free" is measured only
// over hosts the VM could otherwise use.
const (
	failVolume = iota
	failNotReady
	failCordoned
	failMemory
	failCPU
	failSelector
	failAffinity
	failAntiAffinity
	numFailures
)

// schedule picks the host for vm: among the hosts it fits, the one with
// the fewest VMs of its spread group, then the most free memory, then the
// first by name. With none it returns "" and a summary such as
// "0/3 hosts: 2 lack memory (need 4Gi, largest free 2Gi), 1 NotReady".
func schedule(vm *api.VirtualMachine, p *placement) (string, string) {
	volumeHost, why := volumesHost(vm, p)
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
		case !affinitySatisfied(vm, placed, p):
			reason = failAffinity
		case antiAffinityViolated(vm, placed):
			reason = failAntiAffinity
		}
		if reason >= 0 {
			fails[reason]++
			continue
		}
		freeCPU, freeMem := free(h, spec, placed)
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
		fits = append(fits, fit{name: h.Metadata.Name, spread: spreadCount(vm, placed), freeMem: freeMem - int64(vm.Spec.Memory)})
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
func volumesHost(vm *api.VirtualMachine, p *placement) (host, why string) {
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
func free(h *api.Host, spec api.HostSpec, placed []*api.VirtualMachine) (cpu float64, mem int64) {
	cpu, m := spec.Allocatable(&h.Status)
	mem = int64(m)
	for _, vm := range placed {
		cpu -= float64(vm.Spec.CPUs)
		mem -= int64(vm.Spec.Memory)
	}
	return cpu, mem
}

// affinitySatisfied reports whether, for every affinity selector, the host
// runs a VM of the VM's tenant that matches it. A selector no placed VM of
// the tenant matches but the VM itself does is satisfied anywhere, so the
// first VM of a group that wants to be together can be placed.
func affinitySatisfied(vm *api.VirtualMachine, placed []*api.VirtualMachine, p *placement) bool {
	for _, sel := range vm.Spec.Affinity {
		if !anyMatch(vm.Metadata.Tenant, sel, placed) && !(sel.Matches(vm.Metadata.Labels) && !placedAnywhere(vm.Metadata.Tenant, sel, p)) {
			return false
		}
	}
	return true
}

func placedAnywhere(tenant string, sel api.LabelSelector, p *placement) bool {
	for _, placed := range p.onHost {
		if anyMatch(tenant, sel, placed) {
			return true
		}
	}
	return false
}

func anyMatch(tenant string, sel api.LabelSelector, vms []*api.VirtualMachine) bool {
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
func antiAffinityViolated(vm *api.VirtualMachine, placed []*api.VirtualMachine) bool {
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

// spreadGroup is what VMs that should spread over hosts share: the set
// that made them, else their exact labels; "" for VMs without labels.
func spreadGroup(vm *api.VirtualMachine) string {
	if set, ok := vm.Metadata.Labels[VMSetLabel]; ok {
		return vm.Metadata.Tenant + "\x00set\x00" + set
	}
	if len(vm.Metadata.Labels) == 0 {
		return ""
	}
	return vm.Metadata.Tenant + "\x00labels\x00" + api.LabelSelector(vm.Metadata.Labels).String()
}

func spreadCount(vm *api.VirtualMachine, placed []*api.VirtualMachine) int {
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
