package controllers

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BindingMetrics say what the scheduler's bindings wait on: how long a
// decided binding waits for its batch to be sent (the queue to bindLoop
// and a free request slot), how large the batches are, and how long a
// batch's request takes. The server registers them beside the API's own
// (hearth_scheduler_binding_*), so a run of `hearth bench scale` can tell
// a scheduler short of decisions from one waiting on its writes.
type BindingMetrics struct {
	wait, batch, size prometheus.Histogram
}

// NewBindingMetrics returns the metrics, to register and give to the
// Scheduler.
func NewBindingMetrics() *BindingMetrics {
	return &BindingMetrics{
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hearth_scheduler_binding_wait_seconds",
			Help:    "Time from a placement decided to its batch of bindings sent.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hearth_scheduler_binding_batch_seconds",
			Help:    "Time of one batch of bindings' request, sent to answered.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		size: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hearth_scheduler_binding_batch_size",
			Help:    "Bindings in one batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
	}
}

// Describe implements prometheus.Collector.
func (m *BindingMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.wait.Describe(ch)
	m.batch.Describe(ch)
	m.size.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *BindingMetrics) Collect(ch chan<- prometheus.Metric) {
	m.wait.Collect(ch)
	m.batch.Collect(ch)
	m.size.Collect(ch)
}

// sent records a batch as its request goes out: each binding's wait
// since its decision.
func (m *BindingMetrics) sent(batch []*pendingBinding, now time.Time) {
	if m == nil {
		return
	}
	m.size.Observe(float64(len(batch)))
	for _, b := range batch {
		if !b.decided.IsZero() {
			m.wait.Observe(now.Sub(b.decided).Seconds())
		}
	}
}

// answered records a batch's request time.
func (m *BindingMetrics) answered(d time.Duration) {
	if m == nil {
		return
	}
	m.batch.Observe(d.Seconds())
}
