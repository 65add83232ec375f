package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// Recorder writes Events about objects. The same reason and message for
// the same object within a short time bumps the count of the existing
// Event instead of writing another, so a flapping host does not flood the
// store.
//
// By default Eventf writes before it returns. Background makes it queue
// instead, for a few goroutines to write: a controller then does not wait
// for an event's write before its next step. The events of one object are
// written by one goroutine, in order (its timeline); those of different
// objects are written side by side, so a controller that places a
// thousand VMs a second is not held to one write at a time.
type Recorder struct {
	c      *Client
	source string
	now    func() time.Time

	mu     sync.Mutex
	recent map[string]*api.Event // by object uid + reason + message

	queues []chan pendingEvent // nil: write at once
	// dropped counts events dropped since the last warning said so.
	dropped  int
	warnedAt time.Time
}

// pendingEvent is an event as Eventf saw it, the object's identity
// copied since the caller may change the object afterwards.
type pendingEvent struct {
	ref              api.ObjectReference
	typ, reason, msg string
	at               time.Time
}

// queueLength bounds the events waiting for each writer; beyond it they
// are dropped (and counted in a warning now and then), never waited for.
const queueLength = 1024

// writers is how many goroutines write a background recorder's events.
const writers = 8

// dropWarnEvery is how often dropped events are reported.
const dropWarnEvery = 10 * time.Second

// NewRecorder returns a recorder that signs its events with source.
func NewRecorder(c *Client, source string) *Recorder {
	return &Recorder{c: c, source: source, now: time.Now, recent: map[string]*api.Event{}}
}

// dedupWindow is how long a repeat bumps an existing event.
const dedupWindow = 10 * time.Minute

// Eventf records an event about obj. Failures are logged, not returned:
// an event is never worth failing a reconcile for.
func (r *Recorder) Eventf(ctx context.Context, obj api.Object, typ, reason, format string, args ...any) {
	m := obj.GetMetadata()
	ev := pendingEvent{ref: api.ObjectReference{Kind: obj.GetTypeMeta().Kind, Name: m.Name, Tenant: m.Tenant, UID: m.UID},
		typ: typ, reason: reason, msg: fmt.Sprintf(format, args...), at: r.now().UTC().Truncate(time.Millisecond)}
	if r.queues != nil {
		select {
		case r.queues[writerOf(m.UID, m.Tenant+"/"+m.Name)] <- ev:
		default:
			r.mu.Lock()
			r.dropped++
			n, now := r.dropped, r.now()
			warn := now.Sub(r.warnedAt) >= dropWarnEvery
			if warn {
				r.dropped, r.warnedAt = 0, now
			}
			r.mu.Unlock()
			if warn {
				slog.Warn("dropping events: too many waiting to be written", "dropped", n, "last", api.Ref(obj), "reason", reason)
			}
		}
		return
	}
	r.write(ctx, ev)
}

// writerOf picks the writer of an object's events (by uid, else by name).
func writerOf(uid, name string) int {
	if uid == "" {
		uid = name
	}
	var h uint32 = 2166136261 // FNV-1a
	for i := 0; i < len(uid); i++ {
		h = (h ^ uint32(uid[i])) * 16777619
	}
	return int(h % writers)
}

// Background starts writing events from a queue until ctx ends, then
// writes what is still queued (for at most a few seconds), and returns r.
func (r *Recorder) Background(ctx context.Context) *Recorder {
	r.queues = make([]chan pendingEvent, writers)
	// Writes outlive ctx a little, so that the event being written and
	// those queued when it ends are not lost.
	wctx := context.WithoutCancel(ctx)
	for i := range r.queues {
		q := make(chan pendingEvent, queueLength)
		r.queues[i] = q
		go func() {
			for {
				select {
				case ev := <-q:
					r.write(wctx, ev)
				case <-ctx.Done():
					dctx, cancel := context.WithTimeout(wctx, 3*time.Second)
					defer cancel()
					for {
						select {
						case ev := <-q:
							r.write(dctx, ev)
						default:
							return
						}
					}
				}
			}
		}()
	}
	return r
}

func (r *Recorder) write(ctx context.Context, ev pendingEvent) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.record(ctx, ev); err != nil {
		slog.Warn("recording event failed", "object", ev.ref.Kind+"/"+ev.ref.Name, "reason", ev.reason, "err", err)
	}
}

func (r *Recorder) record(ctx context.Context, pe pendingEvent) error {
	now, typ, reason, msg := pe.at, pe.typ, pe.reason, pe.msg
	dedup := pe.ref.UID + "\x00" + reason + "\x00" + msg
	r.mu.Lock()
	prev := r.recent[dedup]
	r.mu.Unlock()
	if prev != nil && prev.Spec.LastTimestamp != nil && now.Sub(*prev.Spec.LastTimestamp) < dedupWindow {
		patch := map[string]any{"spec": map[string]any{"count": prev.Spec.Count + 1, "lastTimestamp": now}}
		out, err := r.c.Patch(ctx, "Event", prev.Metadata.Tenant, prev.Metadata.Name, patch, false)
		if err == nil {
			r.remember(dedup, out.(*api.Event))
			return nil
		}
		if !api.IsNotFound(err) {
			return err
		}
	}
	ev := &api.Event{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Event"}}
	ev.Metadata.Name = EventName(pe.ref.Name)
	ev.Metadata.Tenant = pe.ref.Tenant
	ev.Spec = api.EventSpec{
		InvolvedObject: pe.ref,
		Type:           typ, Reason: reason, Message: msg, Source: r.source, Count: 1,
		FirstTimestamp: &now, LastTimestamp: &now,
	}
	out, err := r.c.Create(ctx, ev)
	if err != nil {
		return err
	}
	r.remember(dedup, out.(*api.Event))
	return nil
}

func (r *Recorder) remember(key string, ev *api.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.recent) > 4096 {
		r.recent = map[string]*api.Event{}
	}
	r.recent[key] = ev
}

// EventName is a new event's name: unique per event, and sorting by
// time for one object.
func EventName(object string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := fmt.Sprintf("%s-%x%s", object, time.Now().UnixNano(), hex.EncodeToString(b[:]))
	if len(name) > 63 {
		name = name[len(name)-63:]
		for name[0] == '-' || name[0] == '.' {
			name = name[1:]
		}
	}
	return name
}
