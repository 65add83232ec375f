package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/controllers"
	"hearth.dev/hearth/server/servertest"
)

// TestGarbageCollectorEvents: with the shared informers (which keep an
// Event compacted), the collector deletes an Event once it is older than
// the TTL, counted from its lastTimestamp, keeps it until then, and
// deletes a deleted tenant's Events.
func TestGarbageCollectorEvents(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	env.Tenant("gone")
	ctx := servertest.Ctx(t)
	vm := servertest.Example("VirtualMachine", "lab")
	event := func(tenant, name string, last time.Time) {
		t.Helper()
		ev := &api.Event{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Event"},
			Metadata: api.ObjectMeta{Name: name, Tenant: tenant},
			Spec: api.EventSpec{InvolvedObject: api.ObjectReference{Kind: "VirtualMachine", Name: vm.GetMetadata().Name, Tenant: tenant},
				Type: api.EventNormal, Reason: "Started", Message: "QEMU started", FirstTimestamp: &last, LastTimestamp: &last}}
		if _, err := env.Admin.Create(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	event("lab", "old", now.Add(-time.Hour))
	event("lab", "fresh", now)
	event("gone", "orphan", now)
	const ttl = 4 * time.Second
	rctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inf := controllers.NewInformers(rctx, env.Admin)
	inf.Warm()
	gc := &controllers.GarbageCollector{Client: env.Admin, Recorder: client.NewRecorder(env.Admin, "test"), Informers: inf, EventTTL: ttl}
	done := make(chan struct{})
	go func() { defer close(done); gc.Run(rctx) }()
	defer func() { cancel(); <-done }()
	exists := func(tenant, name string) bool {
		t.Helper()
		_, err := env.Admin.Get(ctx, "Event", tenant, name)
		if err != nil && !api.IsNotFound(err) {
			t.Fatal(err)
		}
		return err == nil
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		if exists("lab", "old") {
			return fmt.Errorf("the expired event is still there")
		}
		return nil
	})
	if !exists("lab", "fresh") || !exists("gone", "orphan") {
		t.Fatalf("an event within its TTL was deleted")
	}
	if _, err := env.Admin.Delete(ctx, "Tenant", "", "gone"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		if exists("gone", "orphan") {
			return fmt.Errorf("the deleted tenant's event is still there")
		}
		return nil
	})
	servertest.Eventually(t, ttl+5*time.Second, func() error {
		if exists("lab", "fresh") {
			return fmt.Errorf("the event is still there %s after its lastTimestamp", time.Since(now).Round(time.Second))
		}
		return nil
	})
	if d := time.Since(now); d < ttl {
		t.Fatalf("the fresh event went %s after its lastTimestamp, before its TTL of %s", d, ttl)
	}
}
