package reconcile

import (
	"context"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics exports the counters of the Controllers that run with a context
// carrying it (WithMetrics) as Prometheus metrics: reconciles, errors,
// queue depth and reconcile latency, by controller name. A process gives
// each of its registries its own Metrics, so several servers or agents in
// one test process do not mix their figures.
type Metrics struct {
	mu   sync.Mutex
	ctls map[*Controller]struct{}
}

// NewMetrics returns an empty Metrics to register with a registry.
func NewMetrics() *Metrics { return &Metrics{ctls: map[*Controller]struct{}{}} }

type metricsKey struct{}

// WithMetrics returns a context whose Controllers report to m while they run.
func WithMetrics(ctx context.Context, m *Metrics) context.Context {
	return context.WithValue(ctx, metricsKey{}, m)
}

func metricsFrom(ctx context.Context) *Metrics {
	m, _ := ctx.Value(metricsKey{}).(*Metrics)
	return m
}

func (m *Metrics) add(c *Controller) {
	m.mu.Lock()
	m.ctls[c] = struct{}{}
	m.mu.Unlock()
}

func (m *Metrics) remove(c *Controller) {
	m.mu.Lock()
	delete(m.ctls, c)
	m.mu.Unlock()
}

// latencyBuckets are the upper bounds of the reconcile latency histogram,
// 1 ms to about 33 s.
var latencyBuckets = func() []float64 {
	out := make([]float64, 16)
	for i := range out {
		out[i] = 0.001 * math.Pow(2, float64(i))
	}
	return out
}()

// latency is a histogram kept with atomics, so a reconcile never waits
// for a scrape.
type latency struct {
	counts [16]atomic.Uint64 // per bucket (not cumulative)
	inf    atomic.Uint64
	sum    atomic.Uint64 // nanoseconds
}

func (l *latency) observe(d time.Duration) {
	s := d.Seconds()
	i := sort.SearchFloat64s(latencyBuckets, s)
	if i < len(l.counts) {
		l.counts[i].Add(1)
	} else {
		l.inf.Add(1)
	}
	l.sum.Add(uint64(d.Nanoseconds()))
}

var (
	descReconciles = prometheus.NewDesc("hearth_controller_reconciles_total", "Reconciles by controller.", []string{"controller"}, nil)
	descErrors     = prometheus.NewDesc("hearth_controller_reconcile_errors_total", "Reconciles that returned an error or panicked, by controller.", []string{"controller"}, nil)
	descDepth      = prometheus.NewDesc("hearth_controller_queue_depth", "Keys waiting for a worker, by controller.", []string{"controller"}, nil)
	descLatency    = prometheus.NewDesc("hearth_controller_reconcile_duration_seconds", "How long reconciles take, by controller.", []string{"controller"}, nil)
)

// Describe sends the metrics' descriptions.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- descReconciles
	ch <- descErrors
	ch <- descDepth
	ch <- descLatency
}

// Collect sends each running controller's figures; controllers of one
// name (there should be one) are added together.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	type agg struct {
		rec, errs, depth, inf uint64
		sum                   float64
		buckets               [16]uint64
	}
	by := map[string]*agg{}
	m.mu.Lock()
	for c := range m.ctls {
		a := by[c.Name]
		if a == nil {
			a = &agg{}
			by[c.Name] = a
		}
		st := c.Stats()
		a.rec += uint64(st.Reconciles)
		a.errs += uint64(st.Errors)
		a.depth += uint64(st.QueueDepth)
		for i := range c.latency.counts {
			a.buckets[i] += c.latency.counts[i].Load()
		}
		a.inf += c.latency.inf.Load()
		a.sum += float64(c.latency.sum.Load()) / 1e9
	}
	m.mu.Unlock()
	for name, a := range by {
		ch <- prometheus.MustNewConstMetric(descReconciles, prometheus.CounterValue, float64(a.rec), name)
		ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(a.errs), name)
		ch <- prometheus.MustNewConstMetric(descDepth, prometheus.GaugeValue, float64(a.depth), name)
		cum := map[float64]uint64{}
		var n uint64
		for i, ub := range latencyBuckets {
			n += a.buckets[i]
			cum[ub] = n
		}
		ch <- prometheus.MustNewConstHistogram(descLatency, n+a.inf, a.sum, cum, name)
	}
}
