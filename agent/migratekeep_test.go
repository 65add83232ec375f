package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/server/servertest"
)

// TestLiveMigrationDestFails: the destination's
// QEMU is killed once it has the whole state ("completed" on the
// source), before it resumes. The source's QEMU, kept paused until the
// destination owns the VM, is resumed: the same process on h1 counts on
// from where it paused with its memory pattern intact, and status.host
// stays h1 meanwhile. The failed move is said once and not tried again:
// the Migrated condition says why (MigrationFailed), h2 records one
// Warning event, and spec.host goes back to h1, where the VM runs. Asked
// again, the move ends as a normal one does: Running on h2, counter
// carrying on, Migrated True, h1's QEMU gone.
func TestLiveMigrationDestFails(t *testing.T) {
	requireSharedBoot(t)
	var (
		mu     sync.Mutex
		killed bool
		h1Dir  string // h1's VM directory, once known
		atFail []int  // h1's ticks when the destination died
	)
	agent.SetTestHookMigratedIn(func(uid, dir string) bool {
		mu.Lock()
		defer mu.Unlock()
		if killed {
			return false
		}
		killed = true
		b, err := os.ReadFile(filepath.Join(dir, compute.PIDFile))
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			t.Errorf("the destination's QEMU pid: %q, %v", b, err)
			return false
		}
		// The source is paused now (the destination's QEMU left
		// "inmigrate" only after "completed"): its count so far.
		atFail, _ = consoleTicks(filepath.Join(h1Dir, compute.ConsoleLog))
		syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 100 && alive(pid); i++ {
			time.Sleep(50 * time.Millisecond)
		}
		return true
	})
	t.Cleanup(func() { agent.SetTestHookMigratedIn(nil) }) // after the lab stops
	l := newLab(t)
	p := rbdPool(t, l)
	l.addAgent(t, "h2")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	cur := l.startMover(t, p)
	h1PID := cur.Status.PID
	mu.Lock()
	h1Dir = filepath.Join(l.dataDir, "vms", cur.Metadata.UID)
	mu.Unlock()

	if _, err := l.env.Admin.Patch(ctx, "VirtualMachine", "lab", "mover", map[string]any{"spec": map[string]any{"host": "h2"}}, false); err != nil {
		t.Fatal(err)
	}
	// The source carries on after the destination died: the same QEMU,
	// counting on from where it paused.
	servertest.Eventually(t, 5*time.Minute, func() error {
		mu.Lock()
		k, before := killed, atFail
		mu.Unlock()
		if !k {
			return fmt.Errorf("the destination has not had the whole state yet")
		}
		if !alive(h1PID) {
			t.Fatalf("h1's QEMU (pid %d) is gone after the destination died: the VM is lost", h1PID)
		}
		if len(before) == 0 {
			return fmt.Errorf("h1's console showed no ticks when the destination died")
		}
		after, ok := consoleTicks(filepath.Join(h1Dir, compute.ConsoleLog))
		if !ok {
			t.Fatalf("the guest's memory pattern changed on h1")
		}
		if len(after) < len(before)+2 {
			return fmt.Errorf("h1's guest was at %d when the destination died, and printed %v since", before[len(before)-1], after[len(before):])
		}
		if n := after[len(before):]; n[0] != before[len(before)-1]+1 {
			t.Fatalf("h1's counter was at %d when it paused and went on %v", before[len(before)-1], n)
		}
		if got := l.get(t, "mover").Status.Host; got != "h1" {
			t.Fatalf("status.host %q while h1 runs the guest again; want h1", got)
		}
		return nil
	})
	// The move failed: spec and status agree the VM is on h1, and the
	// condition says why.
	checkMoveFailed(t, l, "mover", "h1", "h2", "h2", h1PID, "exited before it had all of it")

	// Asked again, the move completes.
	if _, err := l.env.Admin.Patch(ctx, "VirtualMachine", "lab", "mover", map[string]any{"spec": map[string]any{"host": "h2"}}, false); err != nil {
		t.Fatal(err)
	}
	var moved *api.VirtualMachine
	servertest.Eventually(t, 5*time.Minute, func() error {
		moved = l.get(t, "mover")
		if moved.Status.Host != "h2" || moved.Status.Phase != api.VMRunning || moved.Status.Migration != nil {
			return fmt.Errorf("VM on %q, phase %q, migration %+v", moved.Status.Host, moved.Status.Phase, moved.Status.Migration)
		}
		if c := moved.Status.Condition(api.ConditionMigrated); c == nil || c.Status != api.ConditionTrue || c.Reason != api.ReasonMigrated {
			return fmt.Errorf("Migrated condition %+v; want True, Migrated", c)
		}
		return nil
	})
	servertest.Eventually(t, time.Minute, func() error {
		after, ok := consoleTicks(moved.Status.ConsoleLog)
		if !ok {
			return fmt.Errorf("the guest's memory pattern changed across the move")
		}
		if len(after) < 3 {
			return fmt.Errorf("the guest printed %v on h2 so far", after)
		}
		if after[0] <= atFail[len(atFail)-1] {
			return fmt.Errorf("the counter was at %d on h1 and went %v on h2: the guest did not carry on", atFail[len(atFail)-1], after)
		}
		return nil
	})
	servertest.Eventually(t, time.Minute, func() error {
		if alive(h1PID) {
			return fmt.Errorf("h1's QEMU (pid %d) still runs after the move", h1PID)
		}
		return nil
	})
}

// checkMoveFailed waits for the VM name, whose move from src to dst
// failed, to be back on src in spec and status, still run by the same
// QEMU (pid), its Migrated condition False with reason MigrationFailed
// and a message containing why; and checks that the move is not tried
// again: teller (the host that found it failed) said it once, and no
// new migration starts.
func checkMoveFailed(t *testing.T, l *lab, name, src, dst, teller string, pid int, why string) {
	t.Helper()
	servertest.Eventually(t, 2*time.Minute, func() error {
		vm := l.get(t, name)
		c := vm.Status.Condition(api.ConditionMigrated)
		if vm.Spec.Host != src || vm.Status.Host != src || vm.Status.Migration != nil || c == nil {
			return fmt.Errorf("spec.host %q, status.host %q, migration %+v, Migrated %+v; want both %s, no migration, a Migrated condition",
				vm.Spec.Host, vm.Status.Host, vm.Status.Migration, c, src)
		}
		if c.Status != api.ConditionFalse || c.Reason != api.ReasonMigrationFailed || !strings.Contains(c.Message, why) {
			t.Fatalf("Migrated condition %+v; want False, %s, saying %q", c, api.ReasonMigrationFailed, why)
		}
		return nil
	})
	// Nothing moves again by itself: give a retry the time it had before
	// (15 s) and look.
	time.Sleep(20 * time.Second)
	vm := l.get(t, name)
	if vm.Spec.Host != src || vm.Status.Host != src || vm.Status.Migration != nil || vm.Status.Phase != api.VMRunning {
		t.Fatalf("after the failed move: spec.host %q, status.host %q, migration %+v, phase %q; want %s, %s, none, Running",
			vm.Spec.Host, vm.Status.Host, vm.Status.Migration, vm.Status.Phase, src, src)
	}
	if !alive(pid) {
		t.Fatalf("%s's QEMU (pid %d) is gone after the failed move", src, pid)
	}
	evs, _, err := l.env.Admin.List(servertest.Ctx(t), "Event", "lab", client.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	var told []string
	repeated := false
	for _, o := range evs {
		e := o.(*api.Event)
		if e.Spec.Reason == api.ReasonMigrationFailed && e.Spec.Source == "host/"+teller {
			told = append(told, fmt.Sprintf("%s (count %d)", e.Spec.Message, e.Spec.Count))
			repeated = repeated || e.Spec.Count > 1
		}
	}
	if len(told) != 1 || repeated {
		t.Errorf("%s's MigrationFailed events: %q; want one, once", teller, told)
	}
}

// TestLiveMigrationDestHangs: the destination's QEMU accepts the
// migration's connection but never reads from it (it is stopped with
// SIGSTOP once started with -incoming). The source gives up after its
// migration timeout (10 s here): it cancels the migration (QEMU 7.2,
// stuck in the TLS handshake, answers no QMP: its connection to the
// destination is shut down), its QEMU (the same process) runs the guest
// on, and it says why, in an event and in the VM's status (Migrated
// False, MigrationFailed). The destination kills the QEMU it started,
// and spec.host goes back to h1.
func TestLiveMigrationDestHangs(t *testing.T) {
	requireSharedBoot(t)
	var (
		mu      sync.Mutex
		stopped int // the destination's QEMU pid, once stopped
	)
	agent.SetTestHookIncomingStarted(func(uid, dir string) {
		mu.Lock()
		defer mu.Unlock()
		if stopped != 0 {
			return
		}
		b, err := os.ReadFile(filepath.Join(dir, compute.PIDFile))
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			t.Errorf("the destination's QEMU pid: %q, %v", b, err)
			return
		}
		syscall.Kill(pid, syscall.SIGSTOP)
		stopped = pid
	})
	t.Cleanup(func() { agent.SetTestHookIncomingStarted(nil) }) // after the lab stops
	const timeout = 10 * time.Second
	l := newLab(t, func(c *agent.Config) { c.MigrationTimeout = timeout })
	p := rbdPool(t, l)
	l.addAgent(t, "h2")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	cur := l.startMover(t, p)
	h1PID, h1Log := cur.Status.PID, cur.Status.ConsoleLog

	if _, err := l.env.Admin.Patch(ctx, "VirtualMachine", "lab", "mover", map[string]any{"spec": map[string]any{"host": "h2"}}, false); err != nil {
		t.Fatal(err)
	}
	// h1 gives up after its timeout and says so.
	var said *api.Event
	servertest.Eventually(t, 3*time.Minute, func() error {
		evs, _, err := l.env.Admin.List(ctx, "Event", "lab", client.ListOptions{FieldSelector: "involvedObject.name=mover"})
		if err != nil {
			return err
		}
		for _, o := range evs {
			if e := o.(*api.Event); e.Spec.Reason == api.ReasonMigrationFailed && e.Spec.Source == "host/h1" {
				said = e
				return nil
			}
		}
		return fmt.Errorf("h1 has not said the move failed")
	})
	mu.Lock()
	destPID := stopped
	mu.Unlock()
	if destPID == 0 {
		t.Fatal("h1 gave up, but h2's QEMU was never started")
	}
	if want := "longer than " + timeout.String(); !strings.Contains(said.Spec.Message, want) {
		t.Errorf("h1's event says %q; want it to say %q", said.Spec.Message, want)
	}
	// The guest runs on h1: the same process, counting on.
	before, _ := consoleTicks(h1Log)
	servertest.Eventually(t, time.Minute, func() error {
		if !alive(h1PID) {
			t.Fatalf("h1's QEMU (pid %d) is gone after the cancelled move", h1PID)
		}
		after, ok := consoleTicks(h1Log)
		if !ok {
			t.Fatalf("the guest's memory pattern changed on h1")
		}
		if len(after) < len(before)+2 {
			return fmt.Errorf("h1's guest printed %v since the move was cancelled", after[len(before):])
		}
		return nil
	})
	checkMoveFailed(t, l, "mover", "h1", "h2", "h1", h1PID, "longer than "+timeout.String())
	if alive(destPID) {
		t.Errorf("h2's QEMU (pid %d) still runs after the failed move", destPID)
	}
}

// TestLiveMigrationSourceRestarts: h1's agent is restarted in the middle
// of a move, once h2's QEMU has the whole state and h1's is paused
// waiting for h2 to take the VM. The restarted agent, whose cache no
// longer holds the VM (it is placed on h2), takes it back from what runs
// on the host and what the API says (adoptLeaving): it does not collect
// h1's QEMU as an orphan, and keeps its ports. When h2 takes the VM, h1
// kills its copy and removes its files as after any move, and the guest
// counts on on h2.
func TestLiveMigrationSourceRestarts(t *testing.T) {
	requireSharedBoot(t)
	var (
		mu      sync.Mutex
		held    bool     // h2 has the whole state and waits
		hold    = true   // h2 does not take the VM yet
		adopted []string // what h1's restarted agent took back
	)
	agent.SetTestHookMigratedIn(func(uid, dir string) bool {
		mu.Lock()
		defer mu.Unlock()
		held = true
		return hold
	})
	agent.SetTestHookAdopted(func(host string, keys []string) {
		if host == "h1" {
			mu.Lock()
			adopted = append(adopted, keys...)
			mu.Unlock()
		}
	})
	t.Cleanup(func() { agent.SetTestHookMigratedIn(nil); agent.SetTestHookAdopted(nil) }) // after the lab stops
	l := newLab(t)
	p := rbdPool(t, l)
	l.addAgent(t, "h2")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	cur := l.startMover(t, p)
	h1PID, h1Dir := cur.Status.PID, filepath.Dir(cur.Status.ConsoleLog)
	before, _ := consoleTicks(cur.Status.ConsoleLog)

	if _, err := l.env.Admin.Patch(ctx, "VirtualMachine", "lab", "mover", map[string]any{"spec": map[string]any{"host": "h2"}}, false); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 3*time.Minute, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !held {
			return fmt.Errorf("h2 does not have the whole state yet")
		}
		return nil
	})
	l.stopAgent()
	if !alive(h1PID) {
		t.Fatalf("h1's QEMU (pid %d) is gone once its agent stopped", h1PID)
	}
	l.startAgent(t)
	servertest.Eventually(t, time.Minute, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(adopted, []string{"lab/mover"}) {
			return fmt.Errorf("h1's restarted agent took back %q; want lab/mover", adopted)
		}
		return nil
	})
	// Past a few of the restarted agent's resyncs (2 s), which collect
	// orphans: h1's copy is no orphan.
	time.Sleep(6 * time.Second)
	if !alive(h1PID) {
		t.Fatalf("h1's QEMU (pid %d) was killed by its restarted agent in mid-move", h1PID)
	}
	if got := l.get(t, "mover"); got.Status.Host != "h1" || got.Status.Migration == nil {
		t.Fatalf("while h2 waits: status.host %q, migration %+v; want h1 and the migration", got.Status.Host, got.Status.Migration)
	}

	mu.Lock()
	hold = false
	mu.Unlock()
	var moved *api.VirtualMachine
	servertest.Eventually(t, 3*time.Minute, func() error {
		moved = l.get(t, "mover")
		if moved.Status.Host != "h2" || moved.Status.Phase != api.VMRunning || moved.Status.Migration != nil {
			return fmt.Errorf("VM on %q, phase %q, migration %+v", moved.Status.Host, moved.Status.Phase, moved.Status.Migration)
		}
		return nil
	})
	servertest.Eventually(t, time.Minute, func() error {
		if alive(h1PID) {
			return fmt.Errorf("h1's QEMU (pid %d) still runs after the move", h1PID)
		}
		if _, err := os.Stat(h1Dir); err == nil {
			return fmt.Errorf("h1's VM directory %s is still there after the move", h1Dir)
		}
		return nil
	})
	servertest.Eventually(t, time.Minute, func() error {
		after, ok := consoleTicks(moved.Status.ConsoleLog)
		if !ok {
			return fmt.Errorf("the guest's memory pattern changed across the move")
		}
		if len(after) < 3 {
			return fmt.Errorf("the guest printed %v on h2 so far", after)
		}
		if after[0] <= before[len(before)-1] {
			return fmt.Errorf("the counter was at %d on h1 and went %v on h2: the guest did not carry on", before[len(before)-1], after)
		}
		return nil
	})
}
