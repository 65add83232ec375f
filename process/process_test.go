package process

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestID: a process is found by its pid while it lives, is no longer
// alive once it exits (a zombie not yet reaped included), and is not
// mistaken for another process with its pid but another start time.
func TestID(t *testing.T) {
	self, ok := Of(os.Getpid())
	if !ok || !self.Alive() {
		t.Fatalf("Of(self) = %+v, %v; want this process, alive", self, ok)
	}
	if at := self.StartedAt(); at.After(time.Now()) || time.Since(at) > 24*time.Hour {
		t.Errorf("this test started at %s, says StartedAt", at)
	}
	if (ID{PID: self.PID, Start: self.Start + 1}).Alive() {
		t.Error("a process with this pid but another start time is alive: a reused pid would be mistaken for it")
	}
	if _, ok := Of(0); ok {
		t.Error("Of(0) found a process")
	}

	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start sleep: %v", err)
	}
	child, ok := Of(cmd.Process.Pid)
	if !ok {
		t.Fatal("the child is not found")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Not reaped until Kill returns: a zombie counts as gone.
	if err := Kill(ctx, child); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if child.Alive() {
		t.Error("the killed child (a zombie) is still alive")
	}
	if _, ok := Of(child.PID); ok {
		t.Error("Of finds the killed child (a zombie)")
	}
	cmd.Wait()
	if err := Kill(ctx, child); err != nil {
		t.Errorf("Kill of a process already gone: %v", err)
	}
	if err := WaitGone(ctx, child); err != nil {
		t.Errorf("WaitGone of a process already gone: %v", err)
	}
}
