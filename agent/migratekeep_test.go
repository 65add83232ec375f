package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/server/servertest"
)

// TestLiveMigrationDestFails: the destination's
// QEMU is killed once it has the whole state ("completed" on the
// source), before it resumes. The source's QEMU, kept paused until the
// destination owns the VM, is resumed: the same process on h1 counts on
// from where it paused with its memory pattern intact, and status.host
// stays h1 meanwhile. The source then sends the VM again, and the second
// move ends as a normal one does: Running on h2, counter carrying on, h1's
// QEMU gone.
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

	vol := volume("data", 64<<20, api.VolumeSource{})
	vol.Spec.Host, vol.Spec.Pool = "", p.pool.Metadata.Name
	l.create(t, vol)
	vm := l.vm("mover")
	vm.Spec.Disks = []api.VMDisk{{Volume: "data"}}
	vm.Spec.CloudInit.UserData = tickScript
	l.create(t, vm)
	servertest.Eventually(t, 4*time.Minute, func() error {
		vm := l.get(t, "mover")
		if n, _ := consoleTicks(vm.Status.ConsoleLog); len(n) < 3 {
			return fmt.Errorf("the guest has not counted to 3 yet (phase %q, %+v)", vm.Status.Phase, vm.Status.Conditions)
		}
		return nil
	})
	cur := l.get(t, "mover")
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
	// The source tries again, and this time the move completes.
	var moved *api.VirtualMachine
	servertest.Eventually(t, 5*time.Minute, func() error {
		moved = l.get(t, "mover")
		if moved.Status.Host != "h2" || moved.Status.Phase != api.VMRunning || moved.Status.Migration != nil {
			return fmt.Errorf("VM on %q, phase %q, migration %+v", moved.Status.Host, moved.Status.Phase, moved.Status.Migration)
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
