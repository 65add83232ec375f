package controllers

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
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
// It keeps the cluster as a cluster (schedstate.go): every host's room
// and what is placed on it, changed one informer event at a time, so a
// decision costs the same however many VMs there are (it still looks at
// every host, which keeps the "0/N hosts: …" summary exact). Decisions
// are made one at a time (under mu), so two never both count the same
// free memory, but bindings are written from several workers at once, so
// a slow write does not hold up the VMs behind it. A binding decided but
// not yet in the cache is counted as assumed, so VMs created together do
// not all land on the host that looked emptiest.
//
// VMs no host can take wait; they are tried again when something that
// could make room or satisfy them changes (a host, a VM leaving or
// shrinking, a volume's binding, a placement that affinity asks for), a
// burst of such changes making one pass.
type Scheduler struct {
	Client   *client.Client
	Recorder *client.Recorder
	// Resync is how often every pending VM is tried again even without a
	// change (default 30s).
	Resync time.Duration
	Now    func() time.Time
	// Informers, when set, are shared with the term's other controllers.
	Informers *Informers
	// Metrics, when set, records what the bindings wait on.
	Metrics *BindingMetrics

	hosts *client.Informer
	vms   *client.Informer
	// volumes are read for where local volumes live: a VM goes where its
	// bound volumes are.
	volumes *client.Informer
	ctl     *reconcile.Controller // VM keys
	alloc   *reconcile.Controller // host names
	// own is how a VM's own changes reach ctl (enqueueOwn).
	own func(client.Change)

	// mu guards everything below; a decision holds it from reading the
	// cluster to recording the binding it assumes.
	mu    sync.Mutex
	state *cluster
	// seenHosts holds the scheduling-relevant fingerprint of every cached
	// host, so that a heartbeat does not make the waiting VMs be tried
	// again.
	seenHosts map[string]string
	// seenVolumeHosts is the host of every cached volume, so that only a
	// binding, not a status report, tries the waiting VMs again.
	seenVolumeHosts map[string]string
	// waiting are the VMs last found unschedulable; retry says they
	// should all be tried again (retryAffinity: those with affinity
	// rules in these tenants).
	waiting       map[string]bool
	retry         bool
	retryAffinity map[string]bool
	kick          chan struct{}
	// warned is the last FailedScheduling event per VM key, and marked
	// when its Unschedulable condition was last written.
	warned map[string]warning
	marked map[string]time.Time
	// synced is set once the caches are filled; before, the first
	// resync is about to try every pending VM anyway.
	synced atomic.Bool
	// bindq takes decided bindings to bindLoop, which writes them in
	// batches.
	bindq chan *pendingBinding
	// bindFailed holds, by VM key, why its binding could not be written,
	// for Reconcile to return (and so back off).
	bindFailed map[string]error
}

// pendingBinding is a decided binding waiting for its batch to be
// written: of the VM with key and uid.
type pendingBinding struct {
	key, uid string
	item     api.BindingItem
	// decided is when the binding was decided (Metrics).
	decided time.Time
}

type warning struct {
	msg string
	at  time.Time
}

// bindWorkers is how many VMs are reconciled at once (decisions are still
// made one at a time, and bindings are written in batches by bindLoop,
// without a worker waiting for them: the workers write status).
const bindWorkers = 16

// maxBindBatch is the most bindings written in one request, and
// bindsInFlight how many such requests are written at once: while they
// are, the next batch gathers, so under load the batches grow. A batch's
// time is mostly waiting (etcd's reads and commit, a core), not the
// server's work: with four in flight the batches were full (230–250 of
// 256 at 300 hosts) and a decided binding waited 0.24–0.65 s for a slot
// while the server used under half its cores; eight halve that wait.
const (
	maxBindBatch  = 256
	bindsInFlight = 8
)

// warnEvery is how often an unchanged FailedScheduling event is recorded
// again (the recorder then bumps its count) while a VM stays pending.
const warnEvery = 5 * time.Minute

// unschedulableRefresh is how soon a waiting VM's "0/N hosts: …" is
// written again when only the counts in it changed. While hosts change
// in a burst (a thousand uncordoned at once), every pass over the waiting
// VMs would otherwise write each one's status, and an event, per pass,
// costing more writes than the bindings. The message is made exact after
// it (the VM is decided again then).
const unschedulableRefresh = 2 * time.Second

// allocDelay gathers a host's allocation changes into one write: a burst
// of bindings to a host is one Host write, not one each.
const allocDelay = 500 * time.Millisecond

// Run runs the scheduler until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Resync == 0 {
		s.Resync = 30 * time.Second
	}
	s.state = newCluster()
	s.seenHosts = map[string]string{}
	s.seenVolumeHosts = map[string]string{}
	s.waiting = map[string]bool{}
	s.retryAffinity = map[string]bool{}
	s.kick = make(chan struct{}, 1)
	s.warned = map[string]warning{}
	s.marked = map[string]time.Time{}
	s.bindq = make(chan *pendingBinding, maxBindBatch*bindsInFlight)
	s.bindFailed = map[string]error{}
	s.hosts = s.Informers.informer(ctx, s.Client, "Host")
	s.vms = s.Informers.informer(ctx, s.Client, "VirtualMachine")
	s.volumes = s.Informers.informer(ctx, s.Client, "Volume")
	s.ctl = &reconcile.Controller{Name: "scheduler", Reconciler: s, Workers: bindWorkers, Resync: s.Resync, List: s.pendingKeys}
	s.own = enqueueOwn(s.ctl, "")
	s.alloc = &reconcile.Controller{Name: "host-allocation", Reconciler: reconcile.ReconcilerFunc(s.reconcileAllocation), Workers: 1,
		Resync: time.Minute, SpreadResync: true, List: func(context.Context) ([]string, error) { return s.hosts.Keys(), nil }}
	s.hosts.OnChangeUntil(ctx, s.hostChanged)
	s.vms.OnUpdateUntil(ctx, s.vmChanged)
	s.volumes.OnChangeUntil(ctx, s.volumeChanged)
	if s.hosts.WaitSynced(ctx) != nil || s.vms.WaitSynced(ctx) != nil || s.volumes.WaitSynced(ctx) != nil {
		return nil
	}
	s.synced.Store(true)
	go s.retryLoop(ctx)
	go s.bindLoop(ctx)
	errc := make(chan error, 1)
	go func() { errc <- s.alloc.Run(ctx) }()
	err := s.ctl.Run(ctx)
	if aerr := <-errc; err == nil {
		err = aerr
	}
	return err
}

// hostChanged counts the host's new state and recounts its allocation;
// when something the scheduler looks at changed (phase, cordon, labels,
// capacity), the waiting VMs are tried again.
func (s *Scheduler) hostChanged(key string, obj api.Object) {
	s.alloc.EnqueueAfter(key, allocDelay)
	fp := ""
	var h *api.Host
	if obj != nil {
		h = obj.(*api.Host)
		fp = fmt.Sprint(h.Status.Phase, h.Spec.Unschedulable, api.LabelSelector(h.Metadata.Labels).String(),
			h.Status.CPUs, int64(h.Status.Memory), h.Spec.CPUOvercommit, h.Spec.MemoryOvercommit, h.Spec.ReservedCPUs, int64(h.Spec.ReservedMemory))
	}
	s.mu.Lock()
	s.state.setHost(key, h)
	prev, seen := s.seenHosts[key]
	if obj == nil {
		delete(s.seenHosts, key)
	} else {
		s.seenHosts[key] = fp
	}
	if !seen || prev != fp {
		s.retryLocked("")
	}
	s.mu.Unlock()
}

// vmChanged counts the VM's new state, reconciles the VM itself and
// recounts the hosts it was and is on. A placed VM that went or changed
// in a way that frees room or lifts a rule tries the waiting VMs again;
// one newly placed tries those whose affinity it may satisfy.
//
// The VM is enqueued only once its new state is counted: Reconcile reads
// the scheduler's cluster, not the informer, and a worker may take the
// key the instant it is enqueued. Enqueued before, a VM just created
// could be reconciled while the cluster did not hold it yet, found
// gone, and left unbound until the next resync, up to Resync later
// (TestSchedulerReconcilesWhatItIsTold).
func (s *Scheduler) vmChanged(ch client.Change) {
	key, obj := ch.Key, ch.New
	var vm *api.VirtualMachine
	if obj != nil {
		vm = obj.(*api.VirtualMachine)
	}
	s.mu.Lock()
	var beforeHost string
	var beforeVM *api.VirtualMachine
	if v := s.state.vms[key]; v != nil {
		beforeHost, beforeVM = v.host, v.obj
	}
	s.state.setVM(key, vm)
	afterHost := ""
	if v := s.state.vms[key]; v != nil {
		afterHost = v.host
	}
	if vm == nil {
		s.forgetWaitingLocked(key)
	}
	switch {
	case beforeHost != "" && (afterHost != beforeHost || freesRoom(beforeVM, vm)):
		// Room freed, or a rule or label that kept others away changed.
		s.retryLocked("")
	case afterHost != "" && beforeHost == "":
		s.retryLocked(vm.Metadata.Tenant)
	}
	s.mu.Unlock()
	for _, h := range []string{beforeHost, afterHost} {
		if h != "" {
			s.alloc.EnqueueAfter(h, allocDelay)
		}
	}
	s.own(ch)
}

// freesRoom reports whether a placed VM's change may let another VM in:
// it asks for less, or its labels or anti-affinity rules changed.
func freesRoom(before, after *api.VirtualMachine) bool {
	return after == nil || after.Spec.CPUs < before.Spec.CPUs || after.Spec.Memory < before.Spec.Memory ||
		!maps.Equal(before.Metadata.Labels, after.Metadata.Labels) ||
		!slices.EqualFunc(before.Spec.AntiAffinity, after.Spec.AntiAffinity, func(a, b api.LabelSelector) bool { return maps.Equal(a, b) })
}

// volumeChanged tries the waiting VMs again when a volume was bound to a
// host or went away: either may decide where a VM that uses it can go.
func (s *Scheduler) volumeChanged(key string, obj api.Object) {
	host, exists := "", obj != nil
	if exists {
		host = obj.(*api.Volume).Spec.Host
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, seen := s.seenVolumeHosts[key]
	if exists {
		s.seenVolumeHosts[key] = host
	} else {
		delete(s.seenVolumeHosts, key)
	}
	if prev != host || seen != exists {
		s.retryLocked("")
	}
}

// retryLocked asks for the waiting VMs to be tried again: all of them, or
// (tenant set) those with affinity rules in that tenant. retryLoop does
// it, so a burst of changes makes one pass. Callers hold mu.
func (s *Scheduler) retryLocked(tenant string) {
	if len(s.waiting) == 0 {
		return
	}
	if tenant == "" {
		s.retry = true
	} else {
		s.retryAffinity[tenant] = true
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// retryLoop enqueues the waiting VMs when asked to, oldest first. A VM
// enqueued waits no more: it is decided again, and waits again if it
// still fits nowhere.
func (s *Scheduler) retryLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		s.mu.Lock()
		var vms []*api.VirtualMachine
		for key := range s.waiting {
			v := s.state.pending[key]
			if v == nil {
				delete(s.waiting, key)
				continue
			}
			if s.retry || (len(v.obj.Spec.Affinity) > 0 && s.retryAffinity[v.obj.Metadata.Tenant]) {
				vms = append(vms, v.obj)
				delete(s.waiting, key)
			}
		}
		if len(s.waiting) == 0 {
			s.waiting = map[string]bool{} // its room freed (forgetWaitingLocked)
		}
		s.retry = false
		clear(s.retryAffinity)
		s.mu.Unlock()
		for _, k := range oldestFirst(vms) {
			s.ctl.Enqueue(k)
		}
	}
}

// pendingKeys lists the VMs the scheduler still has work on: those with
// no host, and placed ones whose status does not say so yet.
func (s *Scheduler) pendingKeys(context.Context) ([]string, error) {
	s.mu.Lock()
	vms := make([]*api.VirtualMachine, 0, len(s.state.pending)+len(s.state.unmarked))
	for _, v := range s.state.pending {
		vms = append(vms, v.obj)
	}
	for _, v := range s.state.unmarked {
		vms = append(vms, v.obj)
	}
	s.mu.Unlock()
	return oldestFirst(vms), nil
}

// oldestFirst returns the VMs' keys, the oldest VM first.
func oldestFirst(vms []*api.VirtualMachine) []string {
	type entry struct {
		at  time.Time
		key string
	}
	es := make([]entry, len(vms))
	for i, vm := range vms {
		es[i].key = client.Key(vm)
		if t := vm.Metadata.CreationTimestamp; t != nil {
			es[i].at = *t
		}
	}
	sort.Slice(es, func(i, j int) bool {
		if !es[i].at.Equal(es[j].at) {
			return es[i].at.Before(es[j].at)
		}
		return es[i].key < es[j].key
	})
	keys := make([]string, len(es))
	for i, e := range es {
		keys[i] = e.key
	}
	return keys
}

// Reconcile places one VM, or records why it cannot be placed.
func (s *Scheduler) Reconcile(ctx context.Context, key string) (reconcile.Result, error) {
	s.mu.Lock()
	if err := s.bindFailed[key]; err != nil {
		delete(s.bindFailed, key)
		s.mu.Unlock()
		return reconcile.Result{}, err
	}
	v := s.state.vms[key]
	if v == nil {
		s.mu.Unlock()
		return reconcile.Result{}, nil
	}
	vm := v.obj
	if vm.Spec.Host != "" {
		s.mu.Unlock()
		return reconcile.Result{}, s.markScheduled(ctx, vm)
	}
	if v.assumed != "" {
		// Bound already; the cache will bring the VM with its host.
		s.mu.Unlock()
		return reconcile.Result{}, nil
	}
	host, why := s.state.schedule(vm, s.volume)
	if host != "" {
		// Assume before binding: the cache may bring the bound VM
		// (which ends the assumption) before Patch returns, and the
		// next decision must count it.
		s.state.assume(key, host)
		s.forgetWaitingLocked(key)
	} else {
		s.waiting[key] = true
	}
	s.mu.Unlock()
	if host == "" {
		return s.markUnschedulable(ctx, key, vm, why)
	}
	// The binding is written in a batch with others (bindLoop); the VM
	// counts as assumed on host until the cache brings it bound, or the
	// write fails (bound says what then).
	b := &pendingBinding{key: key, uid: vm.Metadata.UID,
		item: api.BindingItem{Tenant: vm.Metadata.Tenant, Name: vm.Metadata.Name, ResourceVersion: vm.Metadata.ResourceVersion, Host: host}}
	if s.Metrics != nil {
		b.decided = time.Now()
	}
	select {
	case s.bindq <- b:
	case <-ctx.Done():
		s.bound(ctx, b, ctx.Err())
	}
	return reconcile.Result{}, nil
}

// bound learns what became of a binding. Written, the host's allocation
// is recounted (the API server made the VM Scheduled, and recorded its
// Scheduled event, in the binding's write itself). Not written, the
// assumption is dropped and the VM decided again: soon after a Conflict
// (it changed since the decision: the cache is about to bring the newer
// version), not at all when it is gone, and after any other error as a
// failed Reconcile is, backing off, which Reconcile returns.
func (s *Scheduler) bound(ctx context.Context, b *pendingBinding, err error) {
	host := b.item.Host
	if err == nil {
		s.alloc.EnqueueAfter(host, allocDelay)
		return
	}
	s.mu.Lock()
	if v := s.state.vms[b.key]; v != nil && v.obj.Metadata.UID == b.uid && v.assumed == host {
		s.state.assume(b.key, "")
	}
	switch {
	case api.IsConflict(err):
		s.ctl.EnqueueAfter(b.key, 200*time.Millisecond)
	case api.IsNotFound(err) || ctx.Err() != nil:
	default:
		s.bindFailed[b.key] = fmt.Errorf("binding %s to host %s: %w", b.key, host, err)
		s.ctl.Enqueue(b.key)
	}
	s.mu.Unlock()
}

// bindLoop writes the bindings bind is given, in batches: the first
// waiting, and every other waiting by the time a request may be sent
// (bindsInFlight at once), at most maxBindBatch. Under load the batches
// grow by themselves; a lone binding goes at once. Each binding of a
// batch succeeds or fails on its own (api.BindingRequest), so one VM
// changed since its decision does not hold up the others.
func (s *Scheduler) bindLoop(ctx context.Context) {
	slots := make(chan struct{}, bindsInFlight)
	for {
		var first *pendingBinding
		select {
		case <-ctx.Done():
			return
		case first = <-s.bindq:
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			s.bound(ctx, first, ctx.Err())
			return
		}
		batch := []*pendingBinding{first}
	gather:
		for len(batch) < maxBindBatch {
			select {
			case b := <-s.bindq:
				batch = append(batch, b)
			default:
				break gather
			}
		}
		go func() {
			defer func() { <-slots }()
			s.writeBindings(ctx, batch)
		}()
	}
}

// writeBindings writes one batch and acts on what became of each binding.
func (s *Scheduler) writeBindings(ctx context.Context, batch []*pendingBinding) {
	for i, err := range s.sendBindings(ctx, batch) {
		s.bound(ctx, batch[i], err)
	}
}

// sendBindings writes one batch, in one request, and returns what became
// of each binding.
func (s *Scheduler) sendBindings(ctx context.Context, batch []*pendingBinding) []error {
	items := make([]api.BindingItem, len(batch))
	for i, b := range batch {
		items[i] = b.item
	}
	errs := make([]error, len(batch))
	start := time.Now()
	s.Metrics.sent(batch, start)
	out, err := s.Client.Bind(ctx, items)
	s.Metrics.answered(time.Since(start))
	for i := range batch {
		switch {
		case err != nil:
			// The request's error, not this VM's: %v, so that no
			// Conflict or NotFound of the request passes for the VM's.
			errs[i] = fmt.Errorf("writing a batch of %d bindings: %v", len(batch), err)
		case out.Items[i].Error != nil:
			errs[i] = out.Items[i].Error
		}
	}
	return errs
}

// volume finds a cached Volume.
func (s *Scheduler) volume(tenant, name string) (*api.Volume, bool) {
	o, ok := s.volumes.Get(tenant + "/" + name)
	if !ok {
		return nil, false
	}
	return o.(*api.Volume), true
}

// markScheduled records on a placed VM that it is placed, when the
// binding write did not (objects stored before the API server did it):
// the Scheduled condition always, the phase only until the agent takes
// the phase over.
func (s *Scheduler) markScheduled(ctx context.Context, vm *api.VirtualMachine) error {
	if scheduledRecorded(&vm.Status) {
		// Every write of a placed VM (its agent's, twice as it starts)
		// comes here; most find it marked, and SetScheduled would
		// change nothing: spare WriteStatus's copy and comparison.
		return nil
	}
	return s.writeVMStatus(ctx, vm, func(vm *api.VirtualMachine, st *api.VirtualMachineStatus) bool {
		return st.SetScheduled(vm.Spec.Host, vm.Metadata.Generation, s.Now().UTC())
	})
}

// scheduledRecorded reports whether the status says the VM is placed as
// SetScheduled would leave it: then it would change nothing.
func scheduledRecorded(st *api.VirtualMachineStatus) bool {
	c := st.Condition(ConditionScheduled)
	return st.Phase != "" && st.Phase != api.VMPending && c != nil && c.Status == api.ConditionTrue
}

// forgetWaitingLocked drops what the scheduler kept of key while it
// waited for room. A map keeps its size after deletions: a backlog of
// 10,000 unschedulable VMs left 3 MiB of empty maps behind once placed,
// so the maps are made anew when they empty. Callers hold mu.
func (s *Scheduler) forgetWaitingLocked(key string) {
	if _, ok := s.warned[key]; ok {
		if delete(s.warned, key); len(s.warned) == 0 {
			s.warned = map[string]warning{}
		}
	}
	if _, ok := s.marked[key]; ok {
		if delete(s.marked, key); len(s.marked) == 0 {
			s.marked = map[string]time.Time{}
		}
	}
	if s.waiting[key] {
		if delete(s.waiting, key); len(s.waiting) == 0 {
			s.waiting = map[string]bool{}
		}
	}
}

// markUnschedulable records why no host fits: a condition, phase Pending,
// and a FailedScheduling event (again only when the reason changes or
// warnEvery has passed). A VM that says already why it waits, in other
// words, is told the new ones unschedulableRefresh after it last was,
// not sooner.
func (s *Scheduler) markUnschedulable(ctx context.Context, key string, vm *api.VirtualMachine, why string) (reconcile.Result, error) {
	now := s.Now()
	if c := vm.Status.Condition(ConditionScheduled); c != nil && c.Status == api.ConditionFalse && c.Reason == api.ReasonUnschedulable &&
		c.Message != why && vm.Status.Phase == api.VMPending {
		s.mu.Lock()
		last := s.marked[key]
		s.mu.Unlock()
		if wait := unschedulableRefresh - now.Sub(last); wait > 0 {
			return reconcile.Result{RequeueAfter: wait}, nil
		}
	}
	s.mu.Lock()
	s.marked[key] = now
	s.mu.Unlock()
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
	return reconcile.Result{}, err
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
	s.mu.Lock()
	hs := s.state.hosts[key]
	if hs == nil {
		s.mu.Unlock()
		return reconcile.Result{}, nil
	}
	cpus, mem := hs.usedCPU, api.Bytes(hs.usedMem)
	s.mu.Unlock()
	if h.Status.AllocatedCPUs == cpus && h.Status.AllocatedMemory == mem {
		return reconcile.Result{}, nil
	}
	if _, err := s.Client.PatchStatus(ctx, "Host", "", key, api.HostAllocation{AllocatedCPUs: cpus, AllocatedMemory: mem}); err != nil && !api.IsNotFound(err) {
		return reconcile.Result{}, fmt.Errorf("writing the allocation of host %s: %w", key, err)
	}
	return reconcile.Result{}, nil
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
// volume finds a Volume by tenant and name (nil finds none).
//
// It looks at every host, each in a time that does not depend on how
// many VMs there are: room and spread counts are sums kept by the
// cluster, and (anti-)affinity reads the host's VMs of the VM's tenant
// only when the VM or one of them has such rules.
func (c *cluster) schedule(vm *api.VirtualMachine, volume func(tenant, name string) (*api.Volume, bool)) (string, string) {
	volumeHost, why := volumesHost(vm, volume)
	if why != "" {
		return "", why
	}
	tenant, uid := vm.Metadata.Tenant, vm.Metadata.UID
	// An affinity selector no placed VM of the tenant matches but the VM
	// itself does is satisfied anywhere, so the first VM of a group that
	// wants to be together can be placed: the same for every host.
	firstOfGroup := make([]bool, len(vm.Spec.Affinity))
	for i, sel := range vm.Spec.Affinity {
		firstOfGroup[i] = sel.Matches(vm.Metadata.Labels) && !c.placedAnywhere(tenant, sel)
	}
	group := spreadGroup(vm)
	// Anti-affinity is looked at only when the VM or a placed VM of its
	// tenant has such rules; likewise affinity and the node selector.
	checkAnti := len(vm.Spec.AntiAffinity) > 0 || c.antiTenants[tenant] > 0
	checkAffinity, checkSelector := len(vm.Spec.Affinity) > 0, len(vm.Spec.NodeSelector) > 0
	var fails [numFailures]int
	var largestMem int64 = math.MinInt64
	largestCPU := math.Inf(-1)
	best, bestSpread, bestFree := "", 0, int64(0)
	for _, hs := range c.order {
		name := hs.name
		reason := -1
		switch {
		case volumeHost != "" && name != volumeHost:
			reason = failVolume
		case !hs.ready:
			reason = failNotReady
		case hs.cordoned:
			reason = failCordoned
		case checkSelector && !vm.Spec.NodeSelector.Matches(hs.obj.Metadata.Labels):
			reason = failSelector
		case checkAffinity && !hs.affinitySatisfied(vm, firstOfGroup):
			reason = failAffinity
		case checkAnti && hs.antiAffinityViolated(vm, tenant, uid):
			reason = failAntiAffinity
		}
		if reason >= 0 {
			fails[reason]++
			continue
		}
		freeCPU, freeMem := hs.free()
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
		spread := 0
		if group != "" {
			spread = hs.spread[group]
		}
		left := freeMem - int64(vm.Spec.Memory)
		// Hosts come by name, so a tie keeps the first.
		if best == "" || spread < bestSpread || (spread == bestSpread && left > bestFree) {
			best, bestSpread, bestFree = name, spread, left
		}
	}
	if best != "" {
		return best, ""
	}
	if len(c.names) == 0 {
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
	return "", fmt.Sprintf("0/%d hosts: %s", len(c.names), strings.Join(parts, ", "))
}

// volumesHost returns the host that holds the local volumes vm's disks
// name, "" if none is bound yet (an unbound volume is made where the VM
// goes), or why no host can do: the volumes are bound to different hosts,
// or one waits to be bound to its snapshot's host.
func volumesHost(vm *api.VirtualMachine, volume func(tenant, name string) (*api.Volume, bool)) (host, why string) {
	if volume == nil {
		return "", ""
	}
	var first string
	for _, d := range vm.Spec.Disks {
		if d.Volume == "" {
			continue
		}
		vol, ok := volume(vm.Metadata.Tenant, d.Volume)
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

// affinitySatisfied reports whether, for every affinity selector, the host
// runs a VM of the VM's tenant that matches it, or the selector is one
// the VM may start a group with (firstOfGroup, see schedule).
func (hs *hostState) affinitySatisfied(vm *api.VirtualMachine, firstOfGroup []bool) bool {
	for i, sel := range vm.Spec.Affinity {
		if !firstOfGroup[i] && !hs.anyMatch(vm.Metadata.Tenant, sel, "") {
			return false
		}
	}
	return true
}

// antiAffinityViolated reports whether the host runs a VM of the VM's
// tenant that one of its anti-affinity selectors matches, or whose own
// anti-affinity matches the VM: the rule holds both ways, as a person
// who wrote it on either VM expects.
func (hs *hostState) antiAffinityViolated(vm *api.VirtualMachine, tenant, uid string) bool {
	for _, sel := range vm.Spec.AntiAffinity {
		if hs.anyMatch(tenant, sel, uid) {
			return true
		}
	}
	t := hs.tenants[tenant]
	if t == nil {
		return false
	}
	for o := range t.anti {
		if o.obj.Metadata.UID == uid {
			continue
		}
		for _, sel := range o.obj.Spec.AntiAffinity {
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
