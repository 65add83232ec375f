package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestScratchDirSweepsDeadRuns: a directory left by a run whose process
// is gone is removed when the next run makes its own; a live process's
// directory, a name without a pid and files are kept.
func TestScratchDirSweepsDeadRuns(t *testing.T) {
	parent := t.TempDir()
	// A process that has exited and been reaped: its pid names nothing
	// (pids are not reused this quickly).
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot run true to get a dead pid: %v", err)
	}
	dead := strconv.Itoa(cmd.Process.Pid)
	keep := []string{
		"hearth-scale-" + strconv.Itoa(os.Getpid()) + "-123", // alive: this test
		"hearth-scale-1-7",    // alive: init
		"hearth-scale-abc-1",  // no pid
		"hearth-scale-hosts-", // no pid
		"other-" + dead + "-1",
	}
	gone := "hearth-scale-" + dead + "-456"
	for _, name := range append(keep, gone) {
		if err := os.MkdirAll(filepath.Join(parent, name, "h1"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(parent, "hearth-scale-"+dead+"-file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dir, err := scratchDir(parent, "hearth-scale-")
	if err != nil {
		t.Fatal(err)
	}
	if want := "hearth-scale-" + strconv.Itoa(os.Getpid()) + "-"; !strings.HasPrefix(filepath.Base(dir), want) {
		t.Errorf("new dir %s; want its name to start %s", dir, want)
	}
	if _, err := os.Stat(filepath.Join(parent, gone)); !os.IsNotExist(err) {
		t.Errorf("%s (a dead run's) still there: %v", gone, err)
	}
	for _, name := range append(keep, "hearth-scale-"+dead+"-file", filepath.Base(dir)) {
		if _, err := os.Stat(filepath.Join(parent, name)); err != nil {
			t.Errorf("%s removed: %v", name, err)
		}
	}
}
