package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"hearth.dev/hearth/agent/console"
	"hearth.dev/hearth/compute"
)

// TestFirstOutputAcrossRotation: a rotation right after a start neither
// invents the guest's first output (the log held only an earlier run's)
// nor hides it (the guest's first words went to console.log.1).
func TestFirstOutputAcrossRotation(t *testing.T) {
	logFile := func(dir string) string { return filepath.Join(dir, compute.ConsoleLog) }
	appendLog := func(t *testing.T, dir, s string) {
		t.Helper()
		f, err := os.OpenFile(logFile(dir), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	rotate := func(t *testing.T, dir string) {
		t.Helper()
		if ok, err := console.RotateLog(dir, 4); !ok || err != nil {
			t.Fatalf("RotateLog = %v, %v", ok, err)
		}
	}

	t.Run("old output rotated after the start", func(t *testing.T) {
		dir := t.TempDir()
		appendLog(t, dir, "the last run's output\n")
		earlier := time.Now().Add(-time.Minute)
		if err := os.Chtimes(logFile(dir), earlier, earlier); err != nil {
			t.Fatal(err)
		}
		// A second early: file times come from the kernel's coarse clock.
		since := time.Now().Add(-time.Second)
		if _, ok := firstOutput(dir, &since); ok {
			t.Fatal("the last run's output counted before the rotation")
		}
		rotate(t, dir)
		if _, ok := firstOutput(dir, &since); ok {
			t.Fatal("the last run's output counted after the rotation")
		}
		appendLog(t, dir, "booting\n")
		if _, ok := firstOutput(dir, &since); !ok {
			t.Fatal("the guest's output after the rotation was not seen")
		}
	})

	t.Run("new output rotated before the agent looked", func(t *testing.T) {
		dir := t.TempDir()
		since := time.Now().Add(-time.Second)
		appendLog(t, dir, "booting, and saying a lot\n")
		rotate(t, dir)
		if fi, _ := os.Stat(logFile(dir)); fi.Size() != 0 {
			t.Fatalf("console.log not emptied: %d bytes", fi.Size())
		}
		if _, ok := firstOutput(dir, &since); !ok {
			t.Fatal("the guest's output, now in console.log.1, was not seen")
		}
	})
}
