package agent

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"hearth.dev/hearth/pki"
)

// TestMigrationCertGood: the agent asks for a new migration certificate
// when it has none, when its certificate is for another address (the
// Host's spec.address changed), and when a third of its life is left.
func TestMigrationCertGood(t *testing.T) {
	ca, err := pki.NewMigrationCA(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, csr, err := pki.NewMigrationKey("h1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueMigration("h1", net.ParseIP("192.0.2.1"), csr, 30*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "server-cert.pem")
	if err := os.WriteFile(path, cert, 0o644); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, tt := range []struct {
		name, path, addr string
		at               time.Time
		want             bool
	}{
		{"fresh", path, "192.0.2.1", now, true},
		{"missing", path + ".not", "192.0.2.1", now, false},
		{"another address", path, "192.0.2.9", now, false},
		{"two thirds of its life gone", path, "192.0.2.1", now.Add(21 * time.Hour), false},
		{"half of its life gone", path, "192.0.2.1", now.Add(15 * time.Hour), true},
	} {
		if got, why := migrationCertGood(tt.path, tt.addr, tt.at); got != tt.want {
			t.Errorf("%s: good = %v (%s), want %v", tt.name, got, why, tt.want)
		}
	}
}
