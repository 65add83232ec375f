package server

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/reconcile"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/controllers"
)

// metrics are the API's Prometheus metrics, on their own registry so
// tests can run several servers in one process.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// delivery is each watch event's time from the server reading it
	// from etcd to its watcher's connection being flushed with it.
	delivery *prometheus.HistogramVec
	// hostWriteWait is each host's write's wait for its turn
	// (fairqueue.go).
	hostWriteWait prometheus.Histogram
	handler       http.Handler
	// controllers are the leader's controllers (reconcile.WithMetrics).
	controllers *reconcile.Metrics
	// bindings are the scheduler's (what its bindings wait on).
	bindings *controllers.BindingMetrics
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hearth_api_requests_total", Help: "API requests by method and response code.",
	}, []string{"method", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "hearth_api_request_duration_seconds", Help: "API request latency by method (watches count their whole life).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"method"})
	m.delivery = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "hearth_watch_delivery_seconds",
		Help:    "Watch events from the server reading the change from etcd to the watcher's connection flushed with it, by watcher (host: an agent's; other).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"watcher"})
	m.hostWriteWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hearth_api_host_write_wait_seconds",
		Help:    "Hosts' writes' wait for their turn (at most a few per core run at once; the rest wait, fairly between hosts).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	m.controllers = reconcile.NewMetrics()
	m.bindings = controllers.NewBindingMetrics()
	m.reg.MustRegister(m.requests, m.latency, m.delivery, m.hostWriteWait, m.controllers, m.bindings, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m
}

// withEmbeddedEtcd adds the embedded etcd member's own metrics (etcd_*:
// database size, WAL fsync and backend commit latency, leader changes,
// proposals), which etcd registers in the process's default registry.
// They are the process's: one server per process, as in production.
func (m *metrics) withEmbeddedEtcd() {
	m.handler = promhttp.HandlerFor(prometheus.Gatherers{m.reg, prefixGatherer{prometheus.DefaultGatherer, "etcd_"}}, promhttp.HandlerOpts{})
}

// prefixGatherer passes on the metric families whose names start with prefix.
type prefixGatherer struct {
	g      prometheus.Gatherer
	prefix string
}

func (p prefixGatherer) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := p.g.Gather()
	out := mfs[:0]
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), p.prefix) {
			out = append(out, mf)
		}
	}
	return out, err
}

func (m *metrics) observe(method string, code int, d time.Duration) {
	m.requests.WithLabelValues(method, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(method).Observe(d.Seconds())
}

func (m *metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.handler.ServeHTTP(w, r) }

// serveMetrics answers Prometheus. The figures name machines and their
// sensors, controllers and the store's health, which are the cluster's
// business: the caller needs a cluster-wide user's token (an admin's or a
// viewer's, such as a viewer made for Prometheus), not a tenant's or a
// host's.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if p.HostCredential() || p.Tenant != "" || (p.Role != api.RoleClusterAdmin && p.Role != api.RoleViewer) {
		return api.NewForbidden("%s may not read the server's metrics: they are for cluster-wide users (make Prometheus a viewer: hearth apply a User with role viewer and no tenant, then hearth token create --user NAME)", p.Name)
	}
	s.metrics.ServeHTTP(w, r)
	return nil
}
