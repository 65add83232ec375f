package reconcile

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetrics: a controller run with a context carrying Metrics reports
// its reconciles, errors, queue depth and latency while it runs, and
// nothing once it has stopped.
func TestMetrics(t *testing.T) {
	m := NewMetrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	var mu sync.Mutex
	done := map[string]int{}
	c := &Controller{Name: "demo", Workers: 2, Reconciler: ReconcilerFunc(func(ctx context.Context, key string) (Result, error) {
		mu.Lock()
		done[key]++
		mu.Unlock()
		if key == "bad" {
			return Result{}, Terminal(errors.New("no"))
		}
		return Result{}, nil
	})}
	ctx, cancel := context.WithCancel(WithMetrics(context.Background(), m))
	stopped := make(chan struct{})
	go func() { c.Run(ctx); close(stopped) }()
	for _, k := range []string{"a", "b", "bad"} {
		c.Enqueue(k)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(done)
		mu.Unlock()
		if n == 3 && c.Stats().Reconciles == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reconciled %v", done)
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := `
# HELP hearth_controller_reconcile_errors_total Reconciles that returned an error or panicked, by controller.
# TYPE hearth_controller_reconcile_errors_total counter
hearth_controller_reconcile_errors_total{controller="demo"} 1
# HELP hearth_controller_reconciles_total Reconciles by controller.
# TYPE hearth_controller_reconciles_total counter
hearth_controller_reconciles_total{controller="demo"} 3
# HELP hearth_controller_queue_depth Keys waiting for a worker, by controller.
# TYPE hearth_controller_queue_depth gauge
hearth_controller_queue_depth{controller="demo"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "hearth_controller_reconciles_total",
		"hearth_controller_reconcile_errors_total", "hearth_controller_queue_depth"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m, "hearth_controller_reconcile_duration_seconds"); n != 1 {
		t.Errorf("%d latency histograms, want 1", n)
	}
	cancel()
	<-stopped
	if n := testutil.CollectAndCount(m); n != 0 {
		t.Errorf("a stopped controller still reports %d series", n)
	}
}
