package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/store"
)

// Bindings in batches (POST api.BindingsPath): the scheduler binds the
// VMs it has decided together, in one etcd transaction, where one PATCH
// each cost a transaction (and so a raft entry and an fsync) apiece, and
// a second one for each VM's Scheduled event. Each binding is still the
// PATCH it replaces: conditional on the VM's resourceVersion, authorized
// as an update of that VM by the caller, validated and admitted, the VM
// made Scheduled in the same write (api.FollowSpec); and each fails on
// its own (store.UpdateBatch), so one VM changed under the scheduler is
// decided again while the others are bound.

// maxBindings bounds one request.
const maxBindings = 500

// bindingEventSource is the source of the Scheduled events written with
// bindings: the server's, as the scheduler's Recorder says.
const bindingEventSource = "hearth-server"

func (s *Server) serveBindings(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	// Hosts' writes beyond their limit wait while bindings are written
	// (fairqueue.go).
	s.hostWrites.hold()
	defer s.hostWrites.unhold()
	data, err := readBody(r)
	if err != nil {
		return err
	}
	var req api.BindingRequest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return api.NewBadRequest("a BindingRequest must be {\"items\": [{\"tenant\", \"name\", \"resourceVersion\", \"host\"}, ...]}: %v", err)
	}
	if len(req.Items) > maxBindings {
		return api.NewInvalid("BindingRequest", "", api.FieldErrors{{Field: "items", Detail: fmt.Sprintf("%d bindings; at most %d in one request", len(req.Items), maxBindings)}})
	}
	k, _ := api.KindByName("VirtualMachine")
	out := make([]api.BindingOutcome, len(req.Items))
	var updates []store.BatchUpdate
	var which []int
	targets := make([]target, len(req.Items))
	for i, it := range req.Items {
		t := target{kind: k, tenant: it.Tenant, name: it.Name}
		targets[i] = t
		if err := checkBinding(i, it); err != nil {
			out[i].Error = statusOf(err)
			continue
		}
		rv, err := store.ParseRV(it.ResourceVersion)
		if err != nil {
			out[i].Error = statusOf(err)
			continue
		}
		ctx := store.WithGuards(r.Context())
		host := it.Host
		updates = append(updates, store.BatchUpdate{Tenant: it.Tenant, Name: it.Name, Precondition: rv, Ctx: ctx,
			Fn: func(cur api.Object) (api.Object, error) {
				// What the Binding patch would make of the stored VM: a
				// shallow copy with its own spec.host is enough, since
				// mergeSpecUpdate copies it whole before changing it.
				in := *cur.(*api.VirtualMachine)
				in.Spec.Host = host
				return s.mergeSpecUpdate(ctx, p, t, &in, cur)
			},
			Also: func(next api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
				return s.store.CreateOps(scheduledEvent(next.(*api.VirtualMachine), host))
			},
		})
		which = append(which, i)
	}
	for j, res := range s.store.UpdateBatch(r.Context(), k, updates) {
		i := which[j]
		if res.Err != nil {
			out[i].Error = statusOf(s.hideForbidden(r.Context(), p, targets[i], res.Err))
			continue
		}
		out[i].ResourceVersion = res.Obj.GetMetadata().ResourceVersion
	}
	writeJSON(w, http.StatusOK, api.BindingResponse{Items: out})
	return nil
}

// checkBinding refuses an item that names no VM or no host.
func checkBinding(i int, it api.BindingItem) error {
	var es api.FieldErrors
	for _, f := range []struct{ field, value string }{{"tenant", it.Tenant}, {"name", it.Name}, {"resourceVersion", it.ResourceVersion}, {"host", it.Host}} {
		if f.value == "" {
			es = append(es, api.FieldError{Field: fmt.Sprintf("items[%d].%s", i, f.field), Detail: "required"})
		}
	}
	if len(es) > 0 {
		return api.NewInvalid("VirtualMachine", it.Name, es)
	}
	return nil
}

// scheduledEvent is the Normal Scheduled event of a VM bound to host, as
// the scheduler's Recorder would have written it.
func scheduledEvent(vm *api.VirtualMachine, host string) *api.Event {
	now := time.Now().UTC().Truncate(time.Millisecond)
	ev := &api.Event{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Event"}}
	ev.Metadata.Name = client.EventName(vm.Metadata.Name)
	ev.Metadata.Tenant = vm.Metadata.Tenant
	ev.Spec = api.EventSpec{
		InvolvedObject: api.ObjectReference{Kind: "VirtualMachine", Name: vm.Metadata.Name, Tenant: vm.Metadata.Tenant, UID: vm.Metadata.UID},
		Type:           api.EventNormal, Reason: "Scheduled", Message: "placed on " + host, Source: bindingEventSource, Count: 1,
		FirstTimestamp: &now, LastTimestamp: &now,
	}
	return ev
}
