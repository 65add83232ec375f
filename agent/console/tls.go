package console

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"hearth.dev/hearth/atomicfile"
	"hearth.dev/hearth/pki"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Files LoadOrCreateCert keeps in its directory.
const (
	CertFile = "agent.crt"
	KeyFile  = "agent.key"
)

const (
	certValidity = 10 * 365 * 24 * time.Hour
	// renewBefore is how long before expiry a certificate is replaced.
	renewBefore = 30 * 24 * time.Hour
)

// LoadOrCreateCert returns the agent's self-signed serving certificate from
// dir (CertFile and KeyFile), creating it when it is missing, unreadable,
// about to expire or lacks one of sans (IP addresses or DNS names), and its
// fingerprint: the hex SHA-256 of its DER encoding, which the agent
// publishes in its Host's status.agentCertSHA256 for the server to pin.
//
// The agent's certificate is self-signed rather than issued by the cluster
// CA so that joining needs no certificate signing step and an agent holds
// nothing that could impersonate the control plane; the pin published
// through the API (which the agent authenticates to with its host token)
// is what the server trusts.
func LoadOrCreateCert(dir string, sans []string) (tls.Certificate, string, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	cert, err := pki.LoadKeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	if cert == nil || !certGood(cert.Leaf, sans, time.Now()) {
		certPEM, keyPEM, err := selfSigned(sans)
		if err != nil {
			return tls.Certificate{}, "", err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return tls.Certificate{}, "", fmt.Errorf("agent certificate: %w", err)
		}
		// The key goes first: stopped between the two, the old certificate
		// does not match the new key and the next start makes a new pair.
		if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
			return tls.Certificate{}, "", fmt.Errorf("agent certificate key: %w", err)
		}
		if err := atomicfile.Write(certPath, certPEM, 0o644); err != nil {
			return tls.Certificate{}, "", fmt.Errorf("agent certificate: %w", err)
		}
		pair, err := pki.KeyPair(certPEM, keyPEM)
		if err != nil {
			return tls.Certificate{}, "", fmt.Errorf("agent certificate just made: %w", err)
		}
		cert = &pair
	}
	return *cert, pki.Fingerprint(cert.Leaf.Raw), nil
}

// ServerTLS returns the TLS configuration of the agent's listener: cert,
// and a client certificate required, verified against the cluster CA
// (caPEM), whose common name is pki.ServerCommonName. Only the control plane
// holds such a certificate, so nothing else reaches the consoles.
func ServerTLS(cert tls.Certificate, caPEM []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("agent TLS: the cluster CA is not a PEM certificate")
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		// The chain is verified by then; only the name is left to check.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no client certificate")
			}
			if cn := cs.PeerCertificates[0].Subject.CommonName; cn != pki.ServerCommonName {
				return fmt.Errorf("client certificate %q is not the control plane's (%q)", cn, pki.ServerCommonName)
			}
			return nil
		},
	}, nil
}

// certGood reports whether leaf may be kept at time now.
func certGood(leaf *x509.Certificate, sans []string, now time.Time) bool {
	if leaf.NotAfter.Sub(now) < renewBefore {
		return false
	}
	for _, s := range sans {
		s = strings.Trim(strings.TrimSpace(s), "[]")
		if s == "" {
			continue
		}
		if ip := net.ParseIP(s); ip != nil {
			if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
				return false
			}
		} else if !slices.ContainsFunc(leaf.DNSNames, func(n string) bool { return strings.EqualFold(n, s) }) {
			return false
		}
	}
	return true
}

// selfSigned makes an ECDSA P-256 certificate for sans, valid for ten
// years.
func selfSigned(sans []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("agent certificate: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("agent certificate: serial number: %w", err)
	}
	hostname, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)),
		Subject:      pkix.Name{CommonName: "hearth-agent " + hostname},
		// An hour back, so a server whose clock runs behind accepts it.
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, s := range sans {
		s = strings.Trim(strings.TrimSpace(s), "[]")
		switch ip := net.ParseIP(s); {
		case s == "":
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("agent certificate: sign: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("agent certificate: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}
