package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/storage"
	"hearth.dev/hearth/storage/cephtest"
)

func TestMain(m *testing.M) { cephtest.Main(m) }

// TestRunRBD runs the RBD benchmark against the test cluster, a few
// operations of each kind, and checks that it measured them all. Set
// HEARTH_BENCH_RBD_OPS to measure more (the figures in
// docs/BENCHMARKS.md come from this test with -v).
func TestRunRBD(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Ceph; not in -short mode")
	}
	c := cephtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	key, err := c.AddUser(ctx, "hearth-bench", c.Pool)
	if err != nil {
		t.Fatal(err)
	}
	ops := 5
	if s := os.Getenv("HEARTH_BENCH_RBD_OPS"); s != "" {
		if _, err := fmt.Sscan(s, &ops); err != nil {
			t.Fatalf("HEARTH_BENCH_RBD_OPS=%q: %v", s, err)
		}
	}
	var out bytes.Buffer
	rows, err := RunRBD(ctx, RBDConfig{Pool: storage.RBDConfig{Pool: c.Pool, Monitors: c.Monitors, User: "hearth-bench", Key: key, Dir: t.TempDir()}, Ops: ops}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	if len(rows) != 3 {
		t.Fatalf("got %d rows, want create, clone and snapshot", len(rows))
	}
	for _, r := range rows {
		if len(r.Driver) != ops || len(r.CLI) != ops || r.DriverP50 <= 0 || r.CLIP50 <= 0 {
			t.Errorf("%s: %d driver and %d CLI timings (p50 %v, %v), want %d of each", r.Op, len(r.Driver), len(r.CLI), r.DriverP50, r.CLIP50, ops)
		}
	}
	// Nothing left behind.
	list, err := exec.Command("rbd", "-c", c.Conf, "ls", c.Pool).CombinedOutput()
	if err != nil {
		t.Fatalf("rbd ls: %v: %s", err, list)
	}
	if strings.Contains(string(list), "bench-") || strings.Contains(string(list), "hearth-img-") {
		t.Errorf("the benchmark left images behind:\n%s", list)
	}
	if !strings.Contains(out.String(), "OVERHEAD") {
		t.Errorf("no table printed:\n%s", out.String())
	}
}
