package pki

import (
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// ServerCommonName is the common name of the client certificate the
// control plane presents to agents (IssueClient); an agent's console
// endpoint accepts no other from this CA.
const ServerCommonName = "hearth-server"

// Fingerprint is the hex SHA-256 of a DER certificate: how a Host
// publishes its agent's self-signed certificate (status.agentCertSHA256)
// and how the server pins it.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// IssueClient issues a client certificate for commonName, valid for
// validity from now. The control plane presents one (ServerCommonName) to
// agents, which accept only that name from this CA.
func (ca *CA) IssueClient(commonName string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if commonName == "" {
		return nil, nil, errors.New("issue client certificate: common name is empty")
	}
	if validity <= 0 {
		return nil, nil, fmt.Errorf("issue client certificate %q: validity %v is not positive", commonName, validity)
	}
	return ca.issue("client certificate", &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, validity)
}
