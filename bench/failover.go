package bench

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// failover follows the election after the bench killed the leader: a
// server leads again only once the killed one's election key is gone,
// which etcd deletes when the key's lease (the killed server's session,
// TTL 10 s) runs out; a member that becomes etcd's raft leader first
// renews every lease, so that can be longer still. Until then no
// controller runs: a VM created meanwhile is not placed.
type failover struct {
	killed   *serverProc
	killedAt time.Time
	// done is closed once a new leader is known (or the run ends);
	// leader and after are set then.
	done   chan struct{}
	leader *serverProc
	after  time.Duration
}

// awaitNewLeader watches the election through ec, from the kill of old
// at killedAt until another server leads.
func (r *scaleRun) awaitNewLeader(ctx context.Context, ec *clientv3.Client, old *serverProc, killedAt time.Time) *failover {
	f := &failover{killed: old, killedAt: killedAt, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for ctx.Err() == nil {
			resp, err := ec.Get(ctx, "/hearth/leader", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
			if err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) != old.url {
				for _, p := range r.servers {
					if p.url == string(resp.Kvs[0].Value) {
						f.leader, f.after = p, time.Since(killedAt)
						r.logf("server %s leads, %s after the leader was killed", p.name, f.after.Round(time.Millisecond))
						return
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return f
}

// wait waits until a new leader is known; it returns false if ctx ended
// first.
func (f *failover) wait(ctx context.Context) bool {
	select {
	case <-f.done:
		return f.leader != nil
	case <-ctx.Done():
		return false
	}
}
