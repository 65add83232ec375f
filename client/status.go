package client

import (
	"context"
	"encoding/json"
	"fmt"

	api "hearth.dev/hearth/api/v1alpha1"
)

// Status is written one way in Hearth: WriteStatus, by every controller,
// agent and service, for every kind. It exists so that no writer
//
//   - writes when nothing changed (each write is an etcd revision, a
//     watch event for every watcher, and a reconcile for whoever watches
//     the kind: a writer that wrote unchanged status would wake itself
//     up for ever);
//   - overwrites what another writer put in the same status since it read
//     it (the agent and the scheduler share a VM's conditions, hosts an
//     Image's list of hosts);
//   - leaves a field set that it meant to clear (a merge patch cannot
//     remove a field that its JSON omits: a stopped VM's pid);
//   - reads back its own older version from its cache, and so writes on
//     a version that is stale by its own hand.
//
// The exception is PatchStatus, for the few fields one writer owns alone
// and writes often without reading (heartbeats, allocations, what a boot
// service observes), with the typed patches of api/v1alpha1.

// statusAttempts is how many times WriteStatus reads again and re-applies
// its change after a conflict before it gives up with the conflict.
const statusAttempts = 5

// WriteStatus applies change to a copy of obj and writes the copy's whole
// status (PUT …/status) unless change left it as it was. The write is
// conditional on obj's resourceVersion; when someone else wrote the
// object since, it reads the object again and applies change to that,
// up to a few times, so change must set what the caller owns and leave
// the rest (other writers' conditions) as it finds it. The object written
// goes into cache (if not nil), so the caller's next read from it is not
// the version it just replaced.
//
// It returns the object as stored and whether it wrote. A NotFound error
// means the object is gone, or was replaced by another of the same name
// (whose status change was not meant for).
func WriteStatus[T api.Object](ctx context.Context, c *Client, cache *Informer, obj T, change func(T)) (T, bool, error) {
	cur := obj
	uid := obj.GetMetadata().UID
	for attempt := 1; ; attempt++ {
		next, ok := api.DeepCopy(cur).(T)
		if !ok {
			var zero T
			return zero, false, fmt.Errorf("WriteStatus: %T is not a stored kind", cur)
		}
		change(next)
		if StatusEqual(cur.StatusAny(), next.StatusAny()) {
			return cur, false, nil
		}
		out, err := c.UpdateStatus(ctx, next)
		if err == nil {
			if cache != nil {
				cache.Observe(out)
			}
			return out.(T), true, nil
		}
		if !api.IsConflict(err) || attempt == statusAttempts {
			return cur, false, err
		}
		m := cur.GetMetadata()
		fresh, err := c.Get(ctx, cur.GetTypeMeta().Kind, m.Tenant, m.Name)
		if err != nil {
			return cur, false, err
		}
		if uid != "" && fresh.GetMetadata().UID != uid {
			return cur, false, api.NewNotFound(cur.GetTypeMeta().Kind, m.Tenant, m.Name)
		}
		if cache != nil {
			cache.Observe(fresh)
		}
		cur = fresh.(T)
	}
}

// StatusEqual compares two statuses as the API stores them (as JSON).
func StatusEqual(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

// PatchStatus merge-patches part of an object's status, unconditionally:
// status is one of the typed patches of api/v1alpha1 (HostHeartbeat,
// HostAllocation, MachineFacts, …), whose fields the writer alone owns.
func (c *Client) PatchStatus(ctx context.Context, kind, tenant, name string, status any) (api.Object, error) {
	return c.Patch(ctx, kind, tenant, name, struct {
		Status any `json:"status"`
	}{status}, true)
}
