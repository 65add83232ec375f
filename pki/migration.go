package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"time"
)

// Live migration's TLS. QEMU's migration stream between two hosts runs
// over TLS (tls-creds-x509) with certificates of the cluster's migration
// CA, a CA of its own that signs nothing else: QEMU trusts every
// certificate its CA directory's CA signed, so a certificate of the
// cluster CA (the API's serving certificate, an etcd member's) must not
// be one it accepts. Each host holds one certificate, for its underlay
// address (its Host's spec.address) and with its name as the common name,
// good as a TLS server (the destination) and client (the source): the
// source checks the destination's address against it, the destination
// checks that the source is the host the VM moves from.

// MigrationCACommonName is the common name of a cluster's migration CA.
const MigrationCACommonName = "hearth-migration-ca"

// NewMigrationCA makes a cluster's migration CA.
func NewMigrationCA(validity time.Duration) (*CA, error) {
	return NewCA(MigrationCACommonName, validity)
}

// IssueMigration signs a host's migration certificate for the public key
// of csrDER (a PKCS #10 request, whose signature must verify; its subject
// and names are ignored): common name host, the one IP address addr,
// valid for validity from now, for TLS servers and clients.
func (ca *CA) IssueMigration(host string, addr net.IP, csrDER []byte, validity time.Duration) (certPEM []byte, err error) {
	switch {
	case host == "":
		return nil, errors.New("issue migration certificate: host name is empty")
	case addr == nil || addr.IsUnspecified():
		return nil, fmt.Errorf("issue migration certificate for host %s: it has no address (its Host's spec.address)", host)
	case validity <= 0:
		return nil, fmt.Errorf("issue migration certificate for host %s: validity %v is not positive", host, validity)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("issue migration certificate for host %s: csr: %w", host, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("issue migration certificate for host %s: csr: %w", host, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		IPAddresses:  []net.IP{addr},
		NotBefore:    now.Add(-clockSkew), NotAfter: now.Add(validity),
		// QEMU refuses a leaf whose (critical) key usage lacks key
		// encipherment, whatever the key type.
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue migration certificate for host %s: sign: %w", host, err)
	}
	return encodeCert(der), nil
}

// NewMigrationKey makes a host's migration key and the certificate
// request (DER) to send for it; the key (PEM) never leaves the host.
func NewMigrationKey(host string) (keyPEM, csrDER []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("migration key: %w", err)
	}
	csrDER, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: host}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("migration certificate request: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return keyPEM, csrDER, nil
}
