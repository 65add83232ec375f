package server_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/controllers"
	"hearth.dev/hearth/server/servertest"
)

// BenchmarkInformerHeap measures what the controllers' shared informers
// and the garbage collector (the one controller that files every object
// of every kind) hold live per object: VMs as the scale bench leaves
// them (bound, Running, an address each), three Events a VM (as the
// scheduler and the agents record them) and a host per ten VMs, each
// read through the API as the server's own informers read them.
// "live-B/object" is the live heap they add (after a collection), over
// every object of every kind they cache.
//
//	go test ./server -run '^$' -bench InformerHeap -benchmem -benchtime 3x
//
// With INFORMER_HEAP_PROFILE=FILE it writes the heap's profile there,
// the informers still running.
func BenchmarkInformerHeap(b *testing.B) {
	if os.Getenv("INFORMER_HEAP_PROFILE") != "" {
		runtime.MemProfileRate = 1024
	}
	env := benchLab(b, oneLAN()...)
	ctx := context.Background()
	c := env.Admin
	const vms, perHost, eventsPerVM = 2000, 10, 3
	parallel(b, vms/perHost, func(i int) error {
		h := servertest.Example("Host", "").(*api.Host)
		h.Metadata.Name = fmt.Sprintf("host-%04d", i)
		_, err := c.Create(ctx, h)
		return err
	})
	parallel(b, vms, func(i int) error {
		host := fmt.Sprintf("host-%04d", i/perHost)
		vm := nicVM("lab", fmt.Sprintf("vm-%05d", i), api.VMNIC{Network: "lan"})
		vm.Spec.CPUs, vm.Spec.Memory, vm.Spec.Host = 1, 64<<20, host
		o, err := c.Create(ctx, vm)
		if err != nil {
			return err
		}
		vm = o.(*api.VirtualMachine)
		now := time.Now().UTC().Truncate(time.Second)
		vm.Status.Phase, vm.Status.Host, vm.Status.PID, vm.Status.Accelerator = api.VMRunning, host, 1000+i, "tcg"
		vm.Status.StartedAt, vm.Status.FirstOutputAt = &now, &now
		vm.Status.SetCondition(api.Condition{Type: api.ConditionScheduled, Status: api.ConditionTrue, Reason: "Bound", Message: "bound to host " + host}, now)
		vm.Status.SetCondition(api.Condition{Type: "Ready", Status: api.ConditionTrue, Reason: "Running"}, now)
		if _, err := c.UpdateStatus(ctx, vm); err != nil {
			return err
		}
		rec := client.NewRecorder(c, "host/"+host)
		rec.Eventf(ctx, vm, api.EventNormal, "Scheduled", "bound to host %s", host)
		rec.Eventf(ctx, vm, api.EventNormal, "Preparing", "preparing disks on %s", host)
		rec.Eventf(ctx, vm, api.EventNormal, "Started", "QEMU started (pid %d, tcg)", 1000+i)
		return nil
	})
	objects := 0
	for _, k := range api.Kinds() {
		l, _, err := c.List(ctx, k.Kind, "", client.ListOptions{AllTenants: k.Scope != api.ClusterScoped})
		if err != nil {
			b.Fatal(err)
		}
		objects += len(l)
	}
	if objects < vms*(1+eventsPerVM) {
		b.Fatalf("%d objects, want at least %d", objects, vms*(1+eventsPerVM))
	}
	b.ReportAllocs()
	b.ResetTimer()
	var live float64
	for range b.N {
		before := liveHeap()
		rctx, cancel := context.WithCancel(ctx)
		inf := controllers.NewInformers(rctx, c)
		inf.Warm()
		gc := &controllers.GarbageCollector{Client: c, Recorder: client.NewRecorder(c, "test"), Informers: inf}
		done := make(chan struct{})
		go func() { defer close(done); gc.Run(rctx) }()
		// Every informer is synced, and the collector has filed every
		// object, once each kind's cache holds what the list said.
		servertest.Eventually(b, time.Minute, func() error {
			n := inf.Cached()
			if n < objects {
				return fmt.Errorf("%d of %d objects cached", n, objects)
			}
			return nil
		})
		time.Sleep(2 * time.Second) // the collector's first pass over its queue
		live += float64(liveHeap()-before) / float64(objects)
		if f := os.Getenv("INFORMER_HEAP_PROFILE"); f != "" {
			// What they hold, by where it was allocated.
			if err := writeHeapProfile(f); err != nil {
				b.Fatal(err)
			}
		}
		runtime.KeepAlive(inf)
		runtime.KeepAlive(gc)
		cancel()
		<-done
	}
	b.StopTimer()
	b.ReportMetric(live/float64(b.N), "live-B/object")
	b.ReportMetric(float64(objects), "objects")
}

// liveHeap is the heap's live bytes after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup("heap").WriteTo(f, 0)
}

// parallel calls fn(0..n-1) from 16 goroutines and fails b on an error.
func parallel(b *testing.B, n int, fn func(i int) error) {
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}
