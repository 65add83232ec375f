package server_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server"
	"hearth.dev/hearth/server/servertest"
)

// BenchmarkPlacementUnderHostWrites places 4,000 waiting VMs on 50
// hosts with a scheduler (a controller's client, as the leader's) while
// 1,000 writers rewrite their VMs' status as fast as the server
// takes them, as a thousand agents reporting Running do: "queued" with
// hosts' writes waiting their turn beyond the server's limit while
// bindings are in flight (as the server runs), "unbounded" with every
// one run at once. Reports placements/s and the
// hosts' status writes/s meanwhile; one process, so the figures are
// the machine's, but the two run back to back.
//
//	go test ./server -run '^$' -bench PlacementUnderHostWrites -benchtime 1x
func BenchmarkPlacementUnderHostWrites(b *testing.B) {
	for _, q := range []struct {
		name  string
		limit int
	}{{"unbounded", 1 << 20}, {"queued", 0}} {
		b.Run(q.name, func(b *testing.B) {
			env := servertest.Start(b, servertest.WithoutControllers())
			if q.limit > 0 {
				server.SetHostWriteLimit(env.Server, q.limit)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			env.Tenant("lab")
			env.Tenant("busy")
			const hosts, vms, writers = 50, 4000, 1000
			hcs := make([]*client.Client, hosts)
			for i := range hosts {
				name := fmt.Sprintf("h%02d", i)
				jr, err := env.Join(env.JoinToken(api.TokenRequest{}).Token, api.JoinRequest{Host: name})
				if err != nil {
					b.Fatal(err)
				}
				hcs[i] = env.ClientWithToken(jr.Token, "")
				if _, err := env.Admin.Patch(ctx, "Host", "", name, map[string]any{"spec": map[string]any{"leaseSeconds": 3600, "cpuOvercommit": 64}}, false); err != nil {
					b.Fatal(err)
				}
				st := map[string]any{"phase": api.HostReady, "cpus": 64, "memory": api.Bytes(256 << 30), "lastHeartbeat": time.Now().UTC()}
				if _, err := hcs[i].Patch(ctx, "Host", "", name, map[string]any{"status": st}, true); err != nil {
					b.Fatal(err)
				}
			}
			// The writers' VMs, placed already, in another tenant.
			busy := make([]*api.VirtualMachine, writers)
			for i := range writers {
				vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
					Metadata: api.ObjectMeta{Name: fmt.Sprintf("busy-%03d", i), Tenant: "busy"},
					Spec: api.VirtualMachineSpec{CPUs: 1, Memory: 64 << 20, Host: fmt.Sprintf("h%02d", i%hosts),
						Boot: api.VMBoot{From: api.BootFromKernel, Kernel: &api.BootFile{Image: "vmlinuz"}}}}
				o, err := env.Admin.Create(ctx, vm)
				if err != nil {
					b.Fatal(err)
				}
				busy[i] = o.(*api.VirtualMachine)
			}
			var wg sync.WaitGroup
			names := make(chan int, vms)
			for i := range vms {
				names <- i
			}
			close(names)
			for range 16 {
				wg.Go(func() {
					for i := range names {
						vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
							Metadata: api.ObjectMeta{Name: fmt.Sprintf("p-%05d", i), Tenant: "lab"},
							Spec: api.VirtualMachineSpec{CPUs: 1, Memory: 64 << 20,
								Boot: api.VMBoot{From: api.BootFromKernel, Kernel: &api.BootFile{Image: "vmlinuz"}}}}
						if _, err := env.Admin.Create(ctx, vm); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			// The hosts' writers, until placement is done.
			wctx, stopWriters := context.WithCancel(ctx)
			var written atomic.Int64
			var ww sync.WaitGroup
			for i := range writers {
				ww.Go(func() {
					vm, c := busy[i], hcs[i%hosts]
					for n := 0; wctx.Err() == nil; n++ {
						vm.Status.Phase, vm.Status.PID = api.VMRunning, 1000+n
						out, err := c.UpdateStatus(wctx, vm)
						if err != nil {
							if wctx.Err() == nil {
								b.Error(err)
							}
							return
						}
						vm = out.(*api.VirtualMachine)
						written.Add(1)
					}
				})
			}
			time.Sleep(time.Second) // the writers at full speed
			b.ResetTimer()
			w0 := written.Load()
			elapsed := env.PlaceAll(ctx, "lab", 50*time.Millisecond)
			w := written.Load() - w0
			b.StopTimer()
			stopWriters()
			ww.Wait()
			b.ReportMetric(float64(vms)/elapsed.Seconds(), "placements/s")
			b.ReportMetric(float64(w)/elapsed.Seconds(), "hostwrites/s")
		})
	}
}
