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
type Recorder struct {
	c      *Client
	source string
	now    func() time.Time

	mu     sync.Mutex
	recent map[string]*api.Event // by object uid + reason + message
}

// NewRecorder returns a recorder that signs its events with source.
func NewRecorder(c *Client, source string) *Recorder {
	return &Recorder{c: c, source: source, now: time.Now, recent: map[string]*api.Event{}}
}

// dedupWindow is how long a repeat bumps an existing event.
const dedupWindow = 10 * time.Minute

// Eventf records an event about obj. Failures are logged, not returned:
// an event is never worth failing a reconcile for.
func (r *Recorder) Eventf(ctx context.Context, obj api.Object, typ, reason, format string, args ...any) {
	if err := r.record(ctx, obj, typ, reason, fmt.Sprintf(format, args...)); err != nil {
		slog.Warn("recording event failed", "object", api.Ref(obj), "reason", reason, "err", err)
	}
}

func (r *Recorder) record(ctx context.Context, obj api.Object, typ, reason, msg string) error {
	m := obj.GetMetadata()
	now := r.now().UTC().Truncate(time.Millisecond)
	dedup := m.UID + "\x00" + reason + "\x00" + msg
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
	ev.Metadata.Name = eventName(m.Name)
	ev.Metadata.Tenant = m.Tenant
	ev.Spec = api.EventSpec{
		InvolvedObject: api.ObjectReference{Kind: obj.GetTypeMeta().Kind, Name: m.Name, Tenant: m.Tenant, UID: m.UID},
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

// eventName is unique per event and sorts by time for one object.
func eventName(object string) string {
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
