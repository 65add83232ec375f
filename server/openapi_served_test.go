package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// TestOpenAPISecurityMatchesServer asks the server, without a token, for
// every GET the served OpenAPI document lists: the operations it marks
// public answer, every other one answers 401.
func TestOpenAPISecurityMatchesServer(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.Server.CAPEM())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get(env.Server.URL() + "/openapi/v3")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	param := regexp.MustCompile(`\{[^}]+\}`)
	public, checked := 0, 0
	for path, ops := range doc.Paths {
		raw, ok := ops["get"]
		if !ok || strings.Contains(path, "/console") {
			continue // the console is a websocket upgrade
		}
		var op struct {
			OperationID string `json:"operationId"`
			Security    *[]any `json:"security"`
		}
		if err := json.Unmarshal(raw, &op); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		isPublic := op.Security != nil && len(*op.Security) == 0
		r, err := hc.Get(env.Server.URL() + param.ReplaceAllString(path, "x"))
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		r.Body.Close()
		checked++
		switch {
		case isPublic && r.StatusCode == http.StatusUnauthorized:
			t.Errorf("%s (%s) is public in the OpenAPI document, but the server wants a token", path, op.OperationID)
		case !isPublic && r.StatusCode != http.StatusUnauthorized:
			t.Errorf("%s (%s) needs a token in the OpenAPI document, but the server answered %d without one", path, op.OperationID, r.StatusCode)
		}
		if isPublic {
			public++
		}
	}
	if public == 0 || checked < 20 {
		t.Fatalf("checked %d GETs, %d public: the document lists too few", checked, public)
	}
}

// TestOpenAPIDryRunMatchesServer sends every write the served document
// says takes dryRun to the server with a bad value: each one reads the
// parameter (and refuses the value, naming it) rather than ignoring it.
func TestOpenAPIDryRunMatchesServer(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := env.Admin.Do(ctx, http.MethodGet, "/openapi/v3", nil, &doc); err != nil {
		t.Fatal(err)
	}
	param := regexp.MustCompile(`\{[^}]+\}`)
	checked := 0
	for path, ops := range doc.Paths {
		for method, raw := range ops {
			var op struct {
				Parameters []struct{ Name string } `json:"parameters"`
			}
			if method == "parameters" || json.Unmarshal(raw, &op) != nil {
				continue
			}
			takes := false
			for _, p := range op.Parameters {
				takes = takes || p.Name == "dryRun"
			}
			if !takes {
				continue
			}
			checked++
			err := env.Admin.Do(ctx, strings.ToUpper(method), param.ReplaceAllString(path, "x")+"?dryRun=Some", map[string]any{}, nil)
			var st *api.Status
			if !errors.As(err, &st) || st.Code != http.StatusBadRequest || !strings.Contains(st.Message, "dryRun") {
				t.Errorf("%s %s?dryRun=Some: got %v, want 400 naming dryRun", strings.ToUpper(method), path, err)
			}
		}
	}
	if checked < 100 {
		t.Fatalf("checked %d writes with dryRun: the document lists too few", checked)
	}
}
