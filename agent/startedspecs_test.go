package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/compute"
)

// TestStartedSpecsNoticeChanges: the cache of specFiles answers what the
// file holds now: a rewrite (as a start writes it, by a new file and a
// rename, or in place with the same size) is read again, a removed or
// broken file is no record, and a torn-down VM's entry goes.
func TestStartedSpecsNoticeChanges(t *testing.T) {
	dir := t.TempDir()
	c := &startedSpecs{}
	write := func(cpus int, tap string) {
		t.Helper()
		if err := writeJSONFile(filepath.Join(dir, specFile), startedSpec{Spec: compute.Spec{CPUs: cpus, NICs: []compute.NIC{{Tap: tap}}}}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, wantOK bool, wantCPUs int, wantTap string) {
		t.Helper()
		s, ok := c.read(dir)
		if ok != wantOK || (ok && (s.CPUs != wantCPUs || len(s.NICs) != 1 || s.NICs[0].Tap != wantTap)) {
			t.Errorf("%s: read %+v, %v; want %d CPUs and tap %q, %v", what, s.Spec, ok, wantCPUs, wantTap, wantOK)
		}
	}
	check("no file", false, 0, "")
	write(1, "tap-a")
	check("written", true, 1, "tap-a")
	check("read again", true, 1, "tap-a")
	write(2, "tap-b")
	check("rewritten", true, 2, "tap-b")

	// In place, the same size and inode: the times tell (the kernel
	// stamps files with a clock of a few milliseconds' ticks).
	path := filepath.Join(dir, specFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := os.WriteFile(path, []byte(strings.Replace(string(data), "tap-b", "tap-c", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	check("changed in place", true, 2, "tap-c")

	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	check("broken", false, 0, "")
	write(3, "tap-d")
	check("mended", true, 3, "tap-d")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	check("removed", false, 0, "")
	if len(c.byDir) != 0 {
		t.Errorf("a removed file is still kept: %v", c.byDir)
	}
	write(4, "tap-e")
	check("back", true, 4, "tap-e")
	c.forget(dir)
	if len(c.byDir) != 0 {
		t.Errorf("forget kept %v", c.byDir)
	}
	// A nil cache reads the file each time.
	var none *startedSpecs
	if s, ok := none.read(dir); !ok || s.CPUs != 4 {
		t.Errorf("nil cache: %+v, %v", s.Spec, ok)
	}
}
