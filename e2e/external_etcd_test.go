package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"hearth.dev/hearth/server/servertest"
)

// TestExternalEtcd runs two servers, one after the other, against an
// external etcd (Debian's etcd-server): the second, with an empty data
// directory, finds the first one's objects and shares its CA, because
// etcd is the only source of truth.
func TestExternalEtcd(t *testing.T) {
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd is not installed (apt-get install etcd-server); .ci/run installs it")
	}
	cp, pp := servertest.FreePort(t), servertest.FreePort(t)
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", cp)
	var log bytes.Buffer
	e := exec.Command(etcdBin, "--data-dir", filepath.Join(t.TempDir(), "etcd"), "--name", "ext",
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", pp),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", pp),
		"--initial-cluster", fmt.Sprintf("ext=http://127.0.0.1:%d", pp))
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

	run := func(name string) *proc {
		m := newMember(t, name)
		p := &proc{t: t, dataDir: m.dataDir, log: &bytes.Buffer{}, url: fmt.Sprintf("https://127.0.0.1:%d", m.api),
			args: []string{"server", "--data-dir", m.dataDir, "--listen", fmt.Sprintf("127.0.0.1:%d", m.api), "--etcd-endpoints", clientURL}}
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
	ctx := servertest.Ctx(t)
	first := run("first")
	if _, err := first.client().Create(ctx, network("shared", "default")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(first.dataDir, "etcd")); err == nil {
		t.Fatalf("a server with --etcd-endpoints embedded its own etcd")
	}
	first.stop()

	second := run("second")
	if _, err := second.client().Get(ctx, "Network", "default", "shared"); err != nil {
		t.Fatalf("second server does not see the first one's network: %v", err)
	}
	ca1, _ := os.ReadFile(filepath.Join(first.dataDir, "ca.crt"))
	ca2, _ := os.ReadFile(filepath.Join(second.dataDir, "ca.crt"))
	if len(ca1) == 0 || !bytes.Equal(ca1, ca2) {
		t.Fatalf("the two servers have different CAs")
	}
}
