// Package servertest starts real Hearth control planes for tests: an
// embedded etcd in a temporary directory and the HTTPS API on a loopback
// port, with helpers to make tenants, users and host credentials.
package servertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server"
	"hearth.dev/hearth/server/etcd"
	"hearth.dev/hearth/serving"
)

// Env is a running server and an admin client for it.
type Env struct {
	T       testing.TB
	Server  *server.Server
	Admin   *client.Client
	DataDir string
	close   sync.Once
	// EtcdURL is where the embedded etcd serves clients, for a second
	// server of the same cluster (etcd.Config.Endpoints).
	EtcdURL string
}

// FreePort returns a loopback port nobody listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Option changes the server's configuration before it starts.
type Option func(*server.Config)

// WithoutControllers runs the API alone.
func WithoutControllers() Option { return func(c *server.Config) { c.DisableControllers = true } }

// InDir keeps the server's data (etcd included) in dir, so a test can
// stop a server and start another on what it left.
func InDir(dir string) Option { return func(c *server.Config) { c.DataDir, c.Etcd.DataDir = dir, dir } }

// WithLimits sets the API's timeouts and connection limit.
func WithLimits(l serving.Limits) Option { return func(c *server.Config) { c.Limits = l } }

// Start starts a server that is stopped when the test ends.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	dir := t.TempDir()
	cfg := server.Config{
		DataDir: dir,
		Listen:  "127.0.0.1:0",
		Etcd:    etcd.Config{PeerURL: fmt.Sprintf("https://127.0.0.1:%d", FreePort(t))},
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("starting server: %v", err)
	}
	e := &Env{T: t, Server: s, DataDir: cfg.DataDir, EtcdURL: "unix://" + etcd.SocketPath(cfg.DataDir)}
	t.Cleanup(e.Close)
	conf, err := client.LoadConfig(filepath.Join(cfg.DataDir, "admin.conf"))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := conf.Current("")
	if err != nil {
		t.Fatal(err)
	}
	// A server started again in the same directory (InDir) keeps the
	// admin.conf of the first, whose port was another.
	cur.Server = s.URL()
	if e.Admin, err = client.New(cur); err != nil {
		t.Fatal(err)
	}
	return e
}

// Close stops the server (once; the test's end does it too).
func (e *Env) Close() { e.close.Do(func() { e.Server.Close() }) }

// Ctx is a context for one test step.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// ClientWithToken returns a client of the server using token.
func (e *Env) ClientWithToken(token, tenant string) *client.Client {
	c, err := client.New(&client.Context{Name: "test", Server: e.Server.URL(), CertificateAuthority: string(e.Server.CAPEM()), Token: token, Tenant: tenant})
	if err != nil {
		e.T.Fatal(err)
	}
	return c
}

// Tenant creates a tenant.
func (e *Env) Tenant(name string) {
	e.T.Helper()
	t := &api.Tenant{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tenant"}, Metadata: api.ObjectMeta{Name: name}}
	if _, err := e.Admin.Create(Ctx(e.T), t); err != nil && !api.IsAlreadyExists(err) {
		e.T.Fatalf("creating tenant %s: %v", name, err)
	}
}

// User creates a user with a role (in tenant, or cluster-wide for "") and
// returns a client holding a fresh token of theirs.
func (e *Env) User(name, tenant string, role api.Role) *client.Client {
	e.T.Helper()
	u := &api.User{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "User"}, Metadata: api.ObjectMeta{Name: name},
		Spec: api.UserSpec{Tenant: tenant, Role: role}}
	if _, err := e.Admin.Create(Ctx(e.T), u); err != nil && !api.IsAlreadyExists(err) {
		e.T.Fatalf("creating user %s: %v", name, err)
	}
	var tok api.TokenResponse
	if err := e.Admin.Do(Ctx(e.T), http.MethodPost, api.PathPrefix+"/users/"+name+"/tokens", map[string]string{"description": "test"}, &tok); err != nil {
		e.T.Fatalf("token for %s: %v", name, err)
	}
	return e.ClientWithToken(tok.Token, tenant)
}

// JoinToken makes a join token as a cluster admin would.
func (e *Env) JoinToken(req api.TokenRequest) api.TokenResponse {
	e.T.Helper()
	var jt api.TokenResponse
	if err := e.Admin.Do(Ctx(e.T), http.MethodPost, api.PathPrefix+"/jointokens", req, &jt); err != nil {
		e.T.Fatalf("join token: %v", err)
	}
	return jt
}

// Join joins with a join token and returns what /join answered.
func (e *Env) Join(joinToken string, req api.JoinRequest) (api.JoinResponse, error) {
	var jr api.JoinResponse
	err := e.ClientWithToken(joinToken, "").Do(Ctx(e.T), http.MethodPost, api.PathPrefix+"/join", req, &jr)
	return jr, err
}

// Host joins a new host with a fresh join token, as an agent does (which
// creates its Host), and returns a client acting as that host.
func (e *Env) Host(name string) *client.Client {
	e.T.Helper()
	jr, err := e.Join(e.JoinToken(api.TokenRequest{TTL: "1h"}).Token, api.JoinRequest{Host: name, Address: "127.0.0.1"})
	if err != nil {
		e.T.Fatalf("join %s: %v", name, err)
	}
	return e.ClientWithToken(jr.Token, "")
}

// BootService joins a boot service with a fresh join token, as `hearth
// boot` does, and returns a client acting as it.
func (e *Env) BootService(name string) *client.Client {
	e.T.Helper()
	jr, err := e.Join(e.JoinToken(api.TokenRequest{TTL: "1h"}).Token, api.JoinRequest{Host: name, Boot: true})
	if err != nil {
		e.T.Fatalf("join boot service %s: %v", name, err)
	}
	return e.ClientWithToken(jr.Token, "")
}

// Example returns a fresh example object of kind (see api.Examples), in
// tenant for kinds that have one.
func Example(kind, tenant string) api.Object {
	obj := api.Examples()[kind]
	k, _ := api.KindByName(kind)
	if k.Scope == api.TenantScoped || (k.Scope == api.TenantOptional && tenant != "") {
		obj.GetMetadata().Tenant = tenant
	}
	return obj
}

// Needs creates, unless they exist, the objects an Example of kind must
// find when it is created (in tenant): the network and subnet its VM's
// NICs take their addresses from, the external network a floating IP's
// address comes from.
func (e *Env) Needs(kind, tenant string) {
	e.T.Helper()
	var objs []api.Object
	switch kind {
	case "VirtualMachine":
		objs = []api.Object{Example("ExternalNetwork", ""), Example("Network", tenant), Example("Subnet", tenant)}
	case "FloatingIP":
		objs = []api.Object{Example("ExternalNetwork", "")}
	}
	for _, o := range objs {
		if _, err := e.Admin.Create(Ctx(e.T), o); err != nil && !api.IsAlreadyExists(err) {
			e.T.Fatalf("creating %s, which a %s needs: %v", api.Ref(o), kind, err)
		}
	}
}

// Eventually retries fn until it returns nil or the timeout passes.
func Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// JSON renders v for failure messages.
func JSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}
