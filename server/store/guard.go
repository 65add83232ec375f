package store

import (
	"context"
	"errors"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Guards make a write conditional on what a check read before it: a check
// (a tenant's quota) records the revision of a key it depends on with
// Guard, and the Create or Update that follows, in the same context,
// commits only if the key is still at that revision, and touches the key
// in the same transaction. Two writes guarded by the same key therefore
// never both pass a check that read the state before either of them: the
// second one's transaction fails, and its check runs again.
type guards struct {
	mu   sync.Mutex
	revs map[string]int64
}

type guardsKey struct{}

// ErrGuardChanged is returned by Create when a key a check depended on
// changed before the write: run the check again, then the write.
var ErrGuardChanged = errors.New("a value the write was checked against changed; check again")

// WithGuards returns a context that collects the guards of one write.
func WithGuards(ctx context.Context) context.Context {
	return context.WithValue(ctx, guardsKey{}, &guards{revs: map[string]int64{}})
}

// Guard makes the write in ctx conditional on key still having mod
// revision rev (0: the key does not exist). Without WithGuards it does
// nothing.
func Guard(ctx context.Context, key string, rev int64) {
	g, _ := ctx.Value(guardsKey{}).(*guards)
	if g == nil {
		return
	}
	g.mu.Lock()
	g.revs[key] = rev
	g.mu.Unlock()
}

// GuardRevision reads the mod revision of a guard key (0 if absent).
func (s *Store) GuardRevision(ctx context.Context, key string) (int64, error) {
	resp, err := s.kv.Get(ctx, key)
	if err != nil {
		return 0, unavailable(err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	return resp.Kvs[0].ModRevision, nil
}

// guardOps returns the compares and the touches of the guards in ctx, and
// forgets them, so that a retried check records its own afresh.
func guardOps(ctx context.Context) ([]clientv3.Cmp, []clientv3.Op) {
	g, _ := ctx.Value(guardsKey{}).(*guards)
	if g == nil {
		return nil, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for k, rev := range g.revs {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", rev))
		ops = append(ops, clientv3.OpPut(k, ""))
	}
	clear(g.revs)
	return cmps, ops
}
