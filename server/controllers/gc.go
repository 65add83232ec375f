package controllers

import (
	"context"
	"strings"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/reconcile"
)

// GarbageCollector deletes objects nobody owns any more: objects whose
// every ownerReference points at an object that is gone (or was replaced
// by another of the same name), objects of a deleted tenant, and events
// older than EventTTL.
type GarbageCollector struct {
	Client   *client.Client
	Recorder *client.Recorder
	EventTTL time.Duration
	Now      func() time.Time

	// Informers, when set, are shared with the term's other controllers.
	Informers *Informers

	informers map[string]*client.Informer // by kind
	ctl       *reconcile.Controller

	// dependents files every object with owners ("Kind|tenant/name",
	// as the controller's keys name it) under its owners ("Kind/name"):
	// a deletion then looks at its dependents only. A tenant's objects
	// are not filed under it (most objects are in a tenant, and tenants
	// are seldom deleted): the informers' keys, "tenant/name", find them.
	dependents keyIndex
}

// DefaultEventTTL is how long events are kept.
const DefaultEventTTL = time.Hour

// Run runs the collector until ctx ends.
func (g *GarbageCollector) Run(ctx context.Context) error {
	if g.Now == nil {
		g.Now = time.Now
	}
	if g.EventTTL == 0 {
		g.EventTTL = DefaultEventTTL
	}
	g.informers = map[string]*client.Informer{}
	g.ctl = &reconcile.Controller{Name: "garbage-collector", Reconciler: g, Workers: 2, Resync: time.Minute, SpreadResync: true, List: g.allKeys}
	for _, k := range api.Kinds() {
		g.informers[k.Kind] = g.Informers.informer(ctx, g.Client, k.Kind)
	}
	// Handlers read g.informers (a tenant's deletion): it is complete
	// before the first is registered.
	for _, k := range api.Kinds() {
		kind := k.Kind
		g.informers[kind].OnChangeUntil(ctx, func(key string, obj api.Object) {
			gk := kind + "|" + key // one copy, in the index and the queue
			g.index(gk, obj)
			g.ctl.Enqueue(gk)
			if obj == nil {
				g.enqueueDependents(kind, key)
			}
		})
	}
	for _, inf := range g.informers {
		if err := inf.WaitSynced(ctx); err != nil {
			return nil
		}
	}
	return g.ctl.Run(ctx)
}

func (g *GarbageCollector) allKeys(context.Context) ([]string, error) {
	var out []string
	for kind, inf := range g.informers {
		for _, key := range inf.Keys() {
			out = append(out, kind+"|"+key)
		}
	}
	return out, nil
}

// index files the object at gk under its owners (obj nil: it is gone).
func (g *GarbageCollector) index(gk string, obj api.Object) {
	var names []string
	if obj != nil {
		m := obj.GetMetadata()
		for _, ref := range m.OwnerReferences {
			names = append(names, ref.Kind+"/"+ref.Name)
		}
	}
	g.dependents.set(gk, names)
}

// enqueueDependents looks again at everything that named a deleted object
// as its owner, or lived in a deleted tenant.
func (g *GarbageCollector) enqueueDependents(kind, key string) {
	_, name := client.SplitKey(key)
	for _, gk := range g.dependents.keys(kind + "/" + name) {
		g.ctl.Enqueue(gk)
	}
	if kind != "Tenant" {
		return
	}
	for k, inf := range g.informers {
		for _, key := range inf.Keys() {
			if tenant, _ := client.SplitKey(key); tenant == name {
				g.ctl.Enqueue(k + "|" + key)
			}
		}
	}
}

// Reconcile decides whether one object should go.
func (g *GarbageCollector) Reconcile(ctx context.Context, key string) (reconcile.Result, error) {
	kind, objKey, _ := strings.Cut(key, "|")
	inf := g.informers[kind]
	if inf == nil {
		return reconcile.Result{}, nil
	}
	obj, ok := inf.Get(objKey)
	if !ok {
		return reconcile.Result{}, nil
	}
	m := obj.GetMetadata()
	if m.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	why := ""
	switch {
	case kind == "Event":
		last := eventLastSeen(obj)
		if last == nil {
			last = m.CreationTimestamp
		}
		if last != nil {
			if age := g.Now().Sub(*last); age > g.EventTTL {
				why = "expired"
			} else {
				return reconcile.Result{RequeueAfter: g.EventTTL - age + time.Second}, nil
			}
		}
	case m.Tenant != "" && !g.exists(ctx, "Tenant", "", m.Tenant, ""):
		why = "its tenant " + m.Tenant + " is gone"
	case len(m.OwnerReferences) > 0:
		gone := 0
		for _, ref := range m.OwnerReferences {
			if !g.exists(ctx, ref.Kind, m.Tenant, ref.Name, ref.UID) {
				gone++
			}
		}
		if gone == len(m.OwnerReferences) {
			why = "its owner " + m.OwnerReferences[0].Kind + "/" + m.OwnerReferences[0].Name + " is gone"
		}
	}
	if why == "" {
		return reconcile.Result{}, nil
	}
	if _, err := g.Client.Delete(ctx, kind, m.Tenant, m.Name); err != nil && !api.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	if kind != "Event" && m.Tenant == "" {
		g.Recorder.Eventf(ctx, obj, api.EventNormal, "GarbageCollected", "deleted because %s", why)
	}
	return reconcile.Result{}, nil
}

// exists asks the API itself, not the cache, before anything is deleted:
// an owner created a moment ago may not have reached the cache yet. uid,
// when set, must match, so an owner deleted and re-created under the same
// name does not keep the old one's dependents alive.
func (g *GarbageCollector) exists(ctx context.Context, kind, tenant, name, uid string) bool {
	k, err := api.KindByName(kind)
	if err != nil {
		return false
	}
	if k.Scope == api.ClusterScoped {
		tenant = ""
	}
	if inf := g.informers[kind]; inf != nil {
		key := name
		if tenant != "" {
			key = tenant + "/" + name
		}
		if o, ok := inf.Get(key); ok && (uid == "" || o.GetMetadata().UID == uid) {
			return true
		}
	}
	o, err := g.Client.Get(ctx, kind, tenant, name)
	if err != nil {
		// Only a definite NotFound counts as gone; an outage is not.
		return !api.IsNotFound(err)
	}
	return uid == "" || o.GetMetadata().UID == uid
}
