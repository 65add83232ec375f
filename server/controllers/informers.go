package controllers

import (
	"context"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

// Informers shares one informer per kind among the controllers: a VM is
// then decoded and kept in memory once, however many controllers look at
// VMs (the scheduler, VM sets, volume placement, references and the
// garbage collector all do). Each informer caches its kind in every
// tenant and runs from its first use until the Informers' context ends;
// a server keeps them for its whole life (Warm), so that a server that
// becomes the leader starts with its caches filled and places VMs at
// once. Controllers register their handlers until their term ends
// (client.Informer.OnChangeUntil). A controller left without one (tests
// that run it alone) makes its own.
//
// What they hold is made smaller as it comes in (compact): equal strings
// share one copy, and an Event is kept as an eventExpiry, not an
// *api.Event: only what the garbage collector, its one reader among the
// controllers, looks at (a controller that wants an Event's reason or
// message reads it from the API).
type Informers struct {
	c   *client.Client
	ctx context.Context
	// strings is the informers' interner (compact).
	strings interner

	mu sync.Mutex
	m  map[string]*client.Informer
}

// NewInformers returns informers on c that run until ctx ends.
func NewInformers(ctx context.Context, c *client.Client) *Informers {
	return &Informers{c: c, ctx: ctx, m: map[string]*client.Informer{}}
}

// informer returns the shared informer of kind, started if it was not;
// with no Informers (f nil) a new one of the controller's own, started
// with ctx. Handlers registered on a started informer hear of every
// object it holds first (client.Informer.OnChange).
func (f *Informers) informer(ctx context.Context, c *client.Client, kind string) *client.Informer {
	opts := client.ListOptions{}
	if k, err := api.KindByName(kind); err == nil && k.Scope == api.TenantScoped {
		opts.AllTenants = true
	}
	if f == nil {
		inf := client.NewInformer(c, kind, "", opts)
		go inf.Run(ctx)
		return inf
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	inf := f.m[kind]
	if inf == nil {
		inf = client.NewInformer(f.c, kind, "", opts)
		inf.SetTransform(f.compact)
		f.m[kind] = inf
		go inf.Run(f.ctx)
	}
	return inf
}

// compact is the shared informers' transform: an object as they keep it.
func (f *Informers) compact(obj api.Object) api.Object {
	if ev, ok := obj.(*api.Event); ok {
		obj = &eventExpiry{TypeMeta: ev.TypeMeta, Metadata: ev.Metadata, LastTimestamp: ev.Spec.LastTimestamp}
	}
	return f.strings.object(obj)
}

// eventExpiry is what the shared informers keep of an Event: what the
// garbage collector, the one controller that reads Events, looks at to
// expire it (its metadata: name, tenant, owners, creation and deletion;
// and its lastTimestamp). The rest (what it is about, its reason and
// message) is for people, who read Events from the API. Half an Event's
// size, without its strings: the informers hold tens of thousands.
type eventExpiry struct {
	api.TypeMeta
	Metadata      api.ObjectMeta
	LastTimestamp *time.Time
}

func (e *eventExpiry) GetMetadata() *api.ObjectMeta { return &e.Metadata }

// SpecAny, StatusAny and CommonStatus give what is kept of the Event's
// spec and an empty status, not parts of e.
func (e *eventExpiry) SpecAny() any {
	return &api.EventSpec{LastTimestamp: e.LastTimestamp}
}
func (e *eventExpiry) StatusAny() any                  { return &api.EventStatus{} }
func (e *eventExpiry) CommonStatus() *api.CommonStatus { return &api.CommonStatus{} }

// eventLastSeen is when the Event obj (as an informer holds it) was last
// seen, nil when it does not say.
func eventLastSeen(obj api.Object) *time.Time {
	switch ev := obj.(type) {
	case *eventExpiry:
		return ev.LastTimestamp
	case *api.Event:
		return ev.Spec.LastTimestamp
	}
	return nil
}

// Warm starts the informers of every kind the controllers read, before
// any controller asks.
func (f *Informers) Warm() {
	for _, k := range api.Kinds() {
		f.informer(f.ctx, f.c, k.Kind)
	}
}

// Cached returns how many objects the informers hold, every kind
// together: what a test of their memory divides by.
func (f *Informers) Cached() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, inf := range f.m {
		n += len(inf.Keys())
	}
	return n
}
