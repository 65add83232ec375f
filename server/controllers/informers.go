package controllers

import (
	"context"
	"sync"

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
type Informers struct {
	c   *client.Client
	ctx context.Context

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
		f.m[kind] = inf
		go inf.Run(f.ctx)
	}
	return inf
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
