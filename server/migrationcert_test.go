package server_test

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/pki"
	"hearth.dev/hearth/server/servertest"
)

// TestMigrationCertificates: a host has its own key signed as its
// live-migration certificate: for its name and its Host's spec.address
// only, whatever its request claims, by a migration CA that is not the
// cluster CA (so no API or etcd certificate is one QEMU accepts), the
// same CA for every host. No one else may have a certificate signed for
// a host: not another host, not a cluster admin, not a tenant.
func TestMigrationCertificates(t *testing.T) {
	env := servertest.Start(t)
	ctx := servertest.Ctx(t)
	env.Tenant("lab")
	h1, h2 := env.Host("h1"), env.Host("h2")
	alice := env.User("alice", "lab", api.RoleTenantAdmin)
	if _, err := env.Admin.Patch(ctx, "Host", "", "h2", map[string]any{"spec": map[string]any{"address": "192.0.2.2"}}, false); err != nil {
		t.Fatal(err)
	}
	sign := func(c *client.Client, host, claim string) (api.MigrationCertResponse, error) {
		_, csr, err := pki.NewMigrationKey(claim)
		if err != nil {
			t.Fatal(err)
		}
		var resp api.MigrationCertResponse
		err = c.Do(ctx, http.MethodPost, api.MigrationCertPath(host), api.MigrationCertRequest{CSR: csr}, &resp)
		return resp, err
	}
	leaf := func(certPEM string) *x509.Certificate {
		b, _ := pem.Decode([]byte(certPEM))
		if b == nil {
			t.Fatalf("not a PEM certificate: %q", certPEM)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	clusterCA, err := os.ReadFile(filepath.Join(env.DataDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}

	var cas []string
	for _, tt := range []struct {
		c          *client.Client
		host, addr string
	}{{h1, "h1", "127.0.0.1"}, {h2, "h2", "192.0.2.2"}} {
		resp, err := sign(tt.c, tt.host, "somebody-else")
		if err != nil {
			t.Fatalf("%s: %v", tt.host, err)
		}
		c := leaf(resp.Certificate)
		if c.Subject.CommonName != tt.host || len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(net.ParseIP(tt.addr)) || len(c.DNSNames) != 0 {
			t.Errorf("%s: certificate for %q at %v %v; want %s at %s only", tt.host, c.Subject.CommonName, c.IPAddresses, c.DNSNames, tt.host, tt.addr)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM([]byte(resp.CA))
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s: the certificate does not chain to the CA given: %v", tt.host, err)
		}
		cluster := x509.NewCertPool()
		cluster.AppendCertsFromPEM(clusterCA)
		if _, err := c.Verify(x509.VerifyOptions{Roots: cluster, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
			t.Errorf("%s: the migration certificate chains to the cluster CA", tt.host)
		}
		if leaf(resp.CA).Subject.CommonName != pki.MigrationCACommonName {
			t.Errorf("%s: CA %q", tt.host, leaf(resp.CA).Subject.CommonName)
		}
		cas = append(cas, resp.CA)
	}
	if cas[0] != cas[1] {
		t.Error("h1 and h2 got certificates of different CAs")
	}

	for _, tt := range []struct {
		name string
		c    *client.Client
	}{{"another host", h2}, {"a cluster admin", env.Admin}, {"a tenant admin", alice}} {
		if _, err := sign(tt.c, "h1", "h1"); !api.IsForbidden(err) {
			t.Errorf("%s had a certificate signed for h1: %v", tt.name, err)
		}
	}
	if _, err := sign(h1, "h1", "h1"); err != nil {
		t.Errorf("h1 asking again: %v", err)
	}
	var resp api.MigrationCertResponse
	if err := h1.Do(ctx, http.MethodPost, api.MigrationCertPath("h1"), api.MigrationCertRequest{CSR: []byte("nonsense")}, &resp); api.ReasonOf(err) != api.ReasonInvalid {
		t.Errorf("a request that is no CSR: %v, want a 422", err)
	}
}
