package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/store"
)

// Host leases: an agent renews its Host's lease with POST
// api.HostLeasePath (.../hosts/NAME/heartbeat), which renews an etcd lease the server keeps
// for the host and writes nothing: a thousand hosts beating every ten
// seconds cost etcd no revisions and no database growth. The lease
// carries one key, /hearth/host-leases/NAME, written when the lease is
// granted (the first beat, or one after it ran out) and deleted by etcd
// when it runs out; its TTL is the Host's spec.leaseSeconds. The leader's
// host-liveness controller reads the keys (HostLeases) beside
// status.lastHeartbeat, which agents still write with their facts now
// and then, and which older agents write at every beat.

// HostLeasePrefix is where host lease keys live in etcd.
const HostLeasePrefix = "/hearth/host-leases/"

// hostLeaseRecord is a host lease key's value.
type hostLeaseRecord struct {
	// UID is the Host's: a Host made again under the name does not
	// inherit the lease.
	UID          string `json:"uid"`
	LeaseSeconds int    `json:"leaseSeconds"`
	Lease        int64  `json:"lease"`
}

// serveHostHeartbeat serves POST api.HostLeasePath. Only the host itself
// may renew its lease.
func (s *Server) serveHostHeartbeat(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	name := r.PathValue("name")
	if p.Host == "" || p.Host != name {
		return api.NewForbidden("%s may not renew the lease of host %s: only that host's own credential may", p.Name, name)
	}
	resp, err := s.renewHostLease(r.Context(), name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// renewHostLease renews the host's etcd lease, granting one (and writing
// its key) when there is none, it ran out, or spec.leaseSeconds changed.
func (s *Server) renewHostLease(ctx context.Context, name string) (api.HostLeaseRenewal, error) {
	hk, _ := api.KindByName("Host")
	hostKey := store.Key(hk, "", name)
	leaseKey := HostLeasePrefix + name
	for attempt := 0; attempt < 3; attempt++ {
		resp, err := s.etcd.Txn(ctx).Then(clientv3.OpGet(hostKey), clientv3.OpGet(leaseKey)).Commit()
		if err != nil {
			return api.HostLeaseRenewal{}, api.NewUnavailable("etcd: %v", err)
		}
		hosts, leases := resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs
		if len(hosts) == 0 {
			return api.HostLeaseRenewal{}, api.NewNotFound("Host", "", name)
		}
		var h api.Host
		if err := json.Unmarshal(hosts[0].Value, &h); err != nil {
			return api.HostLeaseRenewal{}, api.NewInternal("decoding Host %s: %v", name, err)
		}
		h.Spec.Default()
		out := api.HostLeaseRenewal{LeaseSeconds: h.Spec.LeaseSeconds, Phase: h.Status.Phase}
		var rec hostLeaseRecord
		if len(leases) == 1 && json.Unmarshal(leases[0].Value, &rec) == nil &&
			rec.UID == h.Metadata.UID && rec.LeaseSeconds == h.Spec.LeaseSeconds {
			if _, err := s.etcd.KeepAliveOnce(ctx, clientv3.LeaseID(rec.Lease)); err == nil {
				return out, nil
			}
			// Ran out a moment ago (its key is going): grant another.
		}
		g, err := s.etcd.Grant(ctx, int64(h.Spec.LeaseSeconds))
		if err != nil {
			return api.HostLeaseRenewal{}, api.NewUnavailable("etcd: granting a lease: %v", err)
		}
		data, _ := json.Marshal(hostLeaseRecord{UID: h.Metadata.UID, LeaseSeconds: h.Spec.LeaseSeconds, Lease: int64(g.ID)})
		leaseRev := int64(0)
		if len(leases) == 1 {
			leaseRev = leases[0].ModRevision
		}
		// Only for the Host read (not one deleted and made again since),
		// and only if no other beat granted one meanwhile.
		tx, err := s.etcd.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision(hostKey), "=", hosts[0].CreateRevision),
			clientv3.Compare(clientv3.ModRevision(leaseKey), "=", leaseRev),
		).Then(clientv3.OpPut(leaseKey, string(data), clientv3.WithLease(g.ID))).Commit()
		if err != nil || !tx.Succeeded {
			_, _ = s.etcd.Revoke(context.WithoutCancel(ctx), g.ID)
			if err != nil {
				return api.HostLeaseRenewal{}, api.NewUnavailable("etcd: %v", err)
			}
			continue // raced: read again
		}
		if rec.Lease != 0 && rec.Lease != int64(g.ID) {
			_, _ = s.etcd.Revoke(context.WithoutCancel(ctx), clientv3.LeaseID(rec.Lease))
		}
		return out, nil
	}
	return api.HostLeaseRenewal{}, api.NewUnavailable("renewing the lease of host %s: too much contention; try again", name)
}

// hostLeases is what this server knows of every host lease key, for the
// host-liveness controller (controllers.HostLeases).
type hostLeases struct {
	c *clientv3.Client

	mu       sync.Mutex
	uids     map[string]string // host → the uid of the Host its lease is for
	handlers map[int]func(host string)
	next     int
	ready    chan struct{}
	once     sync.Once
}

func newHostLeases(c *clientv3.Client) *hostLeases {
	return &hostLeases{c: c, uids: map[string]string{}, handlers: map[int]func(string){}, ready: make(chan struct{})}
}

// Alive reports whether the Host name with uid holds a lease now.
func (l *hostLeases) Alive(name, uid string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	got, ok := l.uids[name]
	return ok && got == uid
}

// OnChange registers fn, called with a host's name whenever its lease is
// granted or runs out, until stop is called (a leadership term ends).
func (l *hostLeases) OnChange(fn func(host string)) (stop func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id := l.next
	l.next++
	l.handlers[id] = fn
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.handlers, id)
	}
}

// WaitSynced blocks until the first listing is in.
func (l *hostLeases) WaitSynced(ctx context.Context) error {
	select {
	case <-l.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run lists and watches the lease keys until ctx ends.
func (l *hostLeases) run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := l.sync(ctx); err != nil && ctx.Err() == nil {
			slog.Warn("host leases: resyncing", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (l *hostLeases) sync(ctx context.Context) error {
	resp, err := l.c.Get(ctx, HostLeasePrefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	uids := map[string]string{}
	for _, kv := range resp.Kvs {
		var rec hostLeaseRecord
		if json.Unmarshal(kv.Value, &rec) == nil {
			uids[strings.TrimPrefix(string(kv.Key), HostLeasePrefix)] = rec.UID
		}
	}
	l.mu.Lock()
	old := l.uids
	l.uids = uids
	l.mu.Unlock()
	for name := range old {
		if _, ok := uids[name]; !ok {
			l.notify(name)
		}
	}
	for name := range uids {
		if old[name] != uids[name] {
			l.notify(name)
		}
	}
	l.once.Do(func() { close(l.ready) })
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range l.c.Watch(wctx, HostLeasePrefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			name := strings.TrimPrefix(string(ev.Kv.Key), HostLeasePrefix)
			l.mu.Lock()
			if ev.Type == clientv3.EventTypeDelete {
				delete(l.uids, name)
			} else {
				var rec hostLeaseRecord
				if json.Unmarshal(ev.Kv.Value, &rec) == nil {
					l.uids[name] = rec.UID
				}
			}
			l.mu.Unlock()
			l.notify(name)
		}
	}
	return ctx.Err()
}

func (l *hostLeases) notify(name string) {
	l.mu.Lock()
	hs := make([]func(string), 0, len(l.handlers))
	for _, h := range l.handlers {
		hs = append(hs, h)
	}
	l.mu.Unlock()
	for _, h := range hs {
		h(name)
	}
}
