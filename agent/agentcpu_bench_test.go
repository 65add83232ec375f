package agent

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// These benchmarks measure what a host spends per VM and per idle host
// when nothing changes: what `hearth bench scale` multiplies by a
// thousand simulated hosts (docs/BENCHMARKS.md §9, "the agents' CPU").

// BenchmarkReadHost is one sample of the host's own counters (/proc and
// /sys of this machine).
func BenchmarkReadHost(b *testing.B) {
	m := newMonitor(&Agent{cfg: Config{DataDir: b.TempDir()}}, time.Second)
	b.ReportAllocs()
	for b.Loop() {
		m.readHost(time.Now())
	}
}

// BenchmarkSimHost runs the agent on computetest's driver with ten
// Running VMs and measures one stats sample of the host and its VMs, one
// look at their console logs' sizes (every 2s), and one reconcile of a
// Running VM that needs nothing (what a resync or an unrelated change
// of the VM costs).
func BenchmarkSimHost(b *testing.B) {
	agents := make(chan *Agent, 1)
	testHookRun = func(a *Agent) { agents <- a }
	l := newFakeLab(b, func(c *Config) {
		// Nothing in the background but what the benchmark asks.
		c.StatsInterval, c.Resync = time.Hour, time.Hour
	})
	testHookRun = nil
	a := <-agents
	ctx := servertest.Ctx(b)
	const n = 10
	for i := range n {
		if _, err := l.env.Admin.Create(ctx, l.vm(fmt.Sprintf("m%d", i))); err != nil {
			b.Fatal(err)
		}
	}
	for i := range n {
		l.wait(b, fmt.Sprintf("m%d", i), phase(api.VMRunning))
	}
	b.Run("sample", func(b *testing.B) {
		a.mon.sample(context.Background()) // the first one makes the histories
		b.ReportAllocs()
		for b.Loop() {
			a.mon.sample(context.Background())
		}
		if got := len(a.mon.vmH); got != n {
			b.Errorf("%d VMs sampled, want %d", got, n)
		}
	})
	b.Run("capConsoleLogs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			a.vms.capConsoleLogs(context.Background())
		}
	})
	b.Run("reconcileRunning", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.vms.Reconcile(ctx, "lab/m0"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestReconcileRunningWritesNothing: a reconcile of a Running VM that
// needs nothing writes no status and leaves the cache's object as it was
// (it works on a shallow copy until it acts), and one that needs
// something (a pause) still acts and reports.
func TestReconcileRunningWritesNothing(t *testing.T) {
	agents := make(chan *Agent, 1)
	testHookRun = func(a *Agent) { agents <- a }
	l := newFakeLab(t, func(c *Config) { c.Resync = time.Hour })
	testHookRun = nil
	a := <-agents
	ctx := servertest.Ctx(t)
	if _, err := l.env.Admin.Create(ctx, l.vm("m1")); err != nil {
		t.Fatal(err)
	}
	was := l.wait(t, "m1", phase(api.VMRunning))
	cached, ok := a.cache.vms.Get("lab/m1")
	if !ok {
		t.Fatal("m1 is not in the agent's cache")
	}
	before := api.DeepCopy(cached)
	for range 3 {
		if _, err := a.vms.Reconcile(ctx, "lab/m1"); err != nil {
			t.Fatal(err)
		}
	}
	if now := l.get(t, "m1"); now.Metadata.ResourceVersion != was.Metadata.ResourceVersion {
		t.Errorf("reconciling a Running VM wrote it: resourceVersion %s, was %s (status %+v)", now.Metadata.ResourceVersion, was.Metadata.ResourceVersion, now.Status)
	}
	if !reflect.DeepEqual(cached, before) {
		t.Errorf("the reconcile changed the cache's object:\n%+v\nwas\n%+v", cached, before)
	}
	l.patchSpec(t, "m1", map[string]any{"powerState": api.PowerPaused})
	l.wait(t, "m1", phase(api.VMPaused))
}

// TestWriteStatusConflict: a status written from a VM that is no longer
// the latest (someone changed it meanwhile) is applied to the latest,
// keeping what the other writer did; one that changes nothing is not
// written.
func TestWriteStatusConflict(t *testing.T) {
	agents := make(chan *Agent, 1)
	testHookRun = func(a *Agent) { agents <- a }
	l := newFakeLab(t, func(c *Config) { c.Resync = time.Hour })
	testHookRun = nil
	a := <-agents
	ctx := servertest.Ctx(t)
	if _, err := l.env.Admin.Create(ctx, l.vm("m1")); err != nil {
		t.Fatal(err)
	}
	stale := l.wait(t, "m1", phase(api.VMRunning))
	if _, err := l.env.Admin.Patch(ctx, "VirtualMachine", "lab", "m1", map[string]any{"metadata": map[string]any{"labels": map[string]string{"by": "someone"}}}, false); err != nil {
		t.Fatal(err)
	}
	change := func(vm *api.VirtualMachine) { vm.Status.RestartCount = 7 }
	st := stale.Status
	st.RestartCount = 7
	out, wrote, err := a.vms.writeStatus(ctx, stale, st, change)
	if err != nil || !wrote {
		t.Fatalf("writeStatus: wrote %v, %v", wrote, err)
	}
	got := l.get(t, "m1")
	if got.Status.RestartCount != 7 || got.Metadata.Labels["by"] != "someone" || out.Metadata.ResourceVersion != got.Metadata.ResourceVersion {
		t.Errorf("after a conflict: restartCount %d, labels %v, resourceVersion %s (returned %s); want 7, the other writer's label, the same",
			got.Status.RestartCount, got.Metadata.Labels, got.Metadata.ResourceVersion, out.Metadata.ResourceVersion)
	}
	if _, wrote, err := a.vms.writeStatus(ctx, got, got.Status, change); wrote || err != nil {
		t.Errorf("writing the same status: wrote %v, %v", wrote, err)
	}
	if now := l.get(t, "m1"); now.Metadata.ResourceVersion != got.Metadata.ResourceVersion {
		t.Errorf("an unchanged status was written: resourceVersion %s, was %s", now.Metadata.ResourceVersion, got.Metadata.ResourceVersion)
	}
}

// TestSampleRemembersNoQMP: a VM process with no QMP socket (a simulated
// host's) is not dialled at every sample, and still has its figures; a
// new process of it is asked again.
func TestSampleRemembersNoQMP(t *testing.T) {
	agents := make(chan *Agent, 1)
	testHookRun = func(a *Agent) { agents <- a }
	l := newFakeLab(t, func(c *Config) { c.StatsInterval, c.Resync = time.Hour, time.Hour })
	testHookRun = nil
	a := <-agents
	ctx := servertest.Ctx(t)
	if _, err := l.env.Admin.Create(ctx, l.vm("m1")); err != nil {
		t.Fatal(err)
	}
	vm := l.wait(t, "m1", phase(api.VMRunning))
	uid := vm.Metadata.UID
	a.mon.sample(ctx)
	a.mon.sample(ctx)
	a.mon.mu.Lock()
	pid, samples := a.mon.noQMP[uid], len(a.mon.vmH[uid].samples())
	a.mon.mu.Unlock()
	if pid != vm.Status.PID || samples != 1 {
		t.Errorf("after two samples: no QMP remembered for pid %d (the VM's is %d), %d samples in its history; want its pid, 1", pid, vm.Status.PID, samples)
	}
	// Restarted: a new process, asked again (and remembered again).
	if !l.drv.Crash(uid) {
		t.Fatal("no process to crash")
	}
	again := l.wait(t, "m1", func(v *api.VirtualMachine) error {
		if v.Status.PID == vm.Status.PID || v.Status.Phase != api.VMRunning {
			return fmt.Errorf("not restarted yet")
		}
		return nil
	})
	a.mon.sample(ctx)
	a.mon.mu.Lock()
	pid = a.mon.noQMP[uid]
	a.mon.mu.Unlock()
	if pid != again.Status.PID {
		t.Errorf("after the restart: no QMP remembered for pid %d, want the new process's %d", pid, again.Status.PID)
	}
}
