package client

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strconv"
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

	mu    sync.RWMutex
	items map[string]api.Object
	// The version of each object the handlers were last told about (a
	// Change's Old) is items' (toldLocked), except after Observe, which
	// changes the cache without telling anyone, so that the watch's
	// event of a write still shows what the write changed: observed
	// holds what they were told of those keys (nil: nothing), until the
	// watch brings them. A second map of every key would cost a map
	// entry per object; observed holds a few.
	observed map[string]api.Object
	// seen is the newest store revision the cache reflects.
	seen int64
	// hmu is held while handlers are called, and while one registered
	// late is told what the cache holds, so it never misses a change.
	hmu      sync.Mutex
	handlers []handler
	nextID   int
	started  bool
	synced   chan struct{}
	once     sync.Once
	// transform, when set, is applied to every object before the cache
	// holds it or a handler sees it (SetTransform).
	transform func(api.Object) api.Object
}

// NewInformer caches kind (in tenant, or all tenants with opts.AllTenants).
func NewInformer(c *Client, kind, tenant string, opts ListOptions) *Informer {
	return &Informer{c: c, kind: kind, tenant: tenant, opts: opts, items: map[string]api.Object{}, observed: map[string]api.Object{}, synced: make(chan struct{})}
}

// SetTransform makes the informer keep, and hand its handlers, fn(obj)
// instead of each object it lists or watches: a cache that holds only
// what its readers use, or holds it more compactly. The objects are the
// informer's own, just decoded, so fn may change obj in place and return
// it; it must keep the metadata's name, tenant and resourceVersion,
// which the informer files and orders objects by. An object given to
// Observe is the caller's and is kept as given, until the watch brings
// that version (transformed). Call it before Run.
func (in *Informer) SetTransform(fn func(api.Object) api.Object) {
	in.transform = fn
}

// shape applies the transform, if any.
func (in *Informer) shape(obj api.Object) api.Object {
	if in.transform == nil || obj == nil {
		return obj
	}
	return in.transform(obj)
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

type handler struct {
	id int
	fn func(Change)
}

// OnChange registers a handler called with the key of every object that
// is added, changed or deleted (obj is nil for deletions). A handler
// registered after Run started (several controllers sharing one
// informer) is first called with every object in the cache. Handlers
// must not register handlers.
func (in *Informer) OnChange(fn func(key string, obj api.Object)) {
	in.onUpdate(func(ch Change) { fn(ch.Key, ch.New) })
}

// OnChangeUntil is OnChange for a handler that goes away when ctx ends:
// a controller of one leadership term on an informer that outlives it.
func (in *Informer) OnChangeUntil(ctx context.Context, fn func(key string, obj api.Object)) {
	in.OnUpdateUntil(ctx, func(ch Change) { fn(ch.Key, ch.New) })
}

// OnUpdate is OnChange with the version the cache held before the change
// as well, for handlers that act only on some changes: a controller that
// writes an object's status reconciles it again when its spec or metadata
// change, not at the echo of its own status write. A handler registered
// late is first told of every cached object as new (Old nil).
func (in *Informer) OnUpdate(fn func(Change)) {
	in.onUpdate(fn)
}

// OnUpdateUntil is OnUpdate for a handler that goes away when ctx ends.
// It is removed shortly after ctx ends, not at that instant, so it may
// still be called once or twice after (a controller's Enqueue on a
// stopped queue does nothing).
func (in *Informer) OnUpdateUntil(ctx context.Context, fn func(Change)) {
	id := in.onUpdate(fn)
	context.AfterFunc(ctx, func() {
		in.hmu.Lock()
		defer in.hmu.Unlock()
		for i, h := range in.handlers {
			if h.id == id {
				in.handlers = append(in.handlers[:i:i], in.handlers[i+1:]...)
				return
			}
		}
	})
}

func (in *Informer) onUpdate(fn func(Change)) int {
	in.hmu.Lock()
	defer in.hmu.Unlock()
	in.nextID++
	id := in.nextID
	in.handlers = append(in.handlers, handler{id, fn})
	if !in.started {
		return id
	}
	in.mu.RLock()
	told := in.toldLocked()
	in.mu.RUnlock()
	for k, o := range told {
		fn(Change{Key: k, New: o})
	}
	return id
}

// Change is one change an informer saw.
type Change struct {
	Key string
	// Old is the version the handlers were told about before (nil when
	// the object is new); New the version now (nil when it was deleted).
	// Old may be several writes behind New (after a relist), and is
	// never a version the caller put in with Observe: the change of a
	// caller's own write shows what the write changed.
	Old, New api.Object
}

// StatusOnly reports whether the change left everything but the status
// as it was: the same object (uid), spec (generation), labels,
// annotations, finalizers, owners and deletion mark. Writes of /status,
// the writer's own included, are such changes.
func (ch Change) StatusOnly() bool {
	if ch.Old == nil || ch.New == nil {
		return false
	}
	a, b := ch.Old.GetMetadata(), ch.New.GetMetadata()
	return a.UID == b.UID && a.Generation == b.Generation &&
		(a.DeletionTimestamp == nil) == (b.DeletionTimestamp == nil) &&
		maps.Equal(a.Labels, b.Labels) && maps.Equal(a.Annotations, b.Annotations) &&
		slices.Equal(a.Finalizers, b.Finalizers) && slices.Equal(a.OwnerReferences, b.OwnerReferences)
}

// Get returns a cached object; callers must not change it.
func (in *Informer) Get(key string) (api.Object, bool) {
	in.mu.RLock()
	defer in.mu.RUnlock()
	o, ok := in.items[key]
	return o, ok
}

// Observe puts an object the caller has just written into the cache, if
// the watch has not yet brought that version or a later one, so that the
// caller's next Get does not hand it the version its write replaced (and
// a write conditional on it does not fail with a conflict). Handlers are
// not called: the watch brings the same version later and calls them.
func (in *Informer) Observe(obj api.Object) {
	rv, err := strconv.ParseInt(obj.GetMetadata().ResourceVersion, 10, 64)
	if err != nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if rv <= in.seen {
		return // the cache is already as new, or newer (the object may be gone)
	}
	key := Key(obj)
	if !in.newer(key, obj) {
		if _, ok := in.observed[key]; !ok {
			in.observed[key] = in.items[key] // what the handlers were told (nil: nothing)
		}
		in.items[key] = obj
	}
}

// toldLocked returns every object the handlers were last told about, by
// key. Callers hold mu.
func (in *Informer) toldLocked() map[string]api.Object {
	told := maps.Clone(in.items)
	for k, o := range in.observed {
		if o == nil {
			delete(told, k)
		} else {
			told[k] = o
		}
	}
	return told
}

// toldOfLocked returns the object the handlers were last told about under
// key, nil if none. Callers hold mu.
func (in *Informer) toldOfLocked(key string) api.Object {
	if o, ok := in.observed[key]; ok {
		return o
	}
	return in.items[key]
}

// newer reports whether the cached object under key is a later version
// than obj. Callers hold mu.
func (in *Informer) newer(key string, obj api.Object) bool {
	cur, ok := in.items[key]
	if !ok {
		return false
	}
	crv, err1 := strconv.ParseInt(cur.GetMetadata().ResourceVersion, 10, 64)
	orv, err2 := strconv.ParseInt(obj.GetMetadata().ResourceVersion, 10, 64)
	return err1 == nil && err2 == nil && crv > orv
}

// advance records that the cache reflects the store at revision rv.
// Callers hold mu.
func (in *Informer) advance(rv string) {
	if n, err := strconv.ParseInt(rv, 10, 64); err == nil && n > in.seen {
		in.seen = n
	}
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
	in.hmu.Lock()
	in.started = true
	in.hmu.Unlock()
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
				in.mu.Lock()
				in.advance(rv)
				in.mu.Unlock()
				continue
			}
			ev.Object = in.shape(ev.Object)
			key := Key(ev.Object)
			in.mu.Lock()
			in.advance(rv)
			old := in.toldOfLocked(key)
			if ev.Type == "DELETED" {
				delete(in.items, key)
				delete(in.observed, key)
			} else if in.newer(key, ev.Object) {
				// A version Observe put in is newer still: keep it.
				in.observed[key] = ev.Object
			} else {
				in.items[key] = ev.Object
				delete(in.observed, key)
			}
			in.mu.Unlock()
			obj := ev.Object
			if ev.Type == "DELETED" {
				obj = nil
			}
			in.notify(Change{Key: key, Old: old, New: obj})
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
		o = in.shape(o)
		fresh[Key(o)] = o
	}
	in.mu.Lock()
	old := in.toldLocked()
	in.items = fresh
	in.observed = map[string]api.Object{}
	in.seen = 0
	in.advance(rv)
	in.mu.Unlock()
	for k, o := range fresh {
		if prev, ok := old[k]; !ok || prev.GetMetadata().ResourceVersion != o.GetMetadata().ResourceVersion {
			in.notify(Change{Key: k, Old: prev, New: o})
		}
	}
	for k, prev := range old {
		if _, ok := fresh[k]; !ok {
			in.notify(Change{Key: k, Old: prev})
		}
	}
	in.once.Do(func() { close(in.synced) })
	return rv, nil
}

func (in *Informer) notify(ch Change) {
	in.hmu.Lock()
	defer in.hmu.Unlock()
	for _, h := range in.handlers {
		h.fn(ch)
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
