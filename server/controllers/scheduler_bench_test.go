package controllers_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

// BenchmarkSchedulerPlacement measures placement alone, on a real server
// with no agents: 2,000 VMs waiting on 50 hosts (10,000 on 1,000), then
// a scheduler started, timed until the last is bound (placements/s).
//
//	go test ./server/controllers -run '^$' -bench SchedulerPlacement -benchtime 1x
func BenchmarkSchedulerPlacement(b *testing.B) {
	for _, size := range []struct{ hosts, vms int }{{50, 2000}, {1000, 10000}} {
		b.Run(fmt.Sprintf("hosts=%d/vms=%d", size.hosts, size.vms), func(b *testing.B) { benchPlacement(b, size.hosts, size.vms) })
	}
}

func benchPlacement(b *testing.B, hosts, vms int) {
	env := servertest.Start(b, servertest.WithoutControllers())
	env.Tenant("lab")
	for i := range hosts {
		addHost(b, env, fmt.Sprintf("h%04d", i), api.HostReady, 64, 256<<30, nil)
	}
	for n := range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		var wg sync.WaitGroup
		names := make(chan int, vms)
		for i := range vms {
			names <- i
		}
		close(names)
		for range 16 {
			wg.Go(func() {
				for i := range names {
					if _, err := env.Admin.Create(ctx, newVM("lab", fmt.Sprintf("r%d-%05d", n, i), 1, 64<<20, nil)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		b.ResetTimer()
		elapsed := env.PlaceAll(ctx, "lab", 100*time.Millisecond)
		b.StopTimer()
		b.ReportMetric(float64(vms)/elapsed.Seconds(), "placements/s")
		for _, o := range mustList(b, env) {
			if _, err := env.Admin.Delete(ctx, "VirtualMachine", "lab", o.GetMetadata().Name); err != nil {
				b.Fatal(err)
			}
		}
		cancel()
	}
}

func mustList(b *testing.B, env *servertest.Env) []api.Object {
	objs, _, err := env.Admin.List(context.Background(), "VirtualMachine", "lab", client.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return objs
}
