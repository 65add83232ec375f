// Package cephtest gives tests a real, single-node Ceph cluster (started
// by storage/lab, as the sandbox starts its own):
// one monitor, one manager and one OSD on memstore, from Debian's ceph
// packages (ceph-mon, ceph-mgr, ceph-osd, ceph-common), with cephx
// authentication and a pool "rbd" of size 1 ready for RBD images. It
// listens on 127.0.0.1 only, on ports picked free at start (the OSD and
// manager take theirs from Ceph's usual 6800–7300 range, skipping ports in
// use), so test processes of several people run their clusters side by
// side.
//
// A test process has at most one cluster: the first Start starts it (in
// about 10–30 s) and later calls share it. Tests that need one call Start;
// the package's TestMain calls Main, which stops the cluster and removes
// its files when the tests end. A process killed before that leaves its
// daemons running; the next Start, in any test process, kills them (they
// are recognised by their directory, hearth-cephtest-PID-*, in their
// command lines) before it starts its own.
package cephtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth.dev/hearth/storage/internal/peer"
	"hearth.dev/hearth/storage/lab"
)

// dirPrefix names the directories clusters live in, under os.TempDir().
const dirPrefix = "hearth-cephtest"

// StartTimeout bounds how long Start waits for the cluster to be ready.
const StartTimeout = 3 * time.Minute

// Cluster is a running test cluster: lab.Ceph, listening on 127.0.0.1.
type Cluster = lab.Ceph

var (
	mu       sync.Mutex
	shared   *Cluster
	startErr error
)

// Tools are the programs a cluster needs, with the Debian packages that
// have them.
var Tools = lab.CephTools

// Start returns the test process's cluster, starting it on first use. It
// skips t when not run as root or when a Ceph program is missing, and
// fails t when the cluster does not come up (every later Start fails the
// same way at once).
func Start(t testing.TB) *Cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the test Ceph cluster needs root (run the tests as root, as CI does)")
	}
	if tool, pkg := lab.MissingCephTool(); tool != "" {
		t.Skipf("%s not found: install Debian's %s package (scripts/deps.sh test does) to run the Ceph tests", tool, pkg)
	}
	mu.Lock()
	defer mu.Unlock()
	if shared == nil && startErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
		began := time.Now()
		shared, startErr = start(ctx)
		cancel()
		if startErr == nil {
			t.Logf("cephtest: cluster %s up in %s (monitor %s)", shared.Dir, time.Since(began).Round(time.Millisecond), shared.Monitors[0])
		}
	}
	if startErr != nil {
		t.Fatalf("cephtest: %v", startErr)
	}
	return shared
}

// Main runs the tests of a package that uses the cluster, stops the
// cluster and exits: call it from the package's TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if err := Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "cephtest:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// Stop stops the process's cluster, if it started one, and removes its
// files.
func Stop() error {
	mu.Lock()
	defer mu.Unlock()
	if shared == nil {
		return nil
	}
	err := stop(shared)
	shared = nil
	return err
}

func start(ctx context.Context) (*Cluster, error) {
	if err := peer.Sweep(dirPrefix, killDir); err != nil {
		return nil, fmt.Errorf("sweeping a killed test's cluster: %w", err)
	}
	dir, err := peer.NewDir(dirPrefix)
	if err != nil {
		return nil, err
	}
	c, err := lab.StartCeph(ctx, lab.CephOptions{Dir: dir})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

// killDir stops the daemons of a cluster whose test process is gone.
func killDir(dir string) error {
	pids := peer.Processes(func(_ int, cmdline string) bool {
		return strings.HasPrefix(cmdline, "ceph-") && strings.Contains(cmdline, dir+"/")
	})
	return peer.KillAndWait(pids, 10*time.Second)
}

func stop(c *Cluster) error {
	err := c.Stop()
	if err == nil {
		err = os.RemoveAll(c.Dir)
	}
	return err
}
