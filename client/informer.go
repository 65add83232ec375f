package client

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// Informer keeps a local cache of one kind, current through a watch, and
// tells a handler which keys changed. It lists once, then watches from the
// list's resourceVersion, resumes from the last version it saw when a
// watch breaks, and lists again only when the server says that version is
// gone. Controllers and agents build on it.
type Informer struct {
	c      *Client
	kind   string
	tenant string
	opts   ListOptions

	mu       sync.RWMutex
	items    map[string]api.Object
	handlers []func(key string, obj api.Object)
	synced   chan struct{}
	once     sync.Once
}

// NewInformer caches kind (in tenant, or all tenants with opts.AllTenants).
func NewInformer(c *Client, kind, tenant string, opts ListOptions) *Informer {
	return &Informer{c: c, kind: kind, tenant: tenant, opts: opts, items: map[string]api.Object{}, synced: make(chan struct{})}
}

// Key is how informers and controllers name objects: "tenant/name", or
// "name" for cluster-level objects.
func Key(obj api.Object) string {
	m := obj.GetMetadata()
	if m.Tenant == "" {
		return m.Name
	}
	return m.Tenant + "/" + m.Name
}

// SplitKey undoes Key.
func SplitKey(key string) (tenant, name string) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}

// OnChange registers a handler called with the key of every object that
// is added, changed or deleted (obj is nil for deletions). Register
// before Run.
func (in *Informer) OnChange(fn func(key string, obj api.Object)) {
	in.handlers = append(in.handlers, fn)
}

// Get returns a cached object; callers must not change it.
func (in *Informer) Get(key string) (api.Object, bool) {
	in.mu.RLock()
	defer in.mu.RUnlock()
	o, ok := in.items[key]
	return o, ok
}

// List returns every cached object, sorted by key.
func (in *Informer) List() []api.Object {
	in.mu.RLock()
	out := make([]api.Object, 0, len(in.items))
	for _, o := range in.items {
		out = append(out, o)
	}
	in.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return Key(out[i]) < Key(out[j]) })
	return out
}

// Keys returns the key of every cached object.
func (in *Informer) Keys() []string {
	in.mu.RLock()
	defer in.mu.RUnlock()
	out := make([]string, 0, len(in.items))
	for k := range in.items {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// WaitSynced blocks until the first list is in the cache.
func (in *Informer) WaitSynced(ctx context.Context) error {
	select {
	case <-in.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run keeps the cache current until ctx ends.
func (in *Informer) Run(ctx context.Context) {
	rv := ""
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if rv == "" {
			var err error
			if rv, err = in.relist(ctx); err != nil {
				if ctx.Err() == nil {
					slog.Warn("informer list failed", "kind", in.kind, "err", err)
				}
				sleep(ctx, backoff)
				backoff = min(backoff*2, 10*time.Second)
				continue
			}
		}
		o := in.opts
		o.ResourceVersion = rv
		events, werr, err := in.c.WatchOnce(ctx, in.kind, in.tenant, o)
		if err != nil {
			if api.IsGone(err) {
				rv = ""
				continue
			}
			if ctx.Err() == nil {
				slog.Debug("informer watch failed", "kind", in.kind, "err", err)
			}
			sleep(ctx, backoff)
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		for ev := range events {
			rv = ev.ResourceVersion
			if ev.Object == nil {
				continue
			}
			key := Key(ev.Object)
			in.mu.Lock()
			if ev.Type == "DELETED" {
				delete(in.items, key)
			} else {
				in.items[key] = ev.Object
			}
			in.mu.Unlock()
			obj := ev.Object
			if ev.Type == "DELETED" {
				obj = nil
			}
			in.notify(key, obj)
		}
		if api.IsGone(werr()) {
			rv = ""
		}
	}
}

// relist replaces the cache with a fresh list and notifies every key that
// appeared, changed or disappeared.
func (in *Informer) relist(ctx context.Context) (string, error) {
	objs, rv, err := in.c.List(ctx, in.kind, in.tenant, in.opts)
	if err != nil {
		return "", err
	}
	fresh := make(map[string]api.Object, len(objs))
	for _, o := range objs {
		fresh[Key(o)] = o
	}
	in.mu.Lock()
	old := in.items
	in.items = fresh
	in.mu.Unlock()
	for k, o := range fresh {
		if prev, ok := old[k]; !ok || prev.GetMetadata().ResourceVersion != o.GetMetadata().ResourceVersion {
			in.notify(k, o)
		}
	}
	for k := range old {
		if _, ok := fresh[k]; !ok {
			in.notify(k, nil)
		}
	}
	in.once.Do(func() { close(in.synced) })
	return rv, nil
}

func (in *Informer) notify(key string, obj api.Object) {
	for _, h := range in.handlers {
		h(key, obj)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
