package store

import (
	"context"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Mirror keeps an in-memory copy of every key under an etcd prefix, decoded
// by a function, current through a watch. A broken watch lists again.
type Mirror[T any] struct {
	c      *clientv3.Client
	prefix string
	decode func([]byte) (T, error)

	mu    sync.RWMutex
	items map[string]T
	ready chan struct{}
	once  sync.Once
	// onChange is told of changes (OnChange).
	onChange func(name string)
}

// NewMirror returns a mirror; Run fills it.
func NewMirror[T any](c *clientv3.Client, prefix string, decode func([]byte) (T, error)) *Mirror[T] {
	return &Mirror[T]{c: c, prefix: prefix, decode: decode, items: map[string]T{}, ready: make(chan struct{})}
}

// OnChange has fn called with an item's name after the item appears, is
// deleted (Forget included) or decodes to something other than before,
// and with "" after the mirror lists again, when anything may have
// changed. It is called after the copy has the change, outside the
// mirror's lock, and must not block. Call it before Run.
func (m *Mirror[T]) OnChange(fn func(name string)) { m.onChange = fn }

func (m *Mirror[T]) changed(names ...string) {
	if m.onChange == nil {
		return
	}
	for _, n := range names {
		m.onChange(n)
	}
}

// Get returns the item stored under prefix+name.
func (m *Mirror[T]) Get(name string) (T, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	v, ok := m.items[name]
	return v, ok
}

// Lookup returns the item under prefix+name, asking etcd when the mirror
// does not have it yet: something written a moment ago (a token just
// issued) may not have reached the watch, and must still be found.
func (m *Mirror[T]) Lookup(ctx context.Context, name string) (T, bool) {
	if v, ok := m.Get(name); ok {
		return v, true
	}
	return m.Read(ctx, name)
}

// Read returns the item under prefix+name as etcd has it now, bypassing
// the copy: for a caller that found the copy behind (an object deleted
// and made again a moment ago).
func (m *Mirror[T]) Read(ctx context.Context, name string) (T, bool) {
	var zero T
	resp, err := m.c.Get(ctx, m.prefix+name)
	if err != nil || len(resp.Kvs) == 0 {
		return zero, false
	}
	v, err := m.decode(resp.Kvs[0].Value)
	if err != nil {
		return zero, false
	}
	return v, true
}

// Forget drops the item under prefix+name at once, for a server that has
// just deleted it and must not honour it for the moment its own watch
// takes to say so (a revoked token). The watch's delete follows and
// changes nothing more.
func (m *Mirror[T]) Forget(name string) {
	m.mu.Lock()
	_, had := m.items[name]
	delete(m.items, name)
	m.mu.Unlock()
	if had {
		m.changed(name)
	}
}

// Each calls fn for every item.
func (m *Mirror[T]) Each(fn func(name string, v T)) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for k, v := range m.items {
		fn(k, v)
	}
}

// WaitReady blocks until the first list has loaded.
func (m *Mirror[T]) WaitReady(ctx context.Context) error {
	select {
	case <-m.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run lists and watches until ctx ends.
func (m *Mirror[T]) Run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := m.sync(ctx); err != nil && ctx.Err() == nil {
			slog.Warn("mirror resyncing", "prefix", m.prefix, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (m *Mirror[T]) sync(ctx context.Context) error {
	resp, err := m.c.Get(ctx, m.prefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	items := map[string]T{}
	for _, kv := range resp.Kvs {
		if v, err := m.decode(kv.Value); err == nil {
			items[strings.TrimPrefix(string(kv.Key), m.prefix)] = v
		}
	}
	m.mu.Lock()
	m.items = items
	m.mu.Unlock()
	m.changed("")
	m.once.Do(func() { close(m.ready) })
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range m.c.Watch(wctx, m.prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		var changed []string
		m.mu.Lock()
		for _, ev := range wr.Events {
			name := strings.TrimPrefix(string(ev.Kv.Key), m.prefix)
			old, had := m.items[name]
			if ev.Type == clientv3.EventTypeDelete {
				delete(m.items, name)
				if had {
					changed = append(changed, name)
				}
				continue
			}
			if v, err := m.decode(ev.Kv.Value); err == nil {
				m.items[name] = v
				if !had || (m.onChange != nil && !reflect.DeepEqual(old, v)) {
					changed = append(changed, name)
				}
			}
		}
		m.mu.Unlock()
		m.changed(changed...)
	}
	return ctx.Err()
}
