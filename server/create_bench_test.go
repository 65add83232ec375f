package server_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// BenchmarkVMCreate creates VMs as `hearth bench scale` does (a NIC on
// one of 52 networks in turn, a host named), client and server in one
// process, no controllers: the create's own cost, without the watch
// fan-out and the agents' writes that follow it in the bench. "serial"
// is one create at a time (its latency on an idle server); "parallel"
// sixteen at once, as the bench's 200/s keeps several in flight.
//
//	go test ./server -run '^$' -bench VMCreate -benchmem -benchtime 2000x
func BenchmarkVMCreate(b *testing.B) {
	for _, par := range []int{1, 16} {
		name := "serial"
		if par > 1 {
			name = "parallel"
		}
		b.Run(name, func(b *testing.B) {
			const nets = 52
			env := benchLab(b, manyNetworks(nets)...)
			ctx := context.Background()
			c := env.Admin
			var next atomic.Int64
			create := func() error {
				i := next.Add(1)
				vm := nicVM("lab", fmt.Sprintf("vm-%06d", i), api.VMNIC{Network: fmt.Sprintf("net-%02d", i%nets)})
				vm.Spec.CPUs, vm.Spec.Memory, vm.Spec.Host = 1, 64<<20, fmt.Sprintf("h%d", i%1000)
				vm.Spec.CloudInit.Disabled = true
				_, err := c.Create(ctx, vm)
				return err
			}
			b.ReportAllocs()
			b.ResetTimer()
			if par == 1 {
				for range b.N {
					if err := create(); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.SetParallelism(par)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := create(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkVMCreateUnderWrites times VM creates, one at a time, while
// 64 writers rewrite VMs' status without pause, as a thousand agents
// starting VMs do while the bench's watch fan-out creates them: every
// linearizable read of a create then waits for etcd to apply the
// writes before it. It reports the creates' median and p90 in ms, and
// the status writes done per second meanwhile.
//
//	go test ./server -run '^$' -bench VMCreateUnderWrites -benchtime 300x
func BenchmarkVMCreateUnderWrites(b *testing.B) {
	const nets = 52
	env := benchLab(b, manyNetworks(nets)...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := env.Admin
	newVM := func(name string, i int) *api.VirtualMachine {
		vm := nicVM("lab", name, api.VMNIC{Network: fmt.Sprintf("net-%02d", i%nets)})
		vm.Spec.CPUs, vm.Spec.Memory, vm.Spec.Host = 1, 64<<20, fmt.Sprintf("h%d", i%1000)
		vm.Spec.CloudInit.Disabled = true
		return vm
	}
	var wg sync.WaitGroup
	var writes atomic.Int64
	for w := range 64 {
		o, err := c.Create(ctx, newVM(fmt.Sprintf("busy-%02d", w), w))
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func(vm *api.VirtualMachine) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				vm.Status.PID = i
				if out, err := c.UpdateStatus(ctx, vm); err == nil {
					vm = out.(*api.VirtualMachine)
					writes.Add(1)
				}
			}
		}(o.(*api.VirtualMachine))
	}
	time.Sleep(time.Second)
	d := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	t0, w0, cpu0 := time.Now(), writes.Load(), cpuTime()
	for i := range b.N {
		t0 := time.Now()
		if _, err := c.Create(ctx, newVM(fmt.Sprintf("vm-%06d", i), i)); err != nil {
			b.Fatal(err)
		}
		d = append(d, time.Since(t0))
	}
	b.StopTimer()
	n := float64(writes.Load() - w0)
	b.ReportMetric(n/time.Since(t0).Seconds(), "status-writes/s")
	// The process's CPU (server, etcd and clients) per write, creates
	// included: what the machine's load moves least.
	b.ReportMetric(float64(cpuTime()-cpu0)/1e3/(n+float64(b.N)), "cpu-µs/write")
	cancel()
	wg.Wait()
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(d[len(d)*9/10])/1e6, "p90-ms")
}

// cpuTime is the process's CPU time so far (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
