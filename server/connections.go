package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"hearth.dev/hearth/serving"
)

// Connections are the API server's client connections: those open now
// and those accepted since it started. A client (an agent, the CLI, the
// controllers) holds one, over HTTP/2, for all its requests and watches;
// Accepted growing much faster than clients come says they reconnect, each
// time with a TLS handshake.
type Connections struct {
	Open, Accepted int64
}

// Connections returns the API server's connection counts.
func (s *Server) Connections() Connections {
	return Connections{Open: s.serving.Open(), Accepted: s.serving.Accepted()}
}

// withConnections adds the connection counts to the metrics.
func (m *metrics) withConnections(hs *serving.Server) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "hearth_api_connections_open", Help: "Client connections open to the API server (a client holds one, over HTTP/2, for all its requests and watches).",
		}, func() float64 { return float64(hs.Open()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "hearth_api_connections_accepted_total", Help: "Client connections the API server accepted, each with a TLS handshake.",
		}, func() float64 { return float64(hs.Accepted()) }),
	)
}
