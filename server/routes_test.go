package server

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"hearth.dev/hearth/server/openapi"
)

// wildcard matches a path parameter in a ServeMux pattern ({name},
// {id...}) or in the OpenAPI document ({name}).
var wildcard = regexp.MustCompile(`\{[^}]*\}`)

// TestRoutesMatchOpenAPI: the route table and the OpenAPI document
// describe the same API. Every method of every route is documented, and
// every documented operation reaches, through the server's own mux, the
// route that documents it rather than the 404 for unknown endpoints.
func TestRoutesMatchOpenAPI(t *testing.T) {
	s := &Server{}
	routes := s.routes()
	mux := s.newMux()
	paths := openapi.Document("test")["paths"].(map[string]any)

	// The operations the document lists, by method and path, with the
	// names of parameters left out (the table and the document may call
	// a User's name {user} or {name}).
	documented := map[string]string{}
	for path, item := range paths {
		for method := range item.(map[string]any) {
			if method != "parameters" {
				documented[strings.ToUpper(method)+" "+wildcard.ReplaceAllString(path, "{}")] = path
			}
		}
	}

	byPattern := map[string]route{}
	routed := map[string]bool{}
	for _, rt := range routes {
		if _, dup := byPattern[rt.pattern]; dup {
			t.Errorf("two routes have the pattern %q", rt.pattern)
		}
		byPattern[rt.pattern] = rt
		path := rt.pattern
		if _, p, ok := strings.Cut(rt.pattern, " "); ok {
			path = p
		}
		for _, m := range rt.methods {
			op := m + " " + wildcard.ReplaceAllString(path, "{}")
			routed[op] = true
			if _, ok := documented[op]; !ok {
				t.Errorf("route %q serves %s, which the OpenAPI document does not list", rt.pattern, op)
			}
		}
	}

	var ops []string
	for op := range documented {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	for _, op := range ops {
		if !routed[op] {
			t.Errorf("the OpenAPI document lists %s, which no route serves", op)
			continue
		}
		method, _, _ := strings.Cut(op, " ")
		path := wildcard.ReplaceAllString(documented[op], "x1")
		_, pattern := mux.Handler(httptest.NewRequest(method, path, nil))
		rt, ok := byPattern[pattern]
		if !ok || !slices.Contains(rt.methods, method) {
			t.Errorf("%s %s reaches the mux's %q, not a route that serves it", method, path, pattern)
		}
	}
	if len(ops) < 100 {
		t.Fatalf("the document lists %d operations: too few to believe", len(ops))
	}
}

// TestRouteUnknownEndpoints: what no route takes is a 404 (after the
// bearer token under the API), never the mux's redirect or its 405.
func TestRouteUnknownEndpoints(t *testing.T) {
	s := &Server{}
	mux := s.newMux()
	for _, tc := range []struct{ method, path, want string }{
		{http.MethodGet, "/nothing", "/"},
		{http.MethodGet, "/apis/hearth.dev/v1alpha1", "/apis/hearth.dev/v1alpha1"},
		{http.MethodGet, "/apis/hearth.dev/v1alpha1/nothing", "/apis/hearth.dev/v1alpha1/"},
		{http.MethodPost, "/apis/hearth.dev/v1alpha1/whoami", "/apis/hearth.dev/v1alpha1/"},
		{http.MethodGet, "/apis/hearth.dev/v1alpha1/join", "/apis/hearth.dev/v1alpha1/"},
		{http.MethodGet, "/apis/hearth.dev/v1alpha1/virtualmachines/web", "/apis/hearth.dev/v1alpha1/"},
		{http.MethodGet, "/apis/hearth.dev/v1alpha1/tenants/t/hosts", "/apis/hearth.dev/v1alpha1/"},
		{http.MethodGet, "/apis/hearth.dev/v1alpha1/jointokens/a/b", "/apis/hearth.dev/v1alpha1/"},
		// Other methods on a route that answers them itself reach it.
		{http.MethodPut, "/apis/hearth.dev/v1alpha1/jointokens", "/apis/hearth.dev/v1alpha1/jointokens"},
		{http.MethodDelete, "/apis/hearth.dev/v1alpha1/hosts", "/apis/hearth.dev/v1alpha1/hosts"},
	} {
		if _, got := mux.Handler(httptest.NewRequest(tc.method, tc.path, nil)); got != tc.want {
			t.Errorf("%s %s reaches %q, want %q", tc.method, tc.path, got, tc.want)
		}
	}
}
