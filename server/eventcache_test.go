package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server"
	"hearth.dev/hearth/server/servertest"
)

// TestHostEventsFromCache: a host's event is authorized against the
// object it is about as the server's cache holds it, and written only if
// etcd still holds that version: a cache behind etcd (the VM deleted and
// made again on another host, the cache still holding the old one on
// this host) never lets a host write about a VM that is no longer
// placed on it, whether the event names the old uid or none. Where the
// cache is right, the rules are the same as from etcd (TestHostEvents):
// a host may not write about another host's VM.
func TestHostEventsFromCache(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	env.Tenant("lab")
	h1, h2 := env.Host("h1"), env.Host("h2")
	env.Needs("VirtualMachine", "lab")
	place := func(name, host string) *api.VirtualMachine {
		t.Helper()
		vm := servertest.Example("VirtualMachine", "lab").(*api.VirtualMachine)
		vm.Metadata.Name, vm.Spec.Host = name, host
		created, err := env.Admin.Create(ctx, vm)
		if err != nil {
			t.Fatal(err)
		}
		return created.(*api.VirtualMachine)
	}
	onH1, onH2 := place("on-h1", "h1"), place("on-h2", "h2")

	// The cache: what etcd holds, unless a stale copy is set.
	var mu sync.Mutex
	stale := map[string]api.Object{}
	asked := 0
	server.SetInvolvedCache(env.Server, func(kind, key string) (api.Object, bool) {
		mu.Lock()
		asked++
		o, ok := stale[key]
		mu.Unlock()
		if ok {
			return o, true
		}
		tenant, name := client.SplitKey(key)
		o, err := env.Admin.Get(context.Background(), kind, tenant, name)
		return o, err == nil
	})
	event := func(about *api.VirtualMachine, uid bool) *api.Event {
		ref := api.ObjectReference{Kind: "VirtualMachine", Name: about.Metadata.Name, Tenant: "lab"}
		if uid {
			ref.UID = about.Metadata.UID
		}
		return &api.Event{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Event"},
			Metadata: api.ObjectMeta{Name: fmt.Sprintf("ev-%d", time.Now().UnixNano()), Tenant: "lab"},
			Spec:     api.EventSpec{Source: "host/h1", Reason: "Started", Type: api.EventNormal, InvolvedObject: ref}}
	}
	if _, err := h1.Create(ctx, event(onH1, true)); err != nil {
		t.Fatalf("h1's event about its VM, from the cache: %v", err)
	}
	if _, err := h1.Create(ctx, event(onH2, true)); !api.IsForbidden(err) {
		t.Fatalf("h1's event about h2's VM, from the cache: got %v, want Forbidden", err)
	}
	mu.Lock()
	if asked == 0 {
		t.Fatal("the cache was never asked")
	}
	mu.Unlock()

	// on-h1 deleted and made again on h2; the cache still has the old
	// one, on h1.
	if _, err := env.Admin.Delete(ctx, "VirtualMachine", "lab", "on-h1"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		if _, err := env.Admin.Get(ctx, "VirtualMachine", "lab", "on-h1"); !api.IsNotFound(err) {
			return fmt.Errorf("on-h1 not gone yet: %v", err)
		}
		return nil
	})
	moved := place("on-h1", "h2")
	mu.Lock()
	stale["lab/on-h1"] = onH1
	mu.Unlock()
	for _, uid := range []bool{true, false} {
		if _, err := h1.Create(ctx, event(onH1, uid)); !api.IsForbidden(err) {
			t.Errorf("h1's event about on-h1 (uid named: %v) after it moved to h2, the cache behind: got %v, want Forbidden", uid, err)
		}
	}
	// And the host it is on now may, though the cache says h1.
	ev := event(moved, true)
	ev.Spec.Source = "host/h2"
	if _, err := h2.Create(ctx, ev); err != nil {
		t.Fatalf("h2's event about on-h1, now on h2, the cache behind: %v", err)
	}
}
