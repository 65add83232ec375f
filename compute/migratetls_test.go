package compute

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/cloudinit"
	"hearth.dev/hearth/pki"
)

// TestMigrationTLS moves a running test guest between two QEMUs over
// TLS with certificates of one migration CA (pki.IssueMigration), and
// checks that the source refuses destinations it must not trust, and the
// destination sources it must not: a destination whose certificate is
// from another CA, one whose certificate is for another address, and a
// source whose certificate names another host than the one the
// destination waits for. Each refused move leaves the guest running on
// the source; the last, good one carries it on on the destination.
func TestMigrationTLS(t *testing.T) {
	requireQEMU(t)
	if testing.Short() {
		t.Skip("boots and migrates a guest; not in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cluster, err := pki.NewMigrationCA(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewMigrationCA(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// creds writes a host's TLS directory: its certificate from ca for
	// host at addr.
	creds := func(ca *pki.CA, host, addr string) string {
		t.Helper()
		key, csr, err := pki.NewMigrationKey(host)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.IssueMigration(host, net.ParseIP(addr), csr, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "tls")
		if err := WriteMigrationTLS(dir, ca.CertPEM, cert, key); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(filepath.Join(dir, tlsServerKey)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("the key file: %v, %v; want mode 0600", fi, err)
		}
		return dir
	}
	srcTLS := creds(cluster, "h1", "127.0.0.1")

	base := testSpec(t)
	base.NICs, base.Disks = nil, nil
	seed := cloudinit.Seed{InstanceID: base.ID, Hostname: "mover", UserData: tickScript}
	spec := func(incoming string, tls *MigrationTLS) Spec {
		s := base
		s.Dir = t.TempDir()
		s.Seed = filepath.Join(s.Dir, "seed.iso")
		if err := seed.WriteISO(s.Seed); err != nil {
			t.Fatal(err)
		}
		s.Incoming, s.IncomingTLS = incoming, tls
		t.Cleanup(func() { killForCleanup(t, s) })
		return s
	}
	q := NewQEMU(QEMUOptions{})
	src := spec("", nil)
	start(t, q, src)
	waitConsole(t, src.Dir, "HEARTH-GUEST tick=2 ", 4*time.Minute)

	// move starts a destination with dstTLS and migrates to it with the
	// source's credentials in dir, and says how it went.
	move := func(dstTLS *MigrationTLS, dir string) (Spec, error) {
		t.Helper()
		uri := fmt.Sprintf("tcp:127.0.0.1:%d", freeTCPPort(t))
		dst := spec(uri, dstTLS)
		if _, err := q.Start(ctx, dst); err != nil {
			t.Fatalf("starting the destination: %v", err)
		}
		mctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		_, err := q.Migrate(mctx, src.ID, src.Dir, uri, &MigrationTLS{Dir: dir, Hostname: "127.0.0.1"})
		return dst, err
	}
	for _, tt := range []struct {
		name   string
		dst    *MigrationTLS
		srcDir string
		// dstSays is what the destination's QEMU must say of it.
		dstSays string
	}{
		{"a destination with a certificate of another CA", &MigrationTLS{Dir: creds(other, "h2", "127.0.0.1"), Peer: "h1"}, srcTLS, ""},
		{"a destination with a certificate for another address", &MigrationTLS{Dir: creds(cluster, "h2", "127.0.0.2"), Peer: "h1"}, srcTLS, ""},
		{"a source that is not the host the VM moves from", &MigrationTLS{Dir: creds(cluster, "h2", "127.0.0.1"), Peer: "h1"}, creds(cluster, "h3", "127.0.0.1"), "CN=h3"},
		{"a destination without TLS", nil, srcTLS, ""},
	} {
		dst, err := move(tt.dst, tt.srcDir)
		if err == nil {
			t.Fatalf("%s: the migration succeeded", tt.name)
		}
		t.Logf("%s: refused: %v", tt.name, err)
		killForCleanup(t, dst)
		if said := readFile(filepath.Join(dst.Dir, StderrFile)); !strings.Contains(said, tt.dstSays) {
			t.Errorf("%s: the destination's QEMU does not say %q; it said:\n%s", tt.name, tt.dstSays, said)
		}
		if info, running, err := q.Lookup(ctx, src.ID, src.Dir); !running || err != nil || info.Status != string(Running) {
			t.Fatalf("%s: after the refused move the source is %q (running %v, %v); want it running", tt.name, info.Status, running, err)
		}
	}

	before, _ := ticks(t, src.Dir)
	dst, err := move(&MigrationTLS{Dir: creds(cluster, "h2", "127.0.0.1"), Peer: "h1"}, srcTLS)
	if err != nil {
		t.Fatalf("the migration over TLS with the cluster's certificates: %v", err)
	}
	if err := q.Resume(ctx, dst.ID, dst.Dir); err != nil {
		t.Fatal(err)
	}
	if err := q.Kill(ctx, src.ID, src.Dir); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		after, ok := ticks(t, dst.Dir)
		if !ok {
			t.Fatal("the guest's memory pattern changed across the move")
		}
		if len(after) >= 2 {
			if after[0] <= before[len(before)-1] {
				t.Fatalf("the counter was at %v before the move and went %v after: the guest did not carry on", before, after)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest printed %v on the destination in a minute:\n%s", after, readFile(filepath.Join(dst.Dir, ConsoleLog)))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
