package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"hearth.dev/hearth/pki"
	"hearth.dev/hearth/server/servertest"
)

// startExternalEtcd runs Debian's etcd-server on a loopback client port,
// with extra flags (TLS), and returns its client port.
func startExternalEtcd(t *testing.T, scheme string, extra ...string) int {
	t.Helper()
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd is not installed (apt-get install etcd-server); .ci/run installs it")
	}
	cp, pp := servertest.FreePort(t), servertest.FreePort(t)
	clientURL := fmt.Sprintf("%s://127.0.0.1:%d", scheme, cp)
	var log bytes.Buffer
	args := append([]string{"--data-dir", filepath.Join(t.TempDir(), "etcd"), "--name", "ext",
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", pp),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", pp),
		"--initial-cluster", fmt.Sprintf("ext=http://127.0.0.1:%d", pp)}, extra...)
	e := exec.Command(etcdBin, args...)
	e.Stdout, e.Stderr = &log, &log
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Process.Kill()
		e.Wait()
		if t.Failed() {
			t.Logf("etcd log:\n%s", log.String())
		}
	})
	return cp
}

// runExternal runs a hearth server on the external etcd at endpoint and
// waits until it answers.
func runExternal(t *testing.T, name, endpoint string, extra ...string) *proc {
	t.Helper()
	m := newMember(t, name)
	p := &proc{t: t, dataDir: m.dataDir, log: &bytes.Buffer{}, url: fmt.Sprintf("https://127.0.0.1:%d", m.api),
		args: append([]string{"server", "--data-dir", m.dataDir, "--listen", fmt.Sprintf("127.0.0.1:%d", m.api), "--etcd-endpoints", endpoint}, extra...)}
	p.cmd = exec.Command(hearthBin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.kill9()
		}
	})
	p.waitReady()
	return p
}

// TestExternalEtcd runs two servers, one after the other, against an
// external etcd (Debian's etcd-server): the second, with an empty data
// directory, finds the first one's objects and shares its CA, because
// etcd is the only source of truth.
func TestExternalEtcd(t *testing.T) {
	cp := startExternalEtcd(t, "http")
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", cp)
	ctx := servertest.Ctx(t)
	first := runExternal(t, "first", clientURL)
	if _, err := first.client().Create(ctx, network("shared", "default")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(first.dataDir, "etcd")); err == nil {
		t.Fatalf("a server with --etcd-endpoints embedded its own etcd")
	}
	first.stop()

	second := runExternal(t, "second", clientURL)
	if _, err := second.client().Get(ctx, "Network", "default", "shared"); err != nil {
		t.Fatalf("second server does not see the first one's network: %v", err)
	}
	ca1, _ := os.ReadFile(filepath.Join(first.dataDir, "ca.crt"))
	ca2, _ := os.ReadFile(filepath.Join(second.dataDir, "ca.crt"))
	if len(ca1) == 0 || !bytes.Equal(ca1, ca2) {
		t.Fatalf("the two servers have different CAs")
	}
}

// TestExternalEtcdTLS: a server reaches an external etcd that serves
// clients over TLS and requires client certificates, with --etcd-cafile,
// --etcd-certfile and --etcd-keyfile.
func TestExternalEtcdTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("external etcd CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	serverCert, serverKey, err := ca.IssueServing("etcd", nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey, err := ca.IssueClient("hearth", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := write("ca.crt", ca.CertPEM)
	cp := startExternalEtcd(t, "https", "--cert-file", write("etcd.crt", serverCert), "--key-file", write("etcd.key", serverKey),
		"--trusted-ca-file", caFile, "--client-cert-auth")
	endpoint := fmt.Sprintf("https://127.0.0.1:%d", cp)

	p := runExternal(t, "tls", endpoint, "--etcd-cafile", caFile,
		"--etcd-certfile", write("client.crt", clientCert), "--etcd-keyfile", write("client.key", clientKey))
	ctx := servertest.Ctx(t)
	if _, err := p.client().Create(ctx, network("over-tls", "default")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.client().Get(ctx, "Network", "default", "over-tls"); err != nil {
		t.Fatal(err)
	}
}
