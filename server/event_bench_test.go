package server_test

import (
	"context"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

// BenchmarkHostEventCreate records an event about a VM placed on the
// host, by the host (POST …/events), as each started VM's agent does
// (Started): "fromCache" with the controllers' informers running, so
// the VM is read from the server's cache, "fromEtcd" without them. Client
// and server in one process; the allocations per event are the figure to
// compare (the time is the machine's).
//
//	go test ./server -run '^$' -bench HostEventCreate -benchmem -benchtime 2000x
func BenchmarkHostEventCreate(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts []servertest.Option
	}{{"fromCache", nil}, {"fromEtcd", []servertest.Option{servertest.WithoutControllers()}}} {
		b.Run(bc.name, func(b *testing.B) {
			env := servertest.Start(b, bc.opts...)
			env.Tenant("lab")
			env.Needs("VirtualMachine", "lab")
			h1 := env.Host("h1")
			ctx := context.Background()
			vm := servertest.Example("VirtualMachine", "lab").(*api.VirtualMachine)
			vm.Metadata.Name, vm.Spec.Host = "web", "h1"
			o, err := env.Admin.Create(ctx, vm)
			if err != nil {
				b.Fatal(err)
			}
			vm = o.(*api.VirtualMachine)
			ev := &api.Event{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Event"}, Metadata: api.ObjectMeta{Tenant: "lab"},
				Spec: api.EventSpec{Source: "host/h1", Reason: "Started", Type: api.EventNormal, Message: "QEMU started (pid 1, tcg)", Count: 1,
					InvolvedObject: api.ObjectReference{Kind: "VirtualMachine", Name: "web", Tenant: "lab", UID: vm.Metadata.UID}}}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				ev.Metadata.Name = client.EventName("web")
				if _, err := h1.Create(ctx, ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
