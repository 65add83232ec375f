package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"hearth.dev/hearth/atomicfile"
)

// PeerCommonName is the common name of every etcd peer certificate.
// Members accept a peer only when its certificate chains to the cluster CA
// and carries this name, so the CA's other certificates (the API's serving
// certificate, the client certificate servers show agents) cannot join
// the cluster or pose as a member.
const PeerCommonName = "hearth-etcd-peer"

// Names of an etcd member's peer TLS files in the directory given to
// LoadOrCreatePeer: its certificate and key, and the CA certificate it
// verifies peers against (etcd takes all three as file paths).
const (
	PeerCertFile = "etcd-peer.crt"
	PeerKeyFile  = "etcd-peer.key"
	PeerCAFile   = "etcd-peer-ca.crt"
)

// PeerFiles are the paths of an etcd member's peer TLS files.
type PeerFiles struct {
	Cert, Key, CA string
}

// IssuePeer issues an etcd peer certificate (common name PeerCommonName)
// for a member reached at dnsNames and ips, valid for validity from now.
// Each member is a server to the others and a client of them, so it
// allows both.
func (ca *CA) IssuePeer(dnsNames []string, ips []net.IP, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if validity <= 0 {
		return nil, nil, fmt.Errorf("issue etcd peer certificate: validity %v is not positive", validity)
	}
	if len(dnsNames) == 0 && len(ips) == 0 {
		return nil, nil, errors.New("issue etcd peer certificate: no DNS names or IP addresses given; peers could not verify it")
	}
	return ca.issue("etcd peer certificate", &x509.Certificate{
		Subject:     pkix.Name{CommonName: PeerCommonName},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    dnsNames,
		IPAddresses: ips,
	}, validity)
}

// LoadOrCreatePeer keeps an etcd member's peer certificate in dir, for the
// host of its peer URL (dnsNames, ips), reissued by the same rules as
// LoadOrCreateServing. It also writes ca's certificate beside it as the
// one peers are verified against, so the files always agree with ca.
func LoadOrCreatePeer(dir string, ca *CA, dnsNames []string, ips []net.IP) (PeerFiles, error) {
	f := PeerFiles{Cert: filepath.Join(dir, PeerCertFile), Key: filepath.Join(dir, PeerKeyFile), CA: filepath.Join(dir, PeerCAFile)}
	_, err := loadOrCreateLeaf("etcd peer certificate", f.Cert, f.Key, ca, PeerCommonName, dnsNames, ips, func() ([]byte, []byte, error) {
		return ca.IssuePeer(dnsNames, ips, servingValidity)
	})
	if err != nil {
		return PeerFiles{}, err
	}
	if err := atomicfile.Write(f.CA, ca.CertPEM, 0o644); err != nil {
		return PeerFiles{}, fmt.Errorf("write etcd peer CA: %w", err)
	}
	return f, nil
}
