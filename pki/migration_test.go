package pki

import (
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"
)

// TestIssueMigration: a host's migration certificate is for its name and
// address only, whatever its request asks, good for both ends of TLS, and
// chains to the migration CA alone; bad requests are refused.
func TestIssueMigration(t *testing.T) {
	ca, err := NewMigrationCA(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, csr, err := NewMigrationKey("somebody-else")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.IssueMigration("h1", net.ParseIP("192.0.2.7"), csr, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := parseLeaf(t, certPEM)
	if leaf.Subject.CommonName != "h1" || len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("192.0.2.7")) {
		t.Errorf("certificate for %q, names %v, addresses %v; want h1 at 192.0.2.7 only", leaf.Subject.CommonName, leaf.DNSNames, leaf.IPAddresses)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("usage %v: %v", usage, err)
		}
	}
	other, err := NewCA("hearth-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: other.Pool()}); err == nil {
		t.Error("the migration certificate verifies against another CA")
	}

	tampered := append([]byte(nil), csr...)
	tampered[len(tampered)-5] ^= 0xff
	for _, tt := range []struct {
		name, host string
		addr       net.IP
		csr        []byte
		want       string
	}{
		{"no host", "", net.ParseIP("192.0.2.7"), csr, "host name is empty"},
		{"no address", "h1", nil, csr, "no address"},
		{"not a request", "h1", net.ParseIP("192.0.2.7"), []byte("nonsense"), "csr"},
		{"bad signature", "h1", net.ParseIP("192.0.2.7"), tampered, "csr"},
	} {
		if _, err := ca.IssueMigration(tt.host, tt.addr, tt.csr, time.Hour); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want one saying %q", tt.name, err, tt.want)
		}
	}
}
