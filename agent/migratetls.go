package agent

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/pki"
)

// Live migration's TLS: every migration stream is TLS between the two
// hosts' QEMUs, with each host's certificate from the cluster's
// migration CA (server/migrationcert.go). The source checks that the
// destination's certificate is for the address it connects to; the
// destination, that the source's is the host the VM moves from. The key
// is made here and never leaves the host; the certificate is asked for
// when a migration needs it and is missing, expires within a third of
// its life, or is not for this host's address any more.

// migrationTLSDir is where the files QEMU reads are kept, under the data
// directory.
const migrationTLSDir = "migration-tls"

// migrationCerts serialises the agent's look at its certificate.
var migrationCerts sync.Mutex

// migrationTLS returns the directory of this host's migration TLS files,
// getting a certificate signed first when it needs one.
func (a *Agent) migrationTLS(ctx context.Context) (string, error) {
	migrationCerts.Lock()
	defer migrationCerts.Unlock()
	dir := filepath.Join(a.cfg.DataDir, migrationTLSDir)
	if ok, _ := migrationCertGood(filepath.Join(dir, "server-cert.pem"), a.cfg.Address, time.Now()); ok {
		return dir, nil
	}
	keyPEM, csr, err := pki.NewMigrationKey(a.cfg.Name)
	if err != nil {
		return "", err
	}
	var resp api.MigrationCertResponse
	if err := a.c.Do(ctx, http.MethodPost, api.MigrationCertPath(a.cfg.Name), api.MigrationCertRequest{CSR: csr}, &resp); err != nil {
		return "", fmt.Errorf("getting this host's migration certificate: %w", err)
	}
	if err := compute.WriteMigrationTLS(dir, []byte(resp.CA), []byte(resp.Certificate), keyPEM); err != nil {
		return "", err
	}
	if ok, why := migrationCertGood(filepath.Join(dir, "server-cert.pem"), a.cfg.Address, time.Now()); !ok {
		return "", fmt.Errorf("the migration certificate the server signed %s: the Host's spec.address must be this agent's address (%s)", why, a.cfg.Address)
	}
	return dir, nil
}

// migrationCertGood reports whether the certificate at path is for addr
// and has more than a third of its life left at now, and if not, why.
func migrationCertGood(path, addr string, now time.Time) (bool, string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return false, "is missing"
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return false, "is not PEM"
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return false, "does not parse"
	}
	ip := net.ParseIP(addr)
	if ip == nil || len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(ip) {
		return false, fmt.Sprintf("is for %v, not %s", c.IPAddresses, addr)
	}
	if life := c.NotAfter.Sub(c.NotBefore); now.After(c.NotAfter.Add(-life / 3)) {
		return false, "expires soon"
	}
	return true, ""
}
