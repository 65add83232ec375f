package sandbox_test

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"hearth.dev/hearth/sandbox"
)

// ownedSandboxMain (test-owned-sandbox DIR PREFIX UNDERLAY PROVISIONING
// OWNERDIR) makes a sandbox's network owned by this process, with a
// process inside a host's namespace that outlives it (as an agent
// would), says "ready PID" (that process's pid) and sleeps: a test run
// that will be killed before its cleanup.
func ownedSandboxMain(args []string) int {
	if len(args) != 5 {
		fmt.Println("error: want DIR PREFIX UNDERLAY PROVISIONING OWNERDIR")
		return 2
	}
	exe, _ := os.Executable()
	cfg := sandbox.Config{Dir: args[0], Prefix: args[1], Hosts: 1,
		Underlay: netip.MustParsePrefix(args[2]), Provisioning: netip.MustParsePrefix(args[3]),
		Executable: exe, OwnerPID: os.Getpid(), OwnerDir: args[4]}
	s, err := sandbox.New(cfg)
	if err == nil {
		err = s.BuildNetwork()
	}
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	cmd := s.Command(s.State.Hosts[0].Netns, exe, "test-sleep")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	// Once it says so, it runs inside the namespace.
	if line, _ := bufio.NewReader(out).ReadString('\n'); strings.TrimSpace(line) != "sleeping" {
		fmt.Println("error: the process in the namespace said", line)
		return 1
	}
	fmt.Println("ready", cmd.Process.Pid)
	time.Sleep(time.Hour)
	return 0
}

// TestSweepSandboxOfDeadOwner: a sandbox whose owner was killed (kill -9,
// as go test -timeout leaves it: no cleanup ran) is removed whole by the
// next sweep: the process it left in its namespace, its namespaces, its
// root link, its files, its owner's directory and its record; a sandbox
// whose owner lives (this test) is left alone, and its Down forgets its
// record.
func TestSweepSandboxOfDeadOwner(t *testing.T) {
	dead := testConfig(t)
	ownerDir := t.TempDir()
	dead.Dir = filepath.Join(ownerDir, "001") // as t.TempDir names it
	if err := os.Mkdir(dead.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sandbox.Down(context.Background(), dead) })

	live := testConfig(t)
	for live.Underlay == dead.Underlay {
		live = testConfig(t)
	}
	live.Hosts = 1
	live.OwnerPID = os.Getpid()
	s, err := sandbox.New(live)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sandbox.Down(context.Background(), live) })
	if err := s.BuildNetwork(); err != nil {
		t.Fatalf("BuildNetwork: %v", err)
	}

	cmd, said := startRoot(t, "test-owned-sandbox", dead.Dir, dead.Prefix, dead.Underlay.String(), dead.Provisioning.String(), ownerDir)
	pidText, ok := strings.CutPrefix(said, "ready ")
	if !ok {
		t.Fatalf("the owner said %q, want ready PID", said)
	}
	inside, _ := strconv.Atoi(pidText)
	cmd.Process.Kill()
	cmd.Wait()
	if procGone(inside) || len(netnsNames(t, dead.Prefix)) == 0 || !recorded(t, dead.Dir) {
		t.Fatalf("the killed owner left nothing to sweep (process %d gone %v, namespaces %v, recorded %v)", inside, procGone(inside), netnsNames(t, dead.Prefix), recorded(t, dead.Dir))
	}

	if err := sandbox.Sweep(context.Background(), testWriter{t}); err != nil {
		t.Errorf("Sweep: %v", err)
	}
	if !procGone(inside) {
		t.Errorf("process %d in the dead owner's sandbox survived the sweep", inside)
	}
	if ns := netnsNames(t, dead.Prefix); len(ns) > 0 {
		t.Errorf("namespaces of the dead owner's sandbox left: %v", ns)
	}
	if _, err := netlink.LinkByName(dead.Prefix + "-ctl"); err == nil {
		t.Errorf("root link %s-ctl left", dead.Prefix)
	}
	if _, err := os.Stat(ownerDir); err == nil {
		entries, _ := os.ReadDir(ownerDir)
		t.Errorf("the owner's directory %s is left, holding %v", ownerDir, entries)
	}
	if recorded(t, dead.Dir) {
		t.Errorf("the dead owner's sandbox is still recorded")
	}

	// The live owner's sandbox is whole.
	if ns := netnsNames(t, live.Prefix); len(ns) == 0 {
		t.Errorf("the live owner's namespaces were removed")
	}
	if _, err := sandbox.LoadState(live.Dir); err != nil {
		t.Errorf("the live owner's sandbox.json: %v", err)
	}
	if !recorded(t, live.Dir) {
		t.Errorf("the live owner's sandbox is not recorded")
	}
	down(t, live)
	if recorded(t, live.Dir) {
		t.Errorf("Down left the live owner's sandbox recorded: a sweep would come back to it")
	}
}

// TestOwnerConfigErrors: a bad owner is refused before anything is made.
func TestOwnerConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		edit func(*sandbox.Config)
		want string
	}{
		{func(c *sandbox.Config) { c.OwnerPID = -1 }, "--owner-pid -1: no such process"},
		{func(c *sandbox.Config) { c.OwnerDir = "/tmp" }, "--owner-dir /tmp: only a sandbox with an --owner-pid"},
		{func(c *sandbox.Config) { c.OwnerPID = os.Getpid(); c.OwnerDir = "/nonexistent/elsewhere" }, "--owner-dir /nonexistent/elsewhere: want --dir"},
		{func(c *sandbox.Config) { c.OwnerPID = os.Getpid(); c.OwnerDir = "relative" }, "--owner-dir relative: want an absolute path"},
	} {
		cfg := testConfig(t)
		tc.edit(&cfg)
		_, err := sandbox.New(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: got %v, want an error containing %q", err, tc.want)
		}
		if ns := netnsNames(t, cfg.Prefix); len(ns) > 0 || recorded(t, cfg.Dir) {
			t.Errorf("%q: made namespaces %v or a record", tc.want, ns)
		}
	}
}

// recorded says whether a record of OwnersDir names dir.
func recorded(t *testing.T, dir string) bool {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(sandbox.OwnersDir, "*.json"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), `"dir": "`+dir+`"`) {
			return true
		}
	}
	return false
}
