package computetest_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/compute/computetest"
)

func spec(t *testing.T, id string) compute.Spec {
	return compute.Spec{ID: id, Name: "lab/" + id, Dir: t.TempDir(), CPUs: 1, MemoryMiB: 64}
}

func consoleWritten(dir string) bool {
	data, err := os.ReadFile(filepath.Join(dir, compute.ConsoleLog))
	return err == nil && string(data) == computetest.ConsoleLine
}

// TestLifecycle: a VM is found by directory and id, pauses, resumes,
// shuts down, and Wait returns when it goes; every call is recorded.
func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	d := &computetest.Driver{}
	s := spec(t, "u1")
	info, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != compute.Running || info.PID == 0 || info.Accelerator != "tcg" {
		t.Fatalf("Start = %+v", info)
	}
	if !consoleWritten(s.Dir) {
		t.Fatal("a guest that boots at once has not written its console log when Start returns")
	}
	if _, err := d.Start(ctx, s); err == nil {
		t.Fatal("starting a running VM again succeeded")
	}
	if _, ok, _ := d.Lookup(ctx, "other", s.Dir); ok {
		t.Fatal("Lookup found the VM under another id")
	}
	if err := d.Pause(ctx, "u1", s.Dir); err != nil {
		t.Fatal(err)
	}
	if got, ok, _ := d.Lookup(ctx, "u1", s.Dir); !ok || got.State != compute.Paused {
		t.Fatalf("after Pause: %+v, %v", got, ok)
	}
	if err := d.Resume(ctx, "u1", s.Dir); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- d.Wait(ctx, "u1", s.Dir) }()
	if err := d.Shutdown(ctx, "u1", s.Dir, time.Minute); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after Shutdown")
	}
	if _, ok, _ := d.Lookup(ctx, "u1", s.Dir); ok {
		t.Fatal("Lookup found a VM that was shut down")
	}
	if err := d.Pause(ctx, "u1", s.Dir); !errors.Is(err, compute.ErrNotRunning) {
		t.Fatalf("Pause of a stopped VM: %v, want ErrNotRunning", err)
	}
	var ops []computetest.Op
	for _, c := range d.Calls() {
		if c.Op != computetest.OpWait { // its goroutine races the others
			ops = append(ops, c.Op)
		}
	}
	want := []computetest.Op{"Start", "Start", "Lookup", "Pause", "Lookup", "Resume", "Shutdown", "Lookup", "Pause"}
	if len(ops) != len(want) {
		t.Fatalf("calls %v, want %v", ops, want)
	}
	for i := range want {
		if ops[i] != want[i] {
			t.Fatalf("calls %v, want %v", ops, want)
		}
	}
	if starts := d.CallsTo(computetest.OpStart, "u1"); len(starts) != 2 || starts[0].Spec.MemoryMiB != 64 || starts[1].Err == nil {
		t.Fatalf("Start calls %+v: want the spec recorded, and the second failed", starts)
	}
}

// TestBehaviors: each way a VM can be made to misbehave.
func TestBehaviors(t *testing.T) {
	tests := []struct {
		name    string
		b       computetest.Behavior
		check   func(t *testing.T, d *computetest.Driver, s compute.Spec)
		noStart bool
	}{
		{name: "start fails", b: computetest.Behavior{StartErr: computetest.ErrInjected}, noStart: true,
			check: func(t *testing.T, d *computetest.Driver, s compute.Spec) {
				if _, ok, _ := d.Lookup(context.Background(), s.ID, s.Dir); ok {
					t.Fatal("a VM whose start failed is running")
				}
			}},
		{name: "boots later", b: computetest.Behavior{BootDelay: 200 * time.Millisecond},
			check: func(t *testing.T, d *computetest.Driver, s compute.Spec) {
				if consoleWritten(s.Dir) {
					t.Fatal("console written before the boot delay")
				}
				waitFor(t, func() bool { return consoleWritten(s.Dir) })
			}},
		{name: "never boots", b: computetest.Behavior{BootDelay: -1},
			check: func(t *testing.T, d *computetest.Driver, s compute.Spec) {
				time.Sleep(100 * time.Millisecond)
				if consoleWritten(s.Dir) {
					t.Fatal("a guest that never boots wrote its console")
				}
			}},
		{name: "crashes", b: computetest.Behavior{CrashAfter: 100 * time.Millisecond},
			check: func(t *testing.T, d *computetest.Driver, s compute.Spec) {
				if err := d.Wait(context.Background(), s.ID, s.Dir); err != nil {
					t.Fatal(err)
				}
				if _, ok, _ := d.Lookup(context.Background(), s.ID, s.Dir); ok {
					t.Fatal("a crashed VM is still running")
				}
			}},
		{name: "powers itself off", b: computetest.Behavior{PowerOffAfter: 100 * time.Millisecond, IgnoreACPI: true},
			check: func(t *testing.T, d *computetest.Driver, s compute.Spec) {
				if err := d.Wait(context.Background(), s.ID, s.Dir); err != nil {
					t.Fatal(err)
				}
				// As QEMU with -action shutdown=pause: the process stays,
				// paused, saying the guest is off, and cannot resume.
				info, ok, _ := d.Lookup(context.Background(), s.ID, s.Dir)
				if !ok || info.Status != compute.StatusShutdown || info.State != compute.Paused {
					t.Fatalf("after the power-off: %+v, %v; want the process, paused in status %q", info, ok, compute.StatusShutdown)
				}
				if err := d.Resume(context.Background(), s.ID, s.Dir); err == nil {
					t.Fatal("a powered-off guest resumed")
				}
				// A guest that is off has no power button to ignore.
				start := time.Now()
				if err := d.Shutdown(context.Background(), s.ID, s.Dir, time.Minute); err != nil {
					t.Fatal(err)
				}
				if took := time.Since(start); took > 10*time.Second {
					t.Fatalf("Shutdown of a powered-off guest took %v", took)
				}
				if _, ok, _ := d.Lookup(context.Background(), s.ID, s.Dir); ok {
					t.Fatal("still running after Shutdown")
				}
			}},
		{name: "ignores ACPI", b: computetest.Behavior{IgnoreACPI: true},
			check: func(t *testing.T, d *computetest.Driver, s compute.Spec) {
				start := time.Now()
				if err := d.Shutdown(context.Background(), s.ID, s.Dir, 300*time.Millisecond); err != nil {
					t.Fatal(err)
				}
				if took := time.Since(start); took < 300*time.Millisecond {
					t.Fatalf("Shutdown took %v, want the whole timeout", took)
				}
				if _, ok, _ := d.Lookup(context.Background(), s.ID, s.Dir); ok {
					t.Fatal("still running after the kill")
				}
			}},
		{name: "hangs in shutdown", b: computetest.Behavior{HangShutdown: true},
			check: func(t *testing.T, d *computetest.Driver, s compute.Spec) {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				defer cancel()
				if err := d.Shutdown(ctx, s.ID, s.Dir, time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Shutdown = %v, want the context's deadline", err)
				}
				if _, ok, _ := d.Lookup(context.Background(), s.ID, s.Dir); !ok {
					t.Fatal("a VM hung in shutdown is gone")
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &computetest.Driver{Behave: func(compute.Spec) computetest.Behavior { return tt.b }}
			s := spec(t, "u1")
			_, err := d.Start(context.Background(), s)
			if tt.noStart != (err != nil) {
				t.Fatalf("Start = %v", err)
			}
			tt.check(t, d, s)
		})
	}
}

// TestCrash: Crash ends a running VM on demand and wakes its waiter.
func TestCrash(t *testing.T) {
	ctx := context.Background()
	d := &computetest.Driver{}
	s := spec(t, "u1")
	if _, err := d.Start(ctx, s); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- d.Wait(ctx, "u1", s.Dir) }()
	waitFor(t, func() bool { return len(d.CallsTo(computetest.OpWait, "u1")) == 1 })
	if !d.Crash("u1") {
		t.Fatal("Crash found no VM")
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if len(d.Running()) != 0 || d.Crash("u1") {
		t.Fatal("the crashed VM is still running")
	}
}

// TestPowerOff: PowerOff turns a running guest off on demand, and Panic
// makes its kernel panic, each keeping its process; its waiter wakes.
func TestPowerOff(t *testing.T) {
	ctx := context.Background()
	d := &computetest.Driver{}
	s := spec(t, "u1")
	if _, err := d.Start(ctx, s); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- d.Wait(ctx, "u1", s.Dir) }()
	waitFor(t, func() bool { return len(d.CallsTo(computetest.OpWait, "u1")) == 1 })
	if !d.PowerOff("u1") {
		t.Fatal("PowerOff found no VM")
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if info, ok, _ := d.Lookup(ctx, "u1", s.Dir); !ok || info.Status != compute.StatusShutdown {
		t.Fatalf("after PowerOff: %+v, %v; want the process in status %q", info, ok, compute.StatusShutdown)
	}
	if err := d.Wait(ctx, "u1", s.Dir); err != nil {
		t.Fatalf("Wait on a powered-off guest: %v", err)
	}
	if d.PowerOff("other") {
		t.Fatal("PowerOff found a VM that does not run")
	}

	// A panic likewise, in its own status.
	s2 := spec(t, "u2")
	if _, err := d.Start(ctx, s2); err != nil {
		t.Fatal(err)
	}
	if !d.Panic("u2") {
		t.Fatal("Panic found no VM")
	}
	if err := d.Wait(ctx, "u2", s2.Dir); err != nil {
		t.Fatal(err)
	}
	if info, ok, _ := d.Lookup(ctx, "u2", s2.Dir); !ok || info.Status != compute.StatusGuestPanicked {
		t.Fatalf("after Panic: %+v, %v; want the process in status %q", info, ok, compute.StatusGuestPanicked)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
