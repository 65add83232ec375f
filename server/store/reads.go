package store

import (
	"context"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A read session lets one request's reads share one linearizable read.
//
// etcd answers a linearizable read only once its member has applied
// every write committed when the read arrived: on a busy member each
// such read waits for the raft loop's next round, disk sync included.
// A VM's create reads six times before its transaction (its tenant, its
// network's anchor, the tenant's subnets, the MAC and the IPs it takes,
// and the network again for its warnings), one after another, so under
// the write load of a thousand agents it waited for six rounds (a
// median of 34 ms at 200 creates/s in issue 16's fifth pass).
//
// Within a session the first read is linearizable, and the reads after
// it are serializable: served by the same member from what it has
// applied, which is everything the first read saw and more, since a
// member applies in order. So every read still sees every write that
// was acknowledged before the request began, which is what a
// linearizable request needs (a write acknowledged while it runs is
// concurrent with it, and may be ordered either way). Only a client of
// one member keeps that order (the embedded member, which the server
// calls in-process); the store reads every time linearizably when its
// client may balance between members (ReadsFromOneMember is not set).
// A hook's retry after a lost race (Attempt > 0) reads linearizably
// again: the race may have been with a write this member has not
// applied.
type readSession struct{ linearized atomic.Bool }

type readSessionKey struct{}

// WithReadSession returns a context whose reads through the store (and
// the KV its hooks are given) form one read session: one request's. A
// create that loses a race (ErrGuardChanged) starts the session again,
// so the request's next attempt reads linearizably first.
func WithReadSession(ctx context.Context) context.Context {
	return context.WithValue(ctx, readSessionKey{}, &readSession{})
}

// restartReadSession makes the next read of ctx's session linearizable
// again: a write lost a race with one this member may not have applied.
func restartReadSession(ctx context.Context) {
	if rs, _ := ctx.Value(readSessionKey{}).(*readSession); rs != nil {
		rs.linearized.Store(false)
	}
}

// ReadsFromOneMember says the store's client sends every request to one
// etcd member, so read sessions may use serializable reads. loneVoter,
// if set, says whether that member is its cluster's only voter now:
// then every read of a session (and an update's first) is
// serializable, the first too, since a lone voter has applied every
// write it acknowledged.
func (s *Store) ReadsFromOneMember(loneVoter func() bool) {
	s.kv.oneMember, s.kv.loneVoter = true, loneVoter
}

// sessionKV is the KV the store reads through: it makes a session's
// reads after the first serializable.
type sessionKV struct {
	clientv3.KV
	oneMember bool
	loneVoter func() bool
}

// alone says the member is its cluster's only voter.
func (k *sessionKV) alone() bool { return k.oneMember && k.loneVoter != nil && k.loneVoter() }

func (k *sessionKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	rs, _ := ctx.Value(readSessionKey{}).(*readSession)
	if rs == nil || !k.oneMember {
		return k.KV.Get(ctx, key, opts...)
	}
	if (rs.linearized.Load() && Attempt(ctx) == 0) || k.alone() {
		return k.KV.Get(ctx, key, append(opts, clientv3.WithSerializable())...)
	}
	resp, err := k.KV.Get(ctx, key, opts...)
	if err == nil {
		rs.linearized.Store(true)
	}
	return resp, err
}

// readForUpdate reads the key an update starts from. On its first
// attempt, from a client of one member, the read is serializable: the
// update's transaction is conditional on the key's mod revision being
// the one read, so a read the member is behind on cannot be written
// over a newer object; it only loses the race, and the attempt after it
// reads linearizably. Two answers a member behind could give wrongly
// are asked again linearizably at once: the key missing (an object
// made a moment ago through another member), and an older revision
// than the caller's precondition (the caller has seen a newer one).
// The third, an update that would change nothing (ErrUnchanged, which
// writes nothing to lose a race with), the caller asks again itself
// when serializable says so. A status write then waits for one raft
// round, its transaction's, not two.
func (s *Store) readForUpdate(ctx context.Context, key string, precondition int64, attempt int) (resp *clientv3.GetResponse, serializable bool, err error) {
	if s.kv.alone() {
		resp, err = s.c.Get(ctx, key, clientv3.WithSerializable())
		return resp, false, err // as good as linearizable
	}
	if attempt > 0 || !s.kv.oneMember {
		resp, err = s.c.Get(ctx, key)
		return resp, false, err
	}
	resp, err = s.c.Get(ctx, key, clientv3.WithSerializable())
	if err != nil || len(resp.Kvs) == 0 || (precondition != 0 && resp.Kvs[0].ModRevision < precondition) {
		resp, err = s.c.Get(ctx, key)
		return resp, false, err
	}
	return resp, true, nil
}
