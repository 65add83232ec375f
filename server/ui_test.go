package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"hearth.dev/hearth/agent/console/consoletest"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

func httpsClient(env *servertest.Env) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.Server.CAPEM())
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// TestDashboardServed: the dashboard is in the binary, at /ui/, with a
// policy that keeps it to its own files, and / sends browsers there.
func TestDashboardServed(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	hc := httpsClient(env)
	for _, c := range []struct {
		path, wantType, wantBody string
		code                     int
	}{
		{"/ui/", "text/html", `<script type="module" src="js/main.js">`, 200},
		{"/ui/js/main.js", "text/javascript", "render(", 200},
		{"/ui/app.css", "text/css", ":root", 200},
		{"/ui/vendor/xterm/LICENSE", "text/plain", "MIT", 200},
		{"/ui/nope.js", "text/plain", "no such file", 404},
	} {
		resp, err := hc.Get(env.Server.URL() + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code || !strings.HasPrefix(resp.Header.Get("Content-Type"), c.wantType) || !strings.Contains(string(body), c.wantBody) {
			t.Errorf("GET %s: %d %s %.80q; want %d %s with %q", c.path, resp.StatusCode, resp.Header.Get("Content-Type"), body, c.code, c.wantType, c.wantBody)
		}
		if c.code == 200 && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q lets scripts come from elsewhere", c.path, resp.Header.Get("Content-Security-Policy"))
		}
	}
	resp, err := hc.Get(env.Server.URL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /: %d to %q; want 302 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	// Files revalidate by ETag: a reload costs a 304.
	req, _ := http.NewRequest(http.MethodGet, env.Server.URL()+"/ui/js/main.js", nil)
	first, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	first.Body.Close()
	req.Header.Set("If-None-Match", first.Header.Get("ETag"))
	again, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	again.Body.Close()
	if first.Header.Get("ETag") == "" || again.StatusCode != http.StatusNotModified {
		t.Errorf("revalidating main.js (ETag %q): %d, want 304", first.Header.Get("ETag"), again.StatusCode)
	}
}

// bearerProtocol is how a browser carries its token on a websocket.
func bearerProtocol(token string) string {
	return "bearer.hearth.dev." + base64.RawURLEncoding.EncodeToString([]byte(token))
}

// TestConsoleTokenInSubprotocol: a browser's console carries its token as
// a websocket subprotocol. It authenticates the console exactly like the
// header (another tenant's token is refused, none is 401), is never
// echoed back, holds when checked again while the console is open, ends
// it when it no longer holds, and counts for nothing on a request that is
// not a websocket upgrade.
func TestConsoleTokenInSubprotocol(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	env.Tenant("a")
	env.Tenant("b")
	member := tokenOf(t, env.User("a-member", "a", api.RoleTenantMember))
	intruder := tokenOf(t, env.User("b-admin", "b", api.RoleTenantAdmin))
	agent := consoletest.StartAgent(t, env.Server.CAPEM())
	hostWithAgent(t, env, "h1", agent, agent.Fingerprint)
	vm := consoletest.NewVM(t, lab)
	agent.Add(vmOn(t, env, "a", "web-1", "h1"), vm)
	hc := httpsClient(env)
	url := strings.Replace(env.Server.URL(), "https://", "wss://", 1) + api.PathPrefix + "/tenants/a/virtualmachines/web-1/console"

	dial := func(protocols ...string) (*websocket.Conn, *http.Response, error) {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return websocket.Dial(dctx, url, &websocket.DialOptions{HTTPClient: hc, Subprotocols: protocols})
	}
	conn, _, err := dial("hearth.console.v1", bearerProtocol(member))
	if err != nil {
		t.Fatalf("console with the token in a subprotocol: %v", err)
	}
	if got := conn.Subprotocol(); got != "hearth.console.v1" {
		t.Errorf("negotiated subprotocol %q, want hearth.console.v1 (the token must not be echoed)", got)
	}
	if err := conn.Write(ctx, websocket.MessageBinary, []byte("hi\r")); err != nil {
		t.Fatal(err)
	}
	if _, data, err := conn.Read(ctx); err != nil || string(data) != "hi\r" {
		t.Errorf("console echo: %q, %v", data, err)
	}
	conn.Close(websocket.StatusNormalClosure, "")

	for _, c := range []struct {
		what      string
		protocols []string
		code      int
	}{
		{"another tenant's token", []string{"hearth.console.v1", bearerProtocol(intruder)}, http.StatusForbidden},
		{"no token", []string{"hearth.console.v1"}, http.StatusUnauthorized},
		{"a token that is not base64", []string{"hearth.console.v1", "bearer.hearth.dev.!!!"}, http.StatusUnauthorized},
		{"a made-up token", []string{"hearth.console.v1", bearerProtocol("hearth-user-madeup")}, http.StatusUnauthorized},
	} {
		_, resp, err := dial(c.protocols...)
		if err == nil || resp == nil || resp.StatusCode != c.code {
			code := 0
			if resp != nil {
				code = resp.StatusCode
			}
			t.Errorf("console with %s: %d, %v; want %d", c.what, code, err, c.code)
		}
	}

	// The console's credential is checked again while it is open (every
	// 5 s, as watches check theirs): the token in the subprotocol holds
	// as the header would, and the console ends once it no longer does.
	leaver := env.User("a-leaver", "a", api.RoleTenantMember)
	conn, _, err = dial("hearth.console.v1", bearerProtocol(tokenOf(t, leaver)))
	if err != nil {
		t.Fatalf("console with the token in a subprotocol: %v", err)
	}
	defer conn.CloseNow()
	time.Sleep(6 * time.Second)
	if err := conn.Write(ctx, websocket.MessageBinary, []byte("still\r")); err != nil {
		t.Fatalf("the console ended past its credential's check: %v", err)
	}
	if _, data, err := conn.Read(ctx); err != nil || string(data) != "still\r" {
		t.Fatalf("the console past its credential's check: %q, %v (want its echo)", data, err)
	}
	if _, err := env.Admin.Delete(ctx, "User", "a", "a-leaver"); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		if _, _, err := conn.Read(rctx); err != nil {
			if rctx.Err() != nil {
				t.Fatalf("the console outlived its deleted User's token by 15s")
			}
			break
		}
	}

	// Outside a websocket upgrade the subprotocol header is no credential.
	req, _ := http.NewRequest(http.MethodGet, env.Server.URL()+api.PathPrefix+"/tenants/a/virtualmachines", nil)
	req.Header.Set("Sec-WebSocket-Protocol", bearerProtocol(member))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a list with the token only in Sec-WebSocket-Protocol: %d, want 401", resp.StatusCode)
	}
}

// TestMetricsNeedClusterReader: the server's metrics name machines, their
// sensors and the controllers, so only cluster-wide users read them: no
// token is 401, a tenant's or a host's token 403, a viewer's 200.
func TestMetricsNeedClusterReader(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("a")
	hc := httpsClient(env)
	get := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, env.Server.URL()+"/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && !strings.Contains(string(body), "hearth_api_requests_total") {
			t.Errorf("/metrics answered 200 without the API's metrics")
		}
		return resp.StatusCode
	}
	for _, c := range []struct {
		who   string
		token string
		code  int
	}{
		{"no one", "", http.StatusUnauthorized},
		{"a tenant's admin", tokenOf(t, env.User("a-admin", "a", api.RoleTenantAdmin)), http.StatusForbidden},
		{"a tenant's viewer", tokenOf(t, env.User("a-viewer", "a", api.RoleViewer)), http.StatusForbidden},
		{"a host", tokenOf(t, env.Host("h1")), http.StatusForbidden},
		{"a boot service", tokenOf(t, env.BootService("boot1")), http.StatusForbidden},
		{"a cluster viewer", tokenOf(t, env.User("prometheus", "", api.RoleViewer)), http.StatusOK},
		{"a cluster admin", tokenOf(t, env.Admin), http.StatusOK},
	} {
		if got := get(c.token); got != c.code {
			t.Errorf("/metrics for %s: %d, want %d", c.who, got, c.code)
		}
	}
}
