package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/reconcile"
)

// References keeps the ResolvedRefs condition of the objects that name
// others: VirtualMachines (networks, subnets, security groups, volumes,
// images, SSH keys), Subnets (their network) and FloatingIPs (their VM).
// The condition is False with reason MissingObject and a message naming
// each missing object, worded as the server's warnings are
// (api.ResolveReferences), and True once they all resolve. An object whose
// names resolve from the start gets no condition (a Subnet gets True): a
// write there would race the agent's first status write of a new VM, for
// no news. A Subnet's phase follows: Pending while its network is missing,
// Ready once it exists.
//
// Names are looked up as the object's tenant could: in the tenant, and for
// images among the shared ones too; never among cluster objects a tenant
// may not read (an external network), so a condition tells a tenant
// nothing its own reads would not.
//
// Only the condition (and a Subnet's phase) is written, with the
// resourceVersion read, so it never overwrites what an agent or the
// scheduler wrote meanwhile. An event is recorded when the condition
// changes, once per distinct set of missing objects: a warning when names
// stop resolving, a normal event when they all resolve again, and nothing
// on a resync that finds things as they were.
type References struct {
	Client   *client.Client
	Recorder *client.Recorder
	// Resync is how often every object is looked at again even without a
	// change (default 1m).
	Resync time.Duration
	Now    func() time.Time
	// Informers, when set, are shared with the term's other controllers.
	Informers *Informers

	// informers by kind: the referring kinds and the kinds they name.
	informers map[string]*client.Informer
	ctl       *reconcile.Controller

	// referrers files every referring object (refKey) under the kinds
	// and names it names ("Kind/name", any tenant): a change then looks
	// at the objects that name the changed one, not at every one.
	referrers keyIndex
}

// referringKinds are the kinds whose ResolvedRefs condition is kept.
var referringKinds = []string{"VirtualMachine", "Subnet", "FloatingIP"}

// namedKinds are the kinds their names point at, watched so that a
// condition turns True as soon as the missing object appears.
var namedKinds = []string{"Network", "Subnet", "SecurityGroup", "Volume", "Image", "SSHKey", "VirtualMachine"}

// refKey is a controller key: KIND:tenant/name.
func refKey(kind string, obj api.Object) string { return kind + ":" + client.Key(obj) }

// Run runs the controller until ctx ends.
func (c *References) Run(ctx context.Context) error {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Resync == 0 {
		c.Resync = time.Minute
	}
	c.informers = map[string]*client.Informer{}
	for _, kind := range append(slices.Clone(referringKinds), namedKinds...) {
		if c.informers[kind] == nil {
			c.informers[kind] = c.Informers.informer(ctx, c.Client, kind)
		}
	}
	c.ctl = &reconcile.Controller{Name: "references", Reconciler: reconcile.ReconcilerFunc(c.reconcile), Resync: c.Resync, SpreadResync: true,
		List: func(context.Context) ([]string, error) {
			var keys []string
			for _, kind := range referringKinds {
				for _, o := range c.informers[kind].List() {
					keys = append(keys, refKey(kind, o))
				}
			}
			return keys, nil
		}}
	for _, kind := range referringKinds {
		own := enqueueOwn(c.ctl, kind+":")
		c.informers[kind].OnUpdateUntil(ctx, func(ch client.Change) {
			c.index(kind+":"+ch.Key, ch.New)
			own(ch)
		})
	}
	for _, kind := range namedKinds {
		c.informers[kind].OnChangeUntil(ctx, func(key string, obj api.Object) { c.enqueueReferrers(kind, key) })
	}
	for _, inf := range c.informers {
		if inf.WaitSynced(ctx) != nil {
			return nil
		}
	}
	return c.ctl.Run(ctx)
}

// index files the referring object at rk under what it names now (obj
// nil: it is gone).
func (c *References) index(rk string, obj api.Object) {
	var names []string
	if obj != nil {
		for _, r := range api.ReferencesOf(obj) {
			if r.Name != "" {
				names = append(names, r.Kind+"/"+r.Name)
			}
		}
	}
	c.referrers.set(rk, names)
}

// enqueueReferrers enqueues every object that names the object of kind at
// key: in its tenant, or in every tenant for a shared (tenantless) image.
func (c *References) enqueueReferrers(kind, key string) {
	tenant, name := client.SplitKey(key)
	for _, rk := range c.referrers.keys(kind + "/" + name) {
		_, objKey, _ := strings.Cut(rk, ":")
		if t, _ := client.SplitKey(objKey); tenant == "" || t == tenant {
			c.ctl.Enqueue(rk)
		}
	}
}

func (c *References) lookup(kind, tenant, name string) (api.Object, bool, error) {
	inf := c.informers[kind]
	if inf == nil {
		return nil, false, fmt.Errorf("no informer for %s", kind)
	}
	key := name
	if tenant != "" {
		key = tenant + "/" + name
	}
	o, ok := inf.Get(key)
	return o, ok, nil
}

// tenantMayRead says whether a tenant's users may read objects of kind
// where a reference would look: never cluster-scoped ones.
func tenantMayRead(kind, tenant, name string) bool {
	k, err := api.KindByName(kind)
	return err == nil && k.Scope != api.ClusterScoped
}

func (c *References) reconcile(ctx context.Context, key string) (reconcile.Result, error) {
	kind, objKey, _ := strings.Cut(key, ":")
	inf := c.informers[kind]
	if inf == nil {
		return reconcile.Result{}, nil
	}
	obj, ok := inf.Get(objKey)
	if !ok || obj.GetMetadata().DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	missing, err := api.ResolveReferences(obj, c.lookup, tenantMayRead)
	if err != nil {
		return reconcile.Result{}, err
	}
	cond := api.ResolvedCondition(missing)
	if unchangedRefs(kind, obj, cond) {
		// Nothing to write: no copy of the object made to find that
		// out (every change of every VM comes here).
		return reconcile.Result{}, nil
	}
	now := c.Now().UTC()
	var old *api.Condition
	// Only the condition (and a Subnet's phase) is this controller's:
	// after a conflict it is set again on the object as it is then.
	out, wrote, err := client.WriteStatus(ctx, c.Client, inf, obj, func(obj api.Object) {
		st := obj.CommonStatus()
		old = nil
		if o := st.Condition(api.ConditionResolvedRefs); o != nil {
			cp := *o
			old = &cp
		}
		if kind != "Subnet" && old == nil && len(missing) == 0 {
			// No news is good news: an object whose names all resolve
			// from the start is not written at all, so a new VM's
			// status is its agent's alone while it starts (a write here
			// would race the agent's first). Subnets have no other
			// writer of their status and get their phase.
			return
		}
		st.SetCondition(cond, now)
		if kind == "Subnet" {
			st.Phase = api.SubnetReady
			if len(missing) > 0 {
				st.Phase = api.SubnetPending
			}
		}
	})
	switch {
	case api.IsNotFound(err):
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("writing the ResolvedRefs condition of %s %s: %w", kind, objKey, err)
	case !wrote:
		return reconcile.Result{}, nil
	}
	// An event for each change of the condition's message, not for a
	// change of the observed generation alone.
	switch {
	case cond.Status == api.ConditionFalse && (old == nil || old.Message != cond.Message):
		c.Recorder.Eventf(ctx, out, api.EventWarning, "MissingReferences", "%s", cond.Message)
	case cond.Status == api.ConditionTrue && old != nil && old.Status == api.ConditionFalse:
		c.Recorder.Eventf(ctx, out, api.EventNormal, "ReferencesResolved", "%s", cond.Message)
	}
	return reconcile.Result{}, nil
}

// unchangedRefs says whether the cached object already says what cond
// says (and a Subnet has the phase that goes with it), or, for a kind
// other than Subnet, has no condition and all its names resolve: what
// reconcile's write would leave as it is.
func unchangedRefs(kind string, obj api.Object, cond api.Condition) bool {
	st := obj.CommonStatus()
	old := st.Condition(api.ConditionResolvedRefs)
	if old == nil {
		return kind != "Subnet" && cond.Status == api.ConditionTrue
	}
	if old.Status != cond.Status || old.Reason != cond.Reason || old.Message != cond.Message || old.ObservedGeneration != cond.ObservedGeneration {
		return false
	}
	if kind == "Subnet" {
		phase := api.SubnetReady
		if cond.Status != api.ConditionTrue {
			phase = api.SubnetPending
		}
		return st.Phase == phase
	}
	return true
}
