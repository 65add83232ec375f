package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

// TestRoutingEdges: what the route table's front keeps from before it:
// slashes at either end of an API path are ignored, an unknown API path
// wants a token before it is a 404, the health check answers any method,
// and a path with an empty segment is a 404, not a redirect.
func TestRoutingEdges(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.Server.CAPEM())
	hc := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	tok, err := env.Admin.CreateToken(servertest.Ctx(t), client.UserTokens("admin"), api.TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	token := tok.Token
	for _, tc := range []struct {
		method, path string
		auth         bool
		code         int
		body         string
	}{
		{"GET", api.PathPrefix + "/tenants/", true, 200, `"kind":"TenantList"`},
		{"GET", api.PathPrefix + "//tenants", true, 200, `"kind":"TenantList"`},
		{"GET", api.PathPrefix + "/nothing", false, 401, "no bearer token"},
		{"GET", api.PathPrefix + "/nothing", true, 404, "(see /openapi/v3)"},
		{"GET", api.PathPrefix + "/tenants//default", true, 404, "no such endpoint"},
		{"POST", api.PathPrefix + "/whoami", true, 404, "no such endpoint"},
		{"DELETE", api.PathPrefix + "/tenants", true, 405, "DELETE is not allowed"},
		{"POST", "/healthz", false, 200, "ok"},
		{"GET", "/healthz/", false, 404, "no such endpoint"},
		{"GET", api.PathPrefix, false, 404, "no such endpoint"},
	} {
		req, _ := http.NewRequest(tc.method, env.Server.URL()+tc.path, nil)
		if tc.auth {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.body) {
			t.Errorf("%s %s: %d %s, want %d with %q", tc.method, tc.path, resp.StatusCode, body, tc.code, tc.body)
		}
	}
}
