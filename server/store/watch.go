package store

import (
	"bytes"
	"context"
	"fmt"
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
	// Raw is the object's stored JSON with its resourceVersion set, for
	// watchers that pass objects on without looking inside (WatchRaw).
	// PrevRaw is the previous state's, with Prev and Raw both asked for.
	Raw, PrevRaw []byte
	// Key is the object's etcd key.
	Key string
	Rev int64
	Err error
}

// WatchOptions say how much of each change a watcher needs decoded.
type WatchOptions struct {
	// Prev decodes each change's previous state into Event.Prev, which
	// costs a second decode per event; watchers need it only to tell when
	// an object stops matching a selector.
	Prev bool
	// Raw skips decoding: events carry Raw instead of Object (and, with
	// Prev, PrevRaw instead of Prev). A watcher that forwards every event
	// unfiltered saves a decode and an encode.
	Raw bool
	// GoOn makes a change this server cannot read (an object a newer
	// Hearth wrote) an Error event with the object's Key and Rev, after
	// which the watch goes on, rather than the end of the watch: for a
	// watcher that serves many (the server's watch feeds), which ends
	// only the watches that would see the object.
	GoOn bool
}

// Watch streams changes under prefix after revision from (0: from now).
// The channel closes when ctx ends or after an Error event. A revision
// etcd has compacted gives a Gone error at once, so the caller can tell
// the client to list again.
func (s *Store) Watch(ctx context.Context, k *api.KindInfo, prefix string, from int64, o WatchOptions) (<-chan Event, error) {
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
				e, err := s.translate(k, ev, o)
				if err != nil && o.GoOn {
					if !send(Event{Type: Error, Err: err, Key: string(ev.Kv.Key), Rev: ev.Kv.ModRevision}) {
						return
					}
					continue
				}
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

func (s *Store) translate(k *api.KindInfo, ev *clientv3.Event, o WatchOptions) (Event, error) {
	e := Event{Rev: ev.Kv.ModRevision, Key: string(ev.Kv.Key)}
	switch {
	case ev.Type == clientv3.EventTypeDelete:
		e.Type = Deleted
	case ev.IsCreate():
		e.Type = Added
	default:
		e.Type = Modified
	}
	// A deletion's last state is its previous value.
	value := ev.Kv.Value
	if e.Type == Deleted {
		if ev.PrevKv == nil {
			return e, fmt.Errorf("watch: deletion of %s without its last state", ev.Kv.Key)
		}
		value = ev.PrevKv.Value
	}
	if o.Raw {
		plain, err := s.open(k, ev.Kv.Key, value)
		if err != nil {
			return e, err
		}
		// Passed on unread, so nothing is dropped; but an object of
		// another apiVersion is refused as decode refuses it.
		if !bytes.HasPrefix(plain, storedPrefix) {
			if _, err := s.decode(k, ev.Kv.Key, value, ev.Kv.ModRevision); err != nil {
				return e, err
			}
		}
		e.Raw = WithResourceVersion(plain, ev.Kv.ModRevision)
		if o.Prev && ev.PrevKv != nil && e.Type != Deleted {
			prev, err := s.open(k, ev.PrevKv.Key, ev.PrevKv.Value)
			if err != nil {
				return e, err
			}
			e.PrevRaw = WithResourceVersion(prev, ev.PrevKv.ModRevision)
		}
		return e, nil
	}
	obj, err := s.decode(k, ev.Kv.Key, value, ev.Kv.ModRevision)
	if err != nil {
		return e, err
	}
	e.Object = obj
	if o.Prev && ev.PrevKv != nil && e.Type != Deleted {
		if e.Prev, err = s.decode(k, ev.PrevKv.Key, ev.PrevKv.Value, ev.PrevKv.ModRevision); err != nil {
			return e, err
		}
	}
	return e, nil
}

// WithResourceVersion returns stored object JSON with its resourceVersion
// set, without decoding it. Stored objects are written by encode, so they
// begin with apiVersion and kind and then "metadata":{ with no
// resourceVersion in it.
func WithResourceVersion(stored []byte, rev int64) []byte {
	const marker = `"metadata":{`
	i := bytes.Index(stored, []byte(marker))
	if i < 0 {
		return stored
	}
	i += len(marker)
	rv := `"resourceVersion":"` + strconv.FormatInt(rev, 10) + `"`
	out := make([]byte, 0, len(stored)+len(rv)+1)
	out = append(out, stored[:i]...)
	out = append(out, rv...)
	if stored[i] != '}' {
		out = append(out, ',')
	}
	return append(out, stored[i:]...)
}
