package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func newTestCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("hearth test CA", 24*time.Hour)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

func parseLeaf(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	cert, err := parseCert(certPEM)
	if err != nil {
		t.Fatalf("parse issued certificate: %v", err)
	}
	return cert
}

func TestNewCA(t *testing.T) {
	ca := newTestCA(t)
	if !ca.Cert.IsCA {
		t.Errorf("IsCA = false, want true")
	}
	if got, want := ca.Cert.KeyUsage, x509.KeyUsageCertSign|x509.KeyUsageCRLSign; got != want {
		t.Errorf("KeyUsage = %v, want %v", got, want)
	}
	if got := ca.Cert.SerialNumber.BitLen(); got < 64 || got > 128 {
		t.Errorf("serial number has %d bits, want a random 128-bit number", got)
	}
	if skew := time.Since(ca.Cert.NotBefore); skew < 59*time.Minute {
		t.Errorf("NotBefore is %v before now, want about %v for clock skew", skew, clockSkew)
	}
	if err := ca.Cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
}

func TestNewCARejectsBadInput(t *testing.T) {
	if _, err := NewCA("", time.Hour); err == nil {
		t.Errorf("NewCA with empty common name: got nil error, want one")
	}
	if _, err := NewCA("x", 0); err == nil {
		t.Errorf("NewCA with zero validity: got nil error, want one")
	}
}

func TestIssueServingVerifies(t *testing.T) {
	ca := newTestCA(t)
	certPEM, keyPEM, err := ca.IssueServing("server-1", []string{"hearth.lan"}, []net.IP{net.ParseIP("10.1.2.3")}, time.Hour)
	if err != nil {
		t.Fatalf("IssueServing: %v", err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatalf("issued certificate and key do not form a pair: %v", err)
	}
	leaf := parseLeaf(t, certPEM)

	for _, name := range []string{"hearth.lan", "10.1.2.3"} {
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			_, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}})
			if err != nil {
				t.Errorf("Verify(%q, usage %v) = %v, want nil", name, usage, err)
			}
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "other.lan"}); err == nil {
		t.Errorf("Verify(other.lan) = nil, want a hostname error")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: newTestCA(t).Pool(), DNSName: "hearth.lan"}); err == nil {
		t.Errorf("Verify against another CA = nil, want an unknown authority error")
	}
}

func TestIssueServingRejectsNoNames(t *testing.T) {
	ca := newTestCA(t)
	if _, _, err := ca.IssueServing("server-1", nil, nil, time.Hour); err == nil {
		t.Errorf("IssueServing without SANs: got nil error, want one")
	}
}

func TestParseCARoundTrip(t *testing.T) {
	ca := newTestCA(t)
	got, err := ParseCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatalf("ParseCA: %v", err)
	}
	if !got.Cert.Equal(ca.Cert) {
		t.Errorf("parsed certificate differs from the original")
	}
	// The parsed CA must still sign certificates the original's pool trusts.
	certPEM, _, err := got.IssueServing("server-1", []string{"hearth.lan"}, nil, time.Hour)
	if err != nil {
		t.Fatalf("IssueServing with parsed CA: %v", err)
	}
	if _, err := parseLeaf(t, certPEM).Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "hearth.lan"}); err != nil {
		t.Errorf("certificate from parsed CA does not verify against the original: %v", err)
	}
}

func TestParseCARejects(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	leafPEM, leafKeyPEM, err := ca.IssueServing("server-1", []string{"hearth.lan"}, nil, time.Hour)
	if err != nil {
		t.Fatalf("IssueServing: %v", err)
	}
	tests := []struct {
		name    string
		certPEM []byte
		keyPEM  []byte
	}{
		{"key of another CA", ca.CertPEM, other.KeyPEM},
		{"not a CA certificate", leafPEM, leafKeyPEM},
		{"no certificate", []byte("junk"), ca.KeyPEM},
		{"no key", ca.CertPEM, []byte("junk")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseCA(tt.certPEM, tt.keyPEM); err == nil {
				t.Errorf("ParseCA: got nil error, want one")
			}
		})
	}
}

func serial(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	if cert.Leaf == nil {
		t.Fatalf("returned certificate has no Leaf")
	}
	return cert.Leaf.SerialNumber.String()
}

func TestLoadOrCreateServing(t *testing.T) {
	ca := newTestCA(t)
	dir := filepath.Join(t.TempDir(), "tls")
	dns := []string{"localhost", "hearth.lan"}
	ips := []net.IP{net.ParseIP("127.0.0.1")}

	first, err := LoadOrCreateServing(dir, ca, "server-1", dns, ips)
	if err != nil {
		t.Fatalf("first LoadOrCreateServing: %v", err)
	}
	keyInfo, err := os.Stat(filepath.Join(dir, ServingKeyFile))
	if err != nil {
		t.Fatalf("key file: %v", err)
	}
	if got, want := keyInfo.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("key file mode = %v, want %v", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, ServingCertFile)); err != nil {
		t.Errorf("certificate file: %v", err)
	}
	if left := time.Until(first.Leaf.NotAfter); left < 364*24*time.Hour {
		t.Errorf("certificate valid for %v more, want about a year", left)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("dir holds %d files, want 2 (no temporary files left over)", len(entries))
	}

	second, err := LoadOrCreateServing(dir, ca, "server-1", dns, ips)
	if err != nil {
		t.Fatalf("second LoadOrCreateServing: %v", err)
	}
	if got, want := serial(t, second), serial(t, first); got != want {
		t.Errorf("second call serial = %s, want %s (reused)", got, want)
	}

	// A subset of the SANs is still covered: no reissue.
	subset, err := LoadOrCreateServing(dir, ca, "server-1", dns[:1], nil)
	if err != nil {
		t.Fatalf("LoadOrCreateServing with fewer SANs: %v", err)
	}
	if got, want := serial(t, subset), serial(t, first); got != want {
		t.Errorf("fewer SANs serial = %s, want %s (reused)", got, want)
	}
}

func TestLoadOrCreateServingReissues(t *testing.T) {
	ca := newTestCA(t)
	dns := []string{"hearth.lan"}
	ips := []net.IP{net.ParseIP("10.1.2.3")}

	tests := []struct {
		name string
		// change prepares dir after the first certificate was written and
		// returns the arguments for the second call.
		change func(t *testing.T, dir string) (*CA, []string, []net.IP)
	}{
		{"DNS name added", func(t *testing.T, dir string) (*CA, []string, []net.IP) {
			return ca, append(dns, "api.hearth.lan"), ips
		}},
		{"IP added", func(t *testing.T, dir string) (*CA, []string, []net.IP) {
			return ca, dns, append(ips, net.ParseIP("fd00::1"))
		}},
		{"other CA", func(t *testing.T, dir string) (*CA, []string, []net.IP) {
			return newTestCA(t), dns, ips
		}},
		{"expires within 30 days", func(t *testing.T, dir string) (*CA, []string, []net.IP) {
			certPEM, keyPEM, err := ca.IssueServing("server-1", dns, ips, 10*24*time.Hour)
			if err != nil {
				t.Fatalf("IssueServing: %v", err)
			}
			writeTestFile(t, filepath.Join(dir, ServingCertFile), certPEM)
			writeTestFile(t, filepath.Join(dir, ServingKeyFile), keyPEM)
			return ca, dns, ips
		}},
		{"corrupt certificate", func(t *testing.T, dir string) (*CA, []string, []net.IP) {
			writeTestFile(t, filepath.Join(dir, ServingCertFile), []byte("junk"))
			return ca, dns, ips
		}},
		{"key missing", func(t *testing.T, dir string) (*CA, []string, []net.IP) {
			if err := os.Remove(filepath.Join(dir, ServingKeyFile)); err != nil {
				t.Fatal(err)
			}
			return ca, dns, ips
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			first, err := LoadOrCreateServing(dir, ca, "server-1", dns, ips)
			if err != nil {
				t.Fatalf("first LoadOrCreateServing: %v", err)
			}
			wantCA, wantDNS, wantIPs := tt.change(t, dir)
			second, err := LoadOrCreateServing(dir, wantCA, "server-1", wantDNS, wantIPs)
			if err != nil {
				t.Fatalf("second LoadOrCreateServing: %v", err)
			}
			if serial(t, second) == serial(t, first) {
				t.Errorf("second call serial = %s, want a new certificate", serial(t, second))
			}
			if reason := reissueReason(second.Leaf, wantCA, wantDNS, wantIPs, time.Now()); reason != "" {
				t.Errorf("reissued certificate is still not good: %s", reason)
			}
			// The new certificate must be on disk, not only returned.
			third, err := LoadOrCreateServing(dir, wantCA, "server-1", wantDNS, wantIPs)
			if err != nil {
				t.Fatalf("third LoadOrCreateServing: %v", err)
			}
			if got, want := serial(t, third), serial(t, second); got != want {
				t.Errorf("third call serial = %s, want %s (the reissued one, reused)", got, want)
			}
		})
	}
}

func writeTestFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func containsIP(ips []net.IP, want net.IP) bool {
	for _, ip := range ips {
		if ip.Equal(want) {
			return true
		}
	}
	return false
}

func containsString(list []string, want string) bool {
	for _, s := range list {
		if s == want {
			return true
		}
	}
	return false
}

func TestSANs(t *testing.T) {
	hostname, err := os.Hostname()
	if err != nil {
		t.Fatalf("os.Hostname: %v", err)
	}
	tests := []struct {
		listen  string
		extra   []string
		wantDNS []string
		wantIPs []string
	}{
		{listen: "0.0.0.0:8443", wantDNS: []string{"localhost", hostname}, wantIPs: []string{"127.0.0.1", "::1"}},
		{listen: "[::]:8443", wantDNS: []string{"localhost"}, wantIPs: []string{"127.0.0.1", "::1"}},
		{listen: ":8443", wantDNS: []string{"localhost"}, wantIPs: []string{"127.0.0.1", "::1"}},
		{listen: "10.1.2.3:8443", wantDNS: []string{"localhost", hostname}, wantIPs: []string{"10.1.2.3", "127.0.0.1", "::1"}},
		{listen: "[fd00::5]:8443", wantIPs: []string{"fd00::5"}},
		{listen: "hearth.lan:8443", wantDNS: []string{"hearth.lan"}},
		{
			listen:  "127.0.0.1:8443",
			extra:   []string{"api.hearth.lan", "192.168.1.10", " ", "[fd00::7]"},
			wantDNS: []string{"api.hearth.lan"},
			wantIPs: []string{"192.168.1.10", "fd00::7"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.listen, func(t *testing.T) {
			dns, ips, err := SANs(tt.listen, tt.extra)
			if err != nil {
				t.Fatalf("SANs(%q): %v", tt.listen, err)
			}
			for _, want := range tt.wantDNS {
				if !containsString(dns, want) {
					t.Errorf("SANs(%q) DNS names = %q, want them to contain %q", tt.listen, dns, want)
				}
			}
			for _, want := range tt.wantIPs {
				if !containsIP(ips, net.ParseIP(want)) {
					t.Errorf("SANs(%q) IPs = %v, want them to contain %s", tt.listen, ips, want)
				}
			}
			if containsString(dns, "") {
				t.Errorf("SANs(%q) DNS names = %q, want no empty name", tt.listen, dns)
			}
			seen := map[string]bool{}
			for _, ip := range ips {
				if seen[ip.String()] {
					t.Errorf("SANs(%q) IPs = %v, want no duplicate %s", tt.listen, ips, ip)
				}
				seen[ip.String()] = true
			}
		})
	}
}

func TestSANsRejectsBadListen(t *testing.T) {
	if _, _, err := SANs("8443", nil); err == nil {
		t.Errorf("SANs(%q): got nil error, want one", "8443")
	}
}

// TestTLSHandshake serves the issued certificate on a loopback listener and
// dials it with a client that trusts the CA, then with one that trusts
// another CA.
func TestTLSHandshake(t *testing.T) {
	ca := newTestCA(t)
	dns, ips, err := SANs("127.0.0.1:0", nil)
	if err != nil {
		t.Fatalf("SANs: %v", err)
	}
	cert, err := LoadOrCreateServing(t.TempDir(), ca, "server-1", dns, ips)
	if err != nil {
		t.Fatalf("LoadOrCreateServing: %v", err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				conn.(*tls.Conn).Handshake()
			}()
		}
	}()

	dial := func(roots *x509.CertPool) error {
		dialer := &net.Dialer{Timeout: 5 * time.Second}
		conn, err := tls.DialWithDialer(dialer, "tcp", ln.Addr().String(), &tls.Config{RootCAs: roots})
		if err != nil {
			return err
		}
		return conn.Close()
	}

	if err := dial(ca.Pool()); err != nil {
		t.Errorf("handshake with client trusting the CA: %v, want success", err)
	}

	err = dial(newTestCA(t).Pool())
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("handshake with client trusting another CA: %v, want x509.UnknownAuthorityError", err)
	}
}
