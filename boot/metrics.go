package boot

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"hearth.dev/hearth/boot/tftp"
	"hearth.dev/hearth/dhcp"
	"hearth.dev/hearth/serving"
)

// metrics are the boot service's Prometheus metrics, served on
// --metrics-listen (plain HTTP, GET /metrics; off unless set): DHCP
// messages and answers, leases, TFTP transfers, HTTP requests. They are
// counted where the boot timeline is written (Observe, observeTFTP) and
// around the HTTP routes.
type metrics struct {
	reg       *prometheus.Registry
	dhcp      *prometheus.CounterVec
	tftp      *prometheus.CounterVec
	tftpBytes prometheus.Counter
	http      *prometheus.CounterVec
	httpTime  *prometheus.HistogramVec

	mu     sync.Mutex
	leases func() int // the DHCP server's bound leases (full mode)
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.dhcp = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hearth_boot_dhcp_messages_total",
		Help: "DHCP messages by type (DISCOVER, REQUEST, ...) and what Hearth answered (OFFER, ACK, NAK, proxy, or none when it stayed silent)."},
		[]string{"type", "reply"})
	m.tftp = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hearth_boot_tftp_transfers_total",
		Help: "TFTP requests and how they ended (request, completed, error)."}, []string{"event"})
	m.tftpBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "hearth_boot_tftp_sent_bytes_total", Help: "File bytes sent by completed TFTP transfers."})
	m.http = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hearth_boot_http_requests_total",
		Help: "HTTP requests by route and response code."}, []string{"route", "code"})
	m.httpTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "hearth_boot_http_request_duration_seconds",
		Help: "HTTP request latency by route (downloads count until their last byte).", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18)},
		[]string{"route"})
	leases := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hearth_boot_dhcp_leases", Help: "Addresses leased by the DHCP server (full mode)."},
		func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.leases == nil {
				return 0
			}
			return float64(m.leases())
		})
	m.reg.MustRegister(m.dhcp, m.tftp, m.tftpBytes, m.http, m.httpTime, leases,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observeDHCP(ev dhcp.Event) {
	reply := "none"
	switch {
	case ev.Proxy:
		reply = "proxy"
	case ev.Reply != 0:
		reply = ev.Reply.String()
	}
	m.dhcp.WithLabelValues(ev.Request.Type.String(), reply).Inc()
}

func (m *metrics) observeTFTP(ev tftp.Event) {
	m.tftp.WithLabelValues(string(ev.Kind)).Inc()
	if ev.Kind == tftp.EventCompleted {
		m.tftpBytes.Add(float64(ev.Bytes))
	}
}

func (m *metrics) setLeases(ds *dhcp.Server) {
	m.mu.Lock()
	m.leases = func() int { return len(ds.Leases()) }
	m.mu.Unlock()
}

// codeRecorder remembers a response's code.
type codeRecorder struct {
	http.ResponseWriter
	code int
}

func (c *codeRecorder) WriteHeader(code int) {
	c.code = code
	c.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (deadlines).
func (c *codeRecorder) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// around counts the requests of mux by the pattern that served them
// (never the raw path: machine names would make a series each).
func (m *metrics) around(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		_, route := mux.Handler(r)
		if route == "" {
			route = "none"
		}
		rec := &codeRecorder{ResponseWriter: w, code: http.StatusOK}
		mux.ServeHTTP(rec, r)
		m.http.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
		m.httpTime.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// serve serves /metrics on addr until ctx ends.
func (m *metrics) serve(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return errors.New("metrics endpoint on " + addr + ": " + err.Error())
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := serving.New("the boot service's metrics endpoint", ln, mux, serving.Limits{}, nil)
	go func() {
		if err := srv.Serve(srv.Listener); err != nil && !errors.Is(err, http.ErrServerClosed) && ctx.Err() == nil {
			slog.Error("metrics listener stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	slog.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return nil
}
