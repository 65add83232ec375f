package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"hearth.dev/hearth/atomicfile"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Names of the serving certificate and key files in the directory given to
// LoadOrCreateServing.
const (
	ServingCertFile = "server.crt"
	ServingKeyFile  = "server.key"
)

const (
	// servingValidity is how long certificates issued by
	// LoadOrCreateServing last.
	servingValidity = 365 * 24 * time.Hour
	// renewBefore is how long before expiry LoadOrCreateServing replaces a
	// certificate, so a server restarted now and then never serves an
	// expired one.
	renewBefore = 30 * 24 * time.Hour
)

// IssueServing issues a certificate for a server reachable as dnsNames and
// ips, valid for validity from now. It allows both server and client
// authentication. (etcd members do not use it: they have peer
// certificates of their own, see IssuePeer.)
func (ca *CA) IssueServing(commonName string, dnsNames []string, ips []net.IP, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if validity <= 0 {
		return nil, nil, fmt.Errorf("issue serving certificate %q: validity %v is not positive", commonName, validity)
	}
	if len(dnsNames) == 0 && len(ips) == 0 {
		return nil, nil, fmt.Errorf("issue serving certificate %q: no DNS names or IP addresses given; a client could not verify it", commonName)
	}
	return ca.issue("serving certificate", &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    dnsNames,
		IPAddresses: ips,
	}, validity)
}

// issue signs a leaf certificate from tmpl with a new P-256 key: it sets
// the serial number, the validity (from a little in the past, for clock
// skew) and the key usage every leaf here shares. what names the kind of
// certificate in errors.
func (ca *CA) issue(what string, tmpl *x509.Certificate, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	name := tmpl.Subject.CommonName
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s %q: generate key: %w", what, name, err)
	}
	if tmpl.SerialNumber, err = randomSerial(); err != nil {
		return nil, nil, fmt.Errorf("issue %s %q: %w", what, name, err)
	}
	now := time.Now()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-clockSkew), now.Add(validity)
	tmpl.KeyUsage, tmpl.BasicConstraintsValid = x509.KeyUsageDigitalSignature, true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s %q: sign: %w", what, name, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s %q: %w", what, name, err)
	}
	return encodeCert(der), keyPEM, nil
}

// LoadOrCreateServing returns the serving certificate kept in dir
// (ServingCertFile and ServingKeyFile). It issues and writes a new one,
// valid for a year, when the files are missing or unreadable as a key pair,
// or when the certificate expires within 30 days, was not signed by ca, or
// lacks one of dnsNames or ips. Otherwise it reuses the files, so restarts
// do not change the certificate clients see.
//
// The files are replaced atomically; the key is readable by its owner only.
func LoadOrCreateServing(dir string, ca *CA, commonName string, dnsNames []string, ips []net.IP) (tls.Certificate, error) {
	return loadOrCreateLeaf("serving certificate", filepath.Join(dir, ServingCertFile), filepath.Join(dir, ServingKeyFile),
		ca, commonName, dnsNames, ips, func() ([]byte, []byte, error) {
			return ca.IssueServing(commonName, dnsNames, ips, servingValidity)
		})
}

// loadOrCreateLeaf is LoadOrCreateServing for any leaf certificate kept at
// certPath and keyPath: issue makes a new one when the files are not a
// good certificate for commonName, dnsNames and ips from ca. what names
// the certificate in errors.
func loadOrCreateLeaf(what, certPath, keyPath string, ca *CA, commonName string, dnsNames []string, ips []net.IP, issue func() (certPEM, keyPEM []byte, err error)) (tls.Certificate, error) {
	if ca == nil {
		return tls.Certificate{}, fmt.Errorf("load %s: no CA given", what)
	}
	cert, err := LoadKeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	if cert != nil && cert.Leaf.Subject.CommonName == commonName && reissueReason(cert.Leaf, ca, dnsNames, ips, time.Now()) == "" {
		return *cert, nil
	}

	certPEM, keyPEM, err := issue()
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.MkdirAll(filepath.Dir(certPath), 0o700); err != nil {
		return tls.Certificate{}, fmt.Errorf("write %s: %w", what, err)
	}
	// The key goes first: if we stop between the two renames, the old
	// certificate no longer matches the new key, and the next call reissues.
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, fmt.Errorf("write %s key: %w", what, err)
	}
	if err := atomicfile.Write(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("write %s: %w", what, err)
	}
	fresh, err := KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load issued %s: %w", what, err)
	}
	return fresh, nil
}

// LoadKeyPair reads the key pair at certPath and keyPath. It returns nil and
// no error when the files are missing or do not form a valid key pair, since
// the caller then simply issues a new one; other read errors (such as
// permissions) are returned, as overwriting would hide them.
func LoadKeyPair(certPath, keyPath string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	cert, err := KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil
	}
	return &cert, nil
}

// KeyPair parses a PEM key pair into a tls.Certificate with Leaf set.
func KeyPair(certPEM, keyPEM []byte) (tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	// X509KeyPair fills Leaf unless GODEBUG x509keypairleaf=0 says not to.
	if cert.Leaf == nil {
		cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return tls.Certificate{}, err
		}
	}
	return cert, nil
}

// reissueReason says why leaf should be replaced at time now, or returns ""
// if it is still good.
func reissueReason(leaf *x509.Certificate, ca *CA, dnsNames []string, ips []net.IP, now time.Time) string {
	if left := leaf.NotAfter.Sub(now); left < renewBefore {
		return fmt.Sprintf("expires %s, within %v", leaf.NotAfter.Format(time.RFC3339), renewBefore)
	}
	if err := leaf.CheckSignatureFrom(ca.Cert); err != nil {
		return fmt.Sprintf("not signed by CA %q: %v", ca.Cert.Subject.CommonName, err)
	}
	for _, name := range dnsNames {
		if !hasDNSName(leaf, name) {
			return fmt.Sprintf("lacks DNS name %q", name)
		}
	}
	for _, ip := range ips {
		if !hasIP(leaf, ip) {
			return fmt.Sprintf("lacks IP address %s", ip)
		}
	}
	return ""
}

func hasDNSName(cert *x509.Certificate, name string) bool {
	for _, have := range cert.DNSNames {
		// DNS names compare case-insensitively.
		if strings.EqualFold(have, name) {
			return true
		}
	}
	return false
}

func hasIP(cert *x509.Certificate, ip net.IP) bool {
	for _, have := range cert.IPAddresses {
		if have.Equal(ip) {
			return true
		}
	}
	return false
}
