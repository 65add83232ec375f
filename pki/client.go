package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"
)

// IssueClient issues a client certificate for commonName, valid for
// validity from now. The control plane presents one ("hearth-server") to
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
