package v1alpha1

import "net/url"

// MigrationCertPath is where a host has its live-migration certificate
// signed (POST a MigrationCertRequest; the answer is a
// MigrationCertResponse). Only the host's own credential may.
func MigrationCertPath(host string) string {
	return PathPrefix + "/hosts/" + url.PathEscape(host) + "/migrationcert"
}

// MigrationCertRequest asks for a host's live-migration certificate.
type MigrationCertRequest struct {
	// CSR is a PKCS #10 certificate request (DER) for the host's key,
	// which never leaves the host. Its subject and names are ignored:
	// the certificate is for the host's name and its Host's
	// spec.address.
	CSR []byte `json:"csr"`
}

// MigrationCertResponse is a host's live-migration certificate.
type MigrationCertResponse struct {
	// Certificate is the host's certificate (PEM), signed by the
	// cluster's migration CA: common name the host's name, its one IP
	// address the Host's spec.address, for TLS servers and clients.
	Certificate string `json:"certificate"`
	// CA is the migration CA's certificate (PEM): the only one QEMU
	// trusts for the migration stream.
	CA string `json:"ca"`
	// NotAfter is when Certificate expires (RFC 3339); the agent asks
	// again well before.
	NotAfter string `json:"notAfter"`
}
