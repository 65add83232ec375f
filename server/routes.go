package server

import (
	"net/http"
	"path"
	"strings"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
)

// route is one endpoint of the API server. Every endpoint is in routes,
// one table, and routes_test.go checks it against the OpenAPI document
// both ways: every route is documented, every documented path is routed.
type route struct {
	// pattern is a net/http ServeMux pattern. With a method ("GET /x"),
	// other methods on the path are an unknown endpoint (404); without
	// one, the handler answers them itself (a 405, say).
	pattern string
	// methods are what the route serves, as the OpenAPI document lists
	// them (HEAD goes with GET).
	methods []string
	// public routes need no bearer token; the handler of every other route
	// runs after authentication, with the caller.
	public  http.HandlerFunc
	handler func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error
	// urgent routes never wait for their turn: a host's write otherwise
	// does, behind others' beyond a few per core (fairqueue.go).
	urgent bool
}

// Method sets of routes.
var (
	get       = []string{http.MethodGet}
	list      = []string{http.MethodGet, http.MethodPost}
	object    = []string{http.MethodGet, http.MethodPut, http.MethodPatch, http.MethodDelete}
	subObject = []string{http.MethodGet, http.MethodPut, http.MethodPatch}
)

// routes is the API server's route table.
func (s *Server) routes() []route {
	const p = api.PathPrefix
	ok := func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) }
	rs := []route{
		// Public: no bearer token.
		{pattern: "/healthz", methods: get, public: ok},
		{pattern: "/livez", methods: get, public: ok},
		{pattern: "/readyz", methods: get, public: s.serveReady},
		{pattern: "/version", methods: get, public: func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"version": Version, "apiVersion": api.APIVersion})
		}},
		{pattern: "/openapi/v3", methods: get, public: s.serveOpenAPI},
		{pattern: "/openapi.json", methods: get, public: s.serveOpenAPI},
		// Prometheus's figures, for cluster-wide users (metrics.go).
		{pattern: "GET /metrics", methods: get, handler: s.serveMetrics},

		// Who the caller is, tokens, joining (tokens.go).
		{pattern: "GET " + api.WhoAmIPath, methods: get, handler: func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
			writeJSON(w, http.StatusOK, whoami(p))
			return nil
		}},
		{pattern: "POST " + api.JoinPath, methods: []string{http.MethodPost}, handler: s.join},
		{pattern: api.JoinTokensPath, methods: list, handler: s.joinTokens},
		{pattern: api.JoinTokensPath + "/{id}", methods: []string{http.MethodDelete}, handler: s.joinTokens},
		{pattern: api.HostTokensPath, methods: get, handler: s.hostTokens},
		{pattern: api.HostTokensPath + "/{id}", methods: []string{http.MethodDelete}, handler: s.hostTokens},
		{pattern: p + "/users/{user}/tokens", methods: list, handler: s.userTokens},
		{pattern: p + "/users/{user}/tokens/{id...}", methods: []string{http.MethodDelete}, handler: s.userTokens},

		// A host renews its lease (hostlease.go): at once, never behind
		// its own VMs' writes, or it would be declared dead.
		{pattern: "POST " + p + "/hosts/{name}/heartbeat", methods: []string{http.MethodPost}, handler: s.serveHostHeartbeat, urgent: true},
		// A host has its live-migration certificate signed (migrationcert.go).
		{pattern: "POST " + p + "/hosts/{name}/migrationcert", methods: []string{http.MethodPost}, handler: s.serveMigrationCert},

		// VMs bound to hosts in batches, by the scheduler (bindings.go).
		{pattern: "POST " + api.BindingsPath, methods: []string{http.MethodPost}, handler: s.serveBindings},

		// A VM's console log and console (console.go).
		{pattern: p + "/tenants/{tenant}/virtualmachines/{name}/" + subresourceLog, methods: get, handler: s.serveVMConsole},
		{pattern: p + "/tenants/{tenant}/virtualmachines/{name}/" + subresourceConsole, methods: get, handler: s.serveVMConsole},

		// The recent figures of a host and a VM, kept by their agent
		// (stats.go).
		{pattern: p + "/hosts/{name}/" + api.SubresourceStats, methods: get, handler: s.serveHostStats},
		{pattern: p + "/tenants/{tenant}/virtualmachines/{name}/" + api.SubresourceStats, methods: get, handler: s.serveVMStats},

		// A machine's BMC sensors (sensors.go) and power (machinepower.go).
		{pattern: p + "/machines/{name}/" + api.SubresourceSensors, methods: get, handler: s.machineSensors},
		{pattern: p + "/machines/{name}/" + api.SubresourcePower, methods: []string{http.MethodPost}, handler: s.machinePower},

		// An uploaded image's bytes (images.go).
		{pattern: p + "/tenants/{tenant}/images/{name}/" + subresourceContent, methods: []string{http.MethodPut, http.MethodGet}, handler: s.serveImageContent},
		{pattern: p + "/images/{name}/" + subresourceContent, methods: []string{http.MethodPut, http.MethodGet}, handler: s.serveImageContent},
	}
	// Objects (objects.go): each kind's paths, as its scope has them.
	for _, k := range api.Kinds() {
		cluster, tenant := p+"/"+k.Plural, p+"/tenants/{tenant}/"+k.Plural
		var collections []string
		switch k.Scope {
		case api.ClusterScoped:
			collections = []string{cluster}
		case api.TenantScoped:
			collections = []string{tenant}
			// Every tenant's, read only.
			rs = append(rs, route{pattern: cluster, methods: get, handler: s.objectRoute(k, false)})
		case api.TenantOptional:
			collections = []string{tenant, cluster}
		}
		for _, c := range collections {
			rs = append(rs,
				route{pattern: c, methods: list, handler: s.objectRoute(k, false)},
				route{pattern: c + "/{name}", methods: object, handler: s.objectRoute(k, false)},
				route{pattern: c + "/{name}/status", methods: subObject, handler: s.objectRoute(k, true)},
			)
		}
	}
	return rs
}

// newMux builds the ServeMux of the route table. A path under the API
// that no route takes is authenticated like any, then a 404; any other is
// a 404.
func (s *Server) newMux() *http.ServeMux {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		var h http.Handler = rt.public
		switch {
		case rt.public != nil:
		case rt.urgent:
			h = s.authenticated(rt.handler)
		default:
			h = s.authenticated(s.queuedForHosts(rt.handler))
		}
		mux.Handle(rt.pattern, h)
	}
	// The dashboard's files (ui.go) are no endpoint of the API: it is a
	// client of the routes above, like the CLI.
	s.uiRoutes(mux)
	mux.Handle(api.PathPrefix+"/", s.authenticated(noSuchAPIEndpoint))
	// Not under PathPrefix+"/": without this, the mux would redirect to
	// it.
	mux.HandleFunc(api.PathPrefix, noSuchEndpoint)
	mux.HandleFunc("/", noSuchEndpoint)
	return mux
}

func noSuchEndpoint(w http.ResponseWriter, r *http.Request) {
	writeError(w, &api.Status{Kind: "Status", Code: http.StatusNotFound, Reason: api.ReasonNotFound, Message: "no such endpoint: " + r.URL.Path})
}

func noSuchAPIEndpoint(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	return &api.Status{Kind: "Status", Code: http.StatusNotFound, Reason: api.ReasonNotFound, Message: "no such endpoint: " + r.URL.Path + " (see /openapi/v3)"}
}

// authenticated runs h with the caller the request's bearer token names,
// and answers its error.
func (s *Server) authenticated(h func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authn.Authenticate(r.Context(), authorization(r))
		if err == nil {
			err = h(w, r, p)
		}
		if err != nil {
			writeError(w, err)
		}
	})
}

// route serves a request by the route table. API paths are taken with
// or without slashes at either end; a path that is not clean otherwise
// (an empty, . or .. segment) names no endpoint, rather than being
// redirected as the mux would.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if rest, ok := strings.CutPrefix(p, api.PathPrefix+"/"); ok {
		if trimmed := strings.Trim(rest, "/"); trimmed != rest {
			r.URL.Path, r.URL.RawPath = api.PathPrefix+"/"+trimmed, ""
			p = r.URL.Path
		}
		if path.Clean(p) != p && p != api.PathPrefix+"/" {
			s.authenticated(noSuchAPIEndpoint).ServeHTTP(w, r)
			return
		}
	} else if c := path.Clean(p); c != p && c+"/" != p {
		// A trailing slash is clean: the dashboard's directories have one.
		noSuchEndpoint(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	if err := s.ready(r.Context()); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ok\n"))
}

func (s *Server) serveOpenAPI(w http.ResponseWriter, r *http.Request) { s.openapi.ServeHTTP(w, r) }
