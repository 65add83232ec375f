package controllers

import (
	"context"
	"crypto/rand"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/reconcile"
)

// VMSets keeps every VirtualMachineSet's number of VMs at spec.replicas:
// it makes the missing ones from the template and deletes the extra ones.
// Spreading them over hosts is the scheduler's job (VMs carrying the same
// VMSetLabel are one spread group).
//
// It counts a set's VMs in its cache, found through an index of VMs by
// set (not by listing every VM), plus the VMs it made that the cache has
// not shown yet and less those it deleted that the cache still shows
// (expectations, as a Kubernetes ReplicaSet keeps them), so VMs it made a
// moment ago are never made twice. An expectation the cache never meets
// lapses after expectFor. Like a Kubernetes ReplicaSet it does not change
// existing VMs when the template changes: delete them to get new ones.
type VMSets struct {
	Client   *client.Client
	Recorder *client.Recorder
	Now      func() time.Time
	// Informers, when set, are shared with the term's other controllers.
	Informers *Informers

	sets *client.Informer
	vms  *client.Informer
	ctl  *reconcile.Controller

	mu sync.Mutex
	// setOf remembers the set of every cached VM that has one, so a VM's
	// deletion can be traced to its set.
	setOf map[string]string
	// expect holds, by set key, VMs made or deleted that the cache has
	// not caught up with.
	expect map[string]*expectations
	// members files every cached VM under its set ("tenant/name").
	members keyIndex
}

// expectations are a set's writes the cache has not shown yet.
type expectations struct {
	created map[string]*api.VirtualMachine // by VM name
	deleted map[string]time.Time           // by VM name
	at      map[string]time.Time           // when each creation was made
}

// expectFor is how long an expectation waits for the cache: a VM made but
// never seen (deleted at once by someone else) is made again after it.
const expectFor = 2 * time.Minute

// Run runs the controller until ctx ends.
func (c *VMSets) Run(ctx context.Context) error {
	if c.Now == nil {
		c.Now = time.Now
	}
	c.setOf = map[string]string{}
	c.expect = map[string]*expectations{}
	c.sets = c.Informers.informer(ctx, c.Client, "VirtualMachineSet")
	c.vms = c.Informers.informer(ctx, c.Client, "VirtualMachine")
	c.ctl = &reconcile.Controller{Name: "vmset", Reconciler: c, Workers: 2, Resync: time.Minute, SpreadResync: true,
		List: func(context.Context) ([]string, error) { return c.sets.Keys(), nil }}
	// A set's own status writes (its echo) ask nothing of it; a change
	// of its spec is worked on at once, even while it backs off.
	c.sets.OnUpdateUntil(ctx, func(ch client.Change) {
		if !ch.StatusOnly() {
			c.ctl.EnqueueNow(ch.Key)
		}
	})
	c.vms.OnChangeUntil(ctx, c.vmChanged)
	if c.sets.WaitSynced(ctx) != nil || c.vms.WaitSynced(ctx) != nil {
		return nil
	}
	return c.ctl.Run(ctx)
}

// vmChanged enqueues the set of a VM that came, changed (it may have
// become Running) or went.
func (c *VMSets) vmChanged(key string, obj api.Object) {
	c.mu.Lock()
	set := c.setOf[key]
	now := ""
	if obj == nil {
		delete(c.setOf, key)
	} else if s := ownerSet(obj); s != "" {
		set = obj.GetMetadata().Tenant + "/" + s
		now = set
		c.setOf[key] = set
	} else {
		delete(c.setOf, key)
	}
	// The cache has caught up with a creation or a deletion.
	if e := c.expect[set]; e != nil {
		_, name := client.SplitKey(key)
		if obj != nil {
			delete(e.created, name)
			delete(e.at, name)
		} else {
			delete(e.deleted, name)
		}
	}
	c.mu.Unlock()
	if now != "" {
		c.members.set(key, []string{now})
	} else {
		c.members.set(key, nil)
	}
	if set != "" {
		c.ctl.Enqueue(set)
	}
}

// expectationsOf returns the set's expectations, the lapsed ones dropped.
// Callers hold mu.
func (c *VMSets) expectationsOfLocked(key string) *expectations {
	e := c.expect[key]
	if e == nil {
		e = &expectations{created: map[string]*api.VirtualMachine{}, deleted: map[string]time.Time{}, at: map[string]time.Time{}}
		c.expect[key] = e
	}
	now := c.Now()
	for name, at := range e.at {
		if now.Sub(at) > expectFor {
			delete(e.created, name)
			delete(e.at, name)
		}
	}
	for name, at := range e.deleted {
		if now.Sub(at) > expectFor {
			delete(e.deleted, name)
		}
	}
	return e
}

// ownerSet returns the name of the VirtualMachineSet that controls obj.
func ownerSet(obj api.Object) string {
	for _, ref := range obj.GetMetadata().OwnerReferences {
		if ref.Kind == "VirtualMachineSet" && ref.Controller {
			return ref.Name
		}
	}
	return ""
}

// Reconcile brings one set to its number of replicas and reports it.
func (c *VMSets) Reconcile(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := c.sets.Get(key)
	if !ok {
		c.mu.Lock()
		delete(c.expect, key)
		c.mu.Unlock()
		return reconcile.Result{}, nil // its VMs go with it (garbage collector)
	}
	set := obj.(*api.VirtualMachineSet)
	if set.Metadata.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	tenant, name := set.Metadata.Tenant, set.Metadata.Name
	// The set's VMs: those the cache holds (owned by this very set and
	// still carrying its label), less those deleted that it still shows,
	// plus those made that it does not show yet.
	var vms []*api.VirtualMachine
	c.mu.Lock()
	e := c.expectationsOfLocked(key)
	seen := map[string]bool{}
	for _, k := range c.members.keys(key) {
		o, ok := c.vms.Get(k)
		if !ok {
			continue
		}
		vm := o.(*api.VirtualMachine)
		seen[vm.Metadata.Name] = true
		if _, gone := e.deleted[vm.Metadata.Name]; gone {
			continue
		}
		if vm.Metadata.DeletionTimestamp == nil && ownedBy(vm, set) && vm.Metadata.Labels[VMSetLabel] == name {
			vms = append(vms, vm)
		}
	}
	for n, vm := range e.created {
		switch {
		case seen[n]: // the cache has it (its event came before the creation was noted)
			delete(e.created, n)
			delete(e.at, n)
		case ownedBy(vm, set):
			vms = append(vms, vm)
		}
	}
	for n := range e.deleted {
		if !seen[n] {
			delete(e.deleted, n)
		}
	}
	c.mu.Unlock()
	sort.Slice(vms, func(i, j int) bool { return vms[i].Metadata.Name < vms[j].Metadata.Name })

	want := set.Spec.DesiredReplicas()
	var failure error
	// A failure is told in an event once, not at each retry: not when
	// the set's ReplicaFailure condition says so already.
	warn := func(reason string, msg string) {
		if rf := set.Status.Condition(api.ConditionReplicaFailure); rf == nil || rf.Status != api.ConditionTrue || rf.Message != failure.Error() {
			c.Recorder.Eventf(ctx, set, api.EventWarning, reason, "%s", msg)
		}
	}
	for len(vms) < want && failure == nil {
		vm, err := c.create(ctx, set)
		if err != nil {
			failure = fmt.Errorf("creating a VM: %w", err)
			warn("FailedCreate", err.Error())
			break
		}
		vms = append(vms, vm)
		c.mu.Lock()
		e.created[vm.Metadata.Name], e.at[vm.Metadata.Name] = vm, c.Now()
		c.mu.Unlock()
		c.Recorder.Eventf(ctx, set, api.EventNormal, "SuccessfulCreate", "created VM %s", vm.Metadata.Name)
	}
	for _, victim := range scaleDownVictims(vms, len(vms)-want) {
		if _, err := c.Client.Delete(ctx, "VirtualMachine", tenant, victim.Metadata.Name); err != nil && !api.IsNotFound(err) {
			failure = fmt.Errorf("deleting VM %s: %w", victim.Metadata.Name, err)
			warn("FailedDelete", failure.Error())
			break
		}
		vms = slices.DeleteFunc(vms, func(vm *api.VirtualMachine) bool { return vm == victim })
		c.mu.Lock()
		e.deleted[victim.Metadata.Name] = c.Now()
		delete(e.created, victim.Metadata.Name)
		delete(e.at, victim.Metadata.Name)
		c.mu.Unlock()
		c.Recorder.Eventf(ctx, set, api.EventNormal, "SuccessfulDelete", "deleted VM %s", victim.Metadata.Name)
	}

	if err := c.writeStatus(ctx, set, vms, failure); err != nil {
		return reconcile.Result{}, err
	}
	switch {
	case failure == nil:
		return reconcile.Result{}, nil
	case api.IsForbidden(failure) || api.ReasonOf(failure) == api.ReasonQuota || api.ReasonOf(failure) == api.ReasonInvalid:
		// A quota or a bad template does not heal by retrying at once;
		// look again now and then (a change to the set comes sooner).
		return reconcile.Result{RequeueAfter: 30 * time.Second}, nil
	default:
		return reconcile.Result{}, failure
	}
}

func ownedBy(vm *api.VirtualMachine, set *api.VirtualMachineSet) bool {
	for _, ref := range vm.Metadata.OwnerReferences {
		if ref.Kind == "VirtualMachineSet" && ref.Controller && ref.UID == set.Metadata.UID {
			return true
		}
	}
	return false
}

// create makes one VM from the set's template, named SET-xxxxx.
func (c *VMSets) create(ctx context.Context, set *api.VirtualMachineSet) (*api.VirtualMachine, error) {
	for attempt := 0; ; attempt++ {
		vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"}}
		vm.Metadata = api.ObjectMeta{
			Name:        replicaName(set.Metadata.Name),
			Tenant:      set.Metadata.Tenant,
			Labels:      maps.Clone(set.Spec.Template.Metadata.Labels),
			Annotations: maps.Clone(set.Spec.Template.Metadata.Annotations),
			OwnerReferences: []api.OwnerReference{{
				Kind: "VirtualMachineSet", Name: set.Metadata.Name, UID: set.Metadata.UID, Controller: true,
			}},
		}
		if vm.Metadata.Labels == nil {
			vm.Metadata.Labels = map[string]string{}
		}
		vm.Metadata.Labels[VMSetLabel] = set.Metadata.Name
		// A deep copy, so replicas share no slices with the cached set.
		tmpl := api.DeepCopy(set).(*api.VirtualMachineSet)
		vm.Spec = tmpl.Spec.Template.Spec
		out, err := c.Client.Create(ctx, vm)
		if api.IsAlreadyExists(err) && attempt < 5 {
			continue // the random suffix collided
		}
		if err != nil {
			return nil, err
		}
		return out.(*api.VirtualMachine), nil
	}
}

// replicaName is the set's name (shortened to leave room) and five random
// lowercase letters and digits.
func replicaName(set string) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	if len(set) > 57 {
		set = set[:57]
	}
	var b [5]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return set + "-" + string(b[:])
}

// scaleDownVictims picks n VMs to delete: unscheduled ones first, then
// ones on the host running the most of the set (counted again after each
// pick, so the rest stays spread), then the newest.
func scaleDownVictims(vms []*api.VirtualMachine, n int) []*api.VirtualMachine {
	if n <= 0 {
		return nil
	}
	left := slices.Clone(vms)
	perHost := map[string]int{}
	for _, vm := range left {
		perHost[vm.Spec.Host]++
	}
	var out []*api.VirtualMachine
	for range n {
		sort.SliceStable(left, func(i, j int) bool {
			a, b := left[i], left[j]
			if ua, ub := a.Spec.Host == "", b.Spec.Host == ""; ua != ub {
				return ua
			}
			if ca, cb := perHost[a.Spec.Host], perHost[b.Spec.Host]; ca != cb {
				return ca > cb
			}
			ta, tb := a.Metadata.CreationTimestamp, b.Metadata.CreationTimestamp
			if ta != nil && tb != nil && !ta.Equal(*tb) {
				return ta.After(*tb)
			}
			return a.Metadata.Name > b.Metadata.Name
		})
		victim := left[0]
		out = append(out, victim)
		perHost[victim.Spec.Host]--
		left = left[1:]
	}
	return out
}

// writeStatus reports the set's replicas, ready replicas and conditions,
// writing only when something changed.
func (c *VMSets) writeStatus(ctx context.Context, set *api.VirtualMachineSet, vms []*api.VirtualMachine, failure error) error {
	want := set.Spec.DesiredReplicas()
	st := set.Status
	st.Conditions = slices.Clone(set.Status.Conditions)
	st.Replicas = len(vms)
	st.ReadyReplicas = 0
	for _, vm := range vms {
		if vm.Status.Phase == api.VMRunning {
			st.ReadyReplicas++
		}
	}
	st.ObservedGeneration = set.Metadata.Generation
	now := c.Now().UTC()
	ready := api.Condition{Type: api.ConditionReady, Status: api.ConditionTrue, Reason: api.ReasonAllReplicasReady,
		Message: fmt.Sprintf("%d of %d replicas are Running", st.ReadyReplicas, want), ObservedGeneration: set.Metadata.Generation}
	if st.ReadyReplicas != want || st.Replicas != want {
		ready.Status, ready.Reason = api.ConditionFalse, api.ReasonReplicasNotReady
	}
	st.SetCondition(ready, now)
	if failure != nil {
		st.SetCondition(api.Condition{Type: api.ConditionReplicaFailure, Status: api.ConditionTrue, Reason: api.ReasonFailedScale,
			Message: failure.Error(), ObservedGeneration: set.Metadata.Generation}, now)
	} else if st.Condition(api.ConditionReplicaFailure) != nil {
		st.SetCondition(api.Condition{Type: api.ConditionReplicaFailure, Status: api.ConditionFalse, Reason: api.ReasonScaled,
			ObservedGeneration: set.Metadata.Generation}, now)
	}
	// The set's status is this controller's alone: the whole of it is
	// written, only when it changed.
	if _, _, err := client.WriteStatus(ctx, c.Client, c.sets, set, func(set *api.VirtualMachineSet) { set.Status = st }); err != nil && !api.IsNotFound(err) {
		return fmt.Errorf("writing the status of VirtualMachineSet %s/%s: %w", set.Metadata.Tenant, set.Metadata.Name, err)
	}
	return nil
}
