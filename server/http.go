package server

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
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

// ServeHTTP routes a request: unauthenticated endpoints first, then the
// bearer token, then the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	s.route(rec, r)
	s.metrics.observe(r.Method, rec.code, time.Since(start))
	if s.cfg.AccessLog {
		slog.Info("request", "method", r.Method, "path", r.URL.Path, "code", rec.code, "took", time.Since(start))
	}
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz", "/livez":
		w.Write([]byte("ok\n"))
		return
	case "/readyz":
		if err := s.ready(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
		return
	case "/version":
		writeJSON(w, http.StatusOK, map[string]string{"version": Version, "apiVersion": api.APIVersion})
		return
	case "/openapi/v3", "/openapi.json":
		s.openapi.ServeHTTP(w, r)
		return
	case "/metrics":
		s.serveMetrics(w, r)
		return
	}
	if s.serveUI(w, r) {
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, api.PathPrefix+"/")
	if !ok {
		writeError(w, &api.Status{Kind: "Status", Code: http.StatusNotFound, Reason: api.ReasonNotFound, Message: "no such endpoint: " + r.URL.Path})
		return
	}
	p, err := s.authn.Authenticate(r.Context(), authorization(r))
	if err != nil {
		writeError(w, err)
		return
	}
	segs := strings.Split(strings.Trim(rest, "/"), "/")
	if s.serveSpecial(w, r, p, segs) || s.serveVMConsole(w, r, p, segs) || s.serveStats(w, r, p, segs) || s.serveSensors(w, r, p, segs) || s.serveMachinePower(w, r, p, segs) {
		return
	}
	t, ok := parseTarget(segs)
	if !ok {
		writeError(w, &api.Status{Kind: "Status", Code: http.StatusNotFound, Reason: api.ReasonNotFound, Message: "no such endpoint: " + r.URL.Path + " (see /openapi/v3)"})
		return
	}
	s.serveObjects(w, r, p, t)
}

// whoami describes the caller, for `hearth whoami` and the dashboard.
func whoami(p *auth.Principal) map[string]any {
	who := map[string]any{"name": p.Name, "role": p.Role, "tenant": p.Tenant, "host": p.Host}
	if p.Boot != "" {
		who["boot"] = p.Boot // a boot service's credential
	}
	return who
}
