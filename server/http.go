package server

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
)

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// statusOf turns any error into the Status a client gets.
func statusOf(err error) *api.Status {
	var st *api.Status
	if errors.As(err, &st) {
		return st
	}
	return api.NewInternal("%v", err)
}

func writeError(w http.ResponseWriter, err error) {
	st := statusOf(err)
	if st.Code >= 500 {
		slog.Error("request failed", "err", err)
	}
	writeJSON(w, st.Code, st)
}

// statusRecorder remembers the response code for the access log.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection (websockets).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// ServeHTTP serves a request by the route table (routes.go), counting
// it and logging it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	s.route(rec, r)
	s.metrics.observe(r.Method, rec.code, time.Since(start))
	if s.cfg.AccessLog {
		slog.Info("request", "method", r.Method, "path", r.URL.Path, "code", rec.code, "took", time.Since(start))
	}
}

// whoami describes the caller, for `hearth whoami` and the dashboard.
func whoami(p *auth.Principal) api.WhoAmI {
	return api.WhoAmI{Name: p.Name, Role: p.Role, Tenant: p.Tenant, Host: p.Host, Boot: p.Boot}
}
