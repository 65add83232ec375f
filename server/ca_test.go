package server_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"

	"hearth.dev/hearth/pki"
	"hearth.dev/hearth/server"
	"hearth.dev/hearth/server/etcd"
	"hearth.dev/hearth/server/servertest"
)

func serverConfig(t *testing.T, dataDir string) server.Config {
	return server.Config{DataDir: dataDir, Listen: "127.0.0.1:0", DisableControllers: true,
		Etcd: etcd.Config{PeerURL: fmt.Sprintf("https://127.0.0.1:%d", servertest.FreePort(t))}}
}

func startServer(t *testing.T, cfg server.Config) *server.Server {
	t.Helper()
	s, err := server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("starting server: %v", err)
	}
	return s
}

// TestDataDirModes: after a start, the data directory and the pki
// directory are 0700, every key, admin.conf (a token) and etcd's socket
// 0600.
func TestDataDirModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s := startServer(t, serverConfig(t, dir))
	defer s.Close()
	want := map[string]os.FileMode{
		".":                 os.ModeDir | 0o700,
		"pki":               os.ModeDir | 0o700,
		"pki/ca.key":        0o600,
		"pki/server.key":    0o600,
		"pki/etcd-peer.key": 0o600,
		"admin.conf":        0o600,
		"etcd.sock":         os.ModeSocket | 0o600,
		"etcd.log":          0o600,
	}
	for name, mode := range want {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if fi.Mode() != mode {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode(), mode)
		}
	}
	// Nothing else in the data directory is open to others but
	// certificates.
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return nil // etcd's temporary files come and go
		}
		if fi.Mode().Perm()&0o077 != 0 && !strings.HasSuffix(path, ".crt") {
			t.Errorf("%s has mode %v, open to other users", path, fi.Mode())
		}
		return nil
	})
	if s.EtcdSocket() != filepath.Join(dir, "etcd.sock") {
		t.Errorf("EtcdSocket() = %s, want %s", s.EtcdSocket(), filepath.Join(dir, "etcd.sock"))
	}
}

// TestCAKeptInFiles: the first start writes the CA to DATA-DIR/pki, the
// one in etcd is the same, and the member's peer certificate comes from
// it (CN hearth-etcd-peer, the peer URL's address).
func TestCAKeptInFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cfg := serverConfig(t, dir)
	s := startServer(t, cfg)
	defer s.Close()
	ca, err := pki.LoadCAFiles(filepath.Join(dir, "pki"))
	if err != nil || ca == nil {
		t.Fatalf("LoadCAFiles: %v, %v", ca, err)
	}
	if string(ca.CertPEM) != string(s.CAPEM()) {
		t.Fatalf("the CA in DATA-DIR/pki is not the server's CA")
	}
	peerPEM, err := os.ReadFile(filepath.Join(dir, "pki", pki.PeerCertFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(peerPEM)
	peer, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(cfg.Etcd.PeerURL)
	if _, err := peer.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: u.Hostname(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("peer certificate does not verify for %s as a client: %v", u.Hostname(), err)
	}
	if peer.Subject.CommonName != pki.PeerCommonName {
		t.Errorf("peer certificate CN = %q, want %q", peer.Subject.CommonName, pki.PeerCommonName)
	}
}

// TestGivenCA: --ca-cert/--ca-key are copied into a new data directory;
// a later start with another CA is refused, naming the flag, and so is an
// HA member with no CA at all, before etcd starts.
func TestGivenCA(t *testing.T) {
	base := t.TempDir()
	mk := func(name string) (certFile, keyFile string, ca *pki.CA) {
		ca, err := server.NewClusterCA()
		if err != nil {
			t.Fatal(err)
		}
		d := filepath.Join(base, name)
		if err := pki.WriteCAFiles(d, ca); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(d, pki.CACertFile), filepath.Join(d, pki.CAKeyFile), ca
	}
	certFile, keyFile, ca := mk("ca")
	dir := filepath.Join(base, "data")
	cfg := serverConfig(t, dir)
	cfg.CACertFile, cfg.CAKeyFile = certFile, keyFile
	s := startServer(t, cfg)
	if string(s.CAPEM()) != string(ca.CertPEM) {
		t.Errorf("the server does not use the CA it was given")
	}
	s.Close()

	otherCert, otherKey, _ := mk("other")
	cfg = serverConfig(t, dir)
	cfg.CACertFile, cfg.CAKeyFile = otherCert, otherKey
	if s, err := server.Start(context.Background(), cfg); err == nil {
		s.Close()
		t.Errorf("a restart with another --ca-cert: nil error, want one")
	} else if !strings.Contains(err.Error(), "--ca-cert") {
		t.Errorf("a restart with another --ca-cert: %v, want it to name --ca-cert", err)
	}

	ha := filepath.Join(base, "ha")
	cfg = serverConfig(t, ha)
	cfg.Etcd.Name = "s1"
	cfg.Etcd.InitialCluster = "s1=" + cfg.Etcd.PeerURL + ",s2=https://127.0.0.12:2380,s3=https://127.0.0.13:2380"
	if s, err := server.Start(context.Background(), cfg); err == nil {
		s.Close()
		t.Errorf("an HA member without a CA: nil error, want one")
	} else if !strings.Contains(err.Error(), "--ca-cert") {
		t.Errorf("an HA member without a CA: %v, want it to name --ca-cert", err)
	}
	if _, err := os.Stat(filepath.Join(ha, "etcd")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused HA member started etcd (%v)", err)
	}
}

// TestCAMovesToFiles: the data directory of a lone server from before the
// CA was kept in files (its CA only in etcd, its peer URL plain http)
// starts with peer TLS, keeps its CA, and writes it to DATA-DIR/pki.
func TestCAMovesToFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := server.NewClusterCA()
	if err != nil {
		t.Fatal(err)
	}
	// What an older server left: a member with an http peer URL and the
	// CA stored in etcd alone.
	ec := embed.NewConfig()
	ec.Dir = filepath.Join(dir, "etcd")
	ec.LogLevel = "error"
	ec.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	peer, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", servertest.FreePort(t)))
	client, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", servertest.FreePort(t)))
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	ec.InitialCluster = ec.Name + "=" + peer.String()
	ec.InitialClusterToken = "hearth"
	e, err := embed.StartEtcd(ec)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(time.Minute):
		t.Fatal("old etcd did not start")
	}
	data, _ := json.Marshal(map[string]string{"Cert": string(old.CertPEM), "Key": string(old.KeyPEM)})
	c := v3client.New(e.Server)
	if _, err := c.Put(context.Background(), "/hearth/pki/ca", string(data)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	e.Close()

	for i := range 2 {
		s := startServer(t, serverConfig(t, dir))
		if string(s.CAPEM()) != string(old.CertPEM) {
			t.Fatalf("start %d: the server made a new CA instead of keeping its own", i+1)
		}
		s.Close()
		kept, err := pki.LoadCAFiles(filepath.Join(dir, "pki"))
		if err != nil || !kept.Same(old) {
			t.Fatalf("start %d: DATA-DIR/pki holds %v (%v), want the CA from etcd", i+1, kept, err)
		}
	}
}
