package server_test

import (
	"context"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// BenchmarkVMStatusWrite writes a placed VM's status (PUT …/status), as
// its agent does when it starts: the write each started VM costs the
// server, twice before issue 16's fifth pass. Client and server in one
// process, no controllers; the allocations per write are the figure to
// compare (the time is the machine's).
//
//	go test ./server -run '^$' -bench VMStatusWrite -benchmem -benchtime 2000x
func BenchmarkVMStatusWrite(b *testing.B) {
	env := benchLab(b, oneLAN()...)
	ctx := context.Background()
	c := env.Admin
	vm := nicVM("lab", "web", api.VMNIC{Network: "lan"})
	vm.Spec.Host = "h1"
	o, err := c.Create(ctx, vm)
	if err != nil {
		b.Fatal(err)
	}
	vm = o.(*api.VirtualMachine)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		now := time.Now().UTC()
		vm.Status.Phase = api.VMRunning
		vm.Status.PID = 1000 + i
		vm.Status.StartedAt = &now
		vm.Status.SetCondition(api.Condition{Type: api.ConditionReady, Status: api.ConditionTrue, Reason: api.ReasonVMRunning, Message: "running as asked"}, now)
		out, err := c.UpdateStatus(ctx, vm)
		if err != nil {
			b.Fatal(err)
		}
		vm = out.(*api.VirtualMachine)
	}
}
