package store

import (
	"context"
	"strconv"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
)

// EventType says what happened to an object in a watch.
type EventType string

const (
	Added    EventType = "ADDED"
	Modified EventType = "MODIFIED"
	Deleted  EventType = "DELETED"
	// Bookmark carries only a resourceVersion: nothing changed up to it,
	// so a client resuming later may start there.
	Bookmark EventType = "BOOKMARK"
	// Error ends a watch; Err says why (Gone after compaction).
	Error EventType = "ERROR"
)

// Event is one change seen by a watch. Object is the new state (for
// Deleted, the last state); Prev is the state before, when there was one.
type Event struct {
	Type   EventType
	Object api.Object
	Prev   api.Object
	Rev    int64
	Err    error
}

// Watch streams changes under prefix after revision from (0: from now).
// withPrev also decodes each change's previous state into Event.Prev,
// which costs a second decode per event; watchers need it only to tell
// when an object stops matching a selector.
// The channel closes when ctx ends or after an Error event. A revision
// etcd has compacted gives a Gone error at once, so the caller can tell
// the client to list again.
func (s *Store) Watch(ctx context.Context, k *api.KindInfo, prefix string, from int64, withPrev bool) (<-chan Event, error) {
	if from > 0 {
		// A read at the revision fails fast when it is compacted, before
		// the caller has promised the client a stream.
		if _, err := s.c.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithCountOnly()); err != nil {
			if err == rpctypes.ErrCompacted {
				return nil, api.NewGone("resourceVersion %d is too old (etcd has compacted it): list again and watch from the list's resourceVersion", from)
			}
			if err != rpctypes.ErrFutureRev {
				return nil, unavailable(err)
			}
		}
	}
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithProgressNotify()}
	if from > 0 {
		opts = append(opts, clientv3.WithRev(from+1))
	}
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.c.Watch(ctx, prefix, opts...)
	out := make(chan Event, 64)
	go func() {
		defer cancel()
		defer close(out)
		send := func(e Event) bool {
			select {
			case out <- e:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for resp := range wch {
			if resp.CompactRevision != 0 {
				send(Event{Type: Error, Err: api.NewGone("resourceVersion %d is too old (etcd compacted up to %d): list again", from, resp.CompactRevision)})
				return
			}
			if err := resp.Err(); err != nil {
				send(Event{Type: Error, Err: unavailable(err)})
				return
			}
			if resp.IsProgressNotify() {
				if !send(Event{Type: Bookmark, Rev: resp.Header.Revision}) {
					return
				}
				continue
			}
			for _, ev := range resp.Events {
				e, err := translate(k, ev, withPrev)
				if err != nil {
					send(Event{Type: Error, Err: err})
					return
				}
				if !send(e) {
					return
				}
			}
		}
		if ctx.Err() == nil {
			send(Event{Type: Error, Err: api.NewUnavailable("watch ended: etcd connection lost")})
		}
	}()
	return out, nil
}

func translate(k *api.KindInfo, ev *clientv3.Event, withPrev bool) (Event, error) {
	e := Event{Rev: ev.Kv.ModRevision}
	// A deletion's last state is its previous value, so it is always decoded.
	if ev.PrevKv != nil && (withPrev || ev.Type == clientv3.EventTypeDelete) {
		prev, err := decode(k, ev.PrevKv.Value, ev.PrevKv.ModRevision)
		if err != nil {
			return e, err
		}
		e.Prev = prev
	}
	switch {
	case ev.Type == clientv3.EventTypeDelete:
		e.Type = Deleted
		if e.Prev != nil {
			e.Object = api.DeepCopy(e.Prev)
			e.Object.GetMetadata().ResourceVersion = strconv.FormatInt(ev.Kv.ModRevision, 10)
		} else {
			// Without the previous value we still know which key went.
			e.Object = k.New()
		}
		return e, nil
	case ev.IsCreate():
		e.Type = Added
	default:
		e.Type = Modified
	}
	obj, err := decode(k, ev.Kv.Value, ev.Kv.ModRevision)
	e.Object = obj
	return e, err
}
