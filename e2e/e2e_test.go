// Package e2e runs the real hearth binary as separate processes: crash
// durability, a three-member control plane, and the CLI as a person uses it.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

var hearthBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hearth-e2e-")
	if err != nil {
		panic(err)
	}
	hearthBin = filepath.Join(dir, "hearth")
	build := exec.Command("go", "build", "-o", hearthBin, "../cmd/hearth")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building hearth:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a hearth server process.
type proc struct {
	t       *testing.T
	args    []string
	dataDir string
	cmd     *exec.Cmd
	log     *bytes.Buffer
	url     string
}

// member is one embedded etcd member: its API on a loopback port, its
// peer port on peerIP (a loopback address of its own in the HA tests, as
// if each member had its own machine).
type member struct {
	name     string
	api      int
	peerIP   string
	peer     int
	dataDir  string
	caDir    string // --ca-cert/--ca-key from here, if set
	peerHTTP bool   // give a plain http peer URL (to see it refused)
}

func newMember(t *testing.T, name string) member {
	return newMemberOn(t, name, "127.0.0.1")
}

func newMemberOn(t *testing.T, name, peerIP string) member {
	return member{name: name, api: servertest.FreePort(t), peerIP: peerIP, peer: freePortOn(t, peerIP), dataDir: filepath.Join(t.TempDir(), name)}
}

// freePortOn returns a port nobody listens on right now at ip.
func freePortOn(t *testing.T, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (m member) peerURL() string {
	scheme := "https"
	if m.peerHTTP {
		scheme = "http"
	}
	return fmt.Sprintf("%s://%s", scheme, net.JoinHostPort(m.peerIP, fmt.Sprint(m.peer)))
}

func (m member) args(initialCluster string) []string {
	a := []string{"server", "--data-dir", m.dataDir,
		"--listen", fmt.Sprintf("127.0.0.1:%d", m.api),
		"--etcd-name", m.name,
		"--etcd-peer-url", m.peerURL()}
	if initialCluster != "" {
		a = append(a, "--etcd-initial-cluster", initialCluster)
	}
	if m.caDir != "" {
		a = append(a, "--ca-cert", filepath.Join(m.caDir, "ca.crt"), "--ca-key", filepath.Join(m.caDir, "ca.key"))
	}
	return a
}

func (m member) peerEntry() string { return m.name + "=" + m.peerURL() }

// socket is the member's etcd client socket.
func (m member) socket() string { return filepath.Join(m.dataDir, "etcd.sock") }

// start runs the server and waits until /readyz answers.
func start(t *testing.T, m member, initialCluster string, wait bool) *proc {
	t.Helper()
	p := &proc{t: t, args: m.args(initialCluster), dataDir: m.dataDir, log: &bytes.Buffer{}, url: fmt.Sprintf("https://127.0.0.1:%d", m.api)}
	p.cmd = exec.Command(hearthBin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("log of %s:\n%s", m.name, p.log.String())
			if etcdLog, err := os.ReadFile(filepath.Join(m.dataDir, "etcd.log")); err == nil && len(etcdLog) > 0 {
				t.Logf("etcd log of %s:\n%s", m.name, etcdLog)
			}
		}
	})
	if wait {
		p.waitReady()
	}
	return p
}

func (p *proc) waitReady() {
	p.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(p.dataDir, "admin.conf")); err == nil {
			c := p.client()
			if _, err := c.WhoAmI(context.Background()); err == nil {
				return
			}
		}
		if p.cmd.ProcessState != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("server %v did not become ready:\n%s", p.args, p.log.String())
}

func (p *proc) client() *client.Client {
	return p.clientWithToken("", "")
}

// clientWithToken is a client of p's server with the admin.conf's
// credential, or with token (and tenant) when given. It talks to p's own
// URL: admin.conf names the server of the data directory's first start,
// which may have listened elsewhere (a data directory from a fixture).
func (p *proc) clientWithToken(token, tenant string) *client.Client {
	p.t.Helper()
	conf, err := client.LoadConfig(filepath.Join(p.dataDir, "admin.conf"))
	if err != nil {
		p.t.Fatal(err)
	}
	cur, err := conf.Current("")
	if err != nil {
		p.t.Fatal(err)
	}
	ctx := *cur
	ctx.Server = p.url
	if token != "" {
		ctx.Token, ctx.Tenant = token, tenant
	}
	c, err := client.New(&ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

func (p *proc) kill9() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
}

func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		p.kill9()
	}
}

func network(name, tenant string) *api.Network {
	return &api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"},
		Metadata: api.ObjectMeta{Name: name, Tenant: tenant}}
}

// TestDurabilityKill9 kills the server with SIGKILL in the middle of a
// stream of creates; after a restart every create that was answered 2xx
// is there.
func TestDurabilityKill9(t *testing.T) {
	m := newMember(t, "solo")
	p := start(t, m, "", true)
	c := p.client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		name string
		ok   bool
	}
	results := make(chan result, 10000)
	const writers = 8
	for w := 0; w < writers; w++ {
		go func() {
			for i := 0; ctx.Err() == nil; i++ {
				name := fmt.Sprintf("n-%d-%d", w, i)
				_, err := c.Create(ctx, network(name, "default"))
				results <- result{name, err == nil}
				if err != nil {
					return
				}
			}
		}()
	}
	var acked []string
	for len(acked) < 300 {
		r := <-results
		if r.ok {
			acked = append(acked, r.name)
		}
	}
	p.kill9()
	cancel()
	// Drain what was in flight: anything answered 2xx counts.
	timeout := time.After(5 * time.Second)
drain:
	for {
		select {
		case r := <-results:
			if r.ok {
				acked = append(acked, r.name)
			}
		case <-timeout:
			break drain
		}
	}
	p2 := start(t, m, "", true)
	list, _, err := p2.client().List(context.Background(), "Network", "default", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, o := range list {
		have[o.GetMetadata().Name] = true
	}
	missing := 0
	for _, n := range acked {
		if !have[n] {
			missing++
			t.Errorf("acknowledged create of %s lost in the crash", n)
		}
	}
	t.Logf("%d creates acknowledged before SIGKILL, %d stored after restart, %d missing", len(acked), len(list), missing)
}

// TestHAThreeMembers runs three servers as one embedded etcd cluster,
// stops one, keeps writing, restarts it and checks it catches up.
func TestHAThreeMembers(t *testing.T) {
	ms, procs, cluster := startThree(t)
	ctx := servertest.Ctx(t)
	c1 := procs[0].client()
	if _, err := c1.Create(ctx, network("before", "default")); err != nil {
		t.Fatal(err)
	}
	// All three serve the same data, with the same CA.
	for i, p := range procs {
		if _, err := p.client().Get(ctx, "Network", "default", "before"); err != nil {
			t.Fatalf("server %d: %v", i+1, err)
		}
	}

	procs[2].stop()
	for i := 0; i < 20; i++ {
		c := procs[i%2].client()
		if _, err := c.Create(ctx, network(fmt.Sprintf("during-%d", i), "default")); err != nil {
			t.Fatalf("write with one member down: %v", err)
		}
	}

	procs[2] = start(t, ms[2], cluster, true)
	// The restarted member's own copy of etcd has caught up: read it
	// locally (serializable), not through the leader.
	servertest.Eventually(t, 30*time.Second, func() error {
		resp, err := localCount(ctx, ms[2].socket(), "/hearth/objects/networks/default/during-")
		if err != nil {
			return err
		}
		if resp != 20 {
			return fmt.Errorf("restarted member holds %d of 20 networks written while it was down", resp)
		}
		return nil
	})
	if _, err := procs[2].client().Get(ctx, "Network", "default", "during-19"); err != nil {
		t.Fatalf("restarted server's API: %v", err)
	}
	var ready bytes.Buffer
	resp, err := socketHTTP(ms[2].socket()).Get("http://etcd/health")
	if err == nil {
		ready.ReadFrom(resp.Body)
		resp.Body.Close()
	}
	t.Logf("restarted member's etcd health: %s", strings.TrimSpace(ready.String()))
}

// startThree starts a three-member control plane of embedded etcd
// members and waits until every server answers. Each member has a
// loopback address of its own for its peer port, and all are given one
// CA made with `hearth server ca create`. cluster is the members'
// --etcd-initial-cluster, for restarting one.
func startThree(t *testing.T) (ms []member, procs []*proc, cluster string) {
	t.Helper()
	caDir := createCA(t)
	ms = threeMembers(t)
	for i := range ms {
		ms[i].caDir = caDir
	}
	cluster = initialCluster(ms)
	procs = make([]*proc, 3)
	for i, m := range ms {
		procs[i] = start(t, m, cluster, false)
	}
	for _, p := range procs {
		p.waitReady()
	}
	return ms, procs, cluster
}

// threeMembers are members s1, s2, s3 with peer ports on 127.0.0.11-13.
func threeMembers(t *testing.T) []member {
	return []member{newMemberOn(t, "s1", "127.0.0.11"), newMemberOn(t, "s2", "127.0.0.12"), newMemberOn(t, "s3", "127.0.0.13")}
}

func initialCluster(ms []member) string {
	var entries []string
	for _, m := range ms {
		entries = append(entries, m.peerEntry())
	}
	return strings.Join(entries, ",")
}

// createCA makes a cluster CA with `hearth server ca create` and returns
// its directory.
func createCA(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if out, err := exec.Command(hearthBin, "server", "ca", "create", dir).CombinedOutput(); err != nil {
		t.Fatalf("hearth server ca create: %v\n%s", err, out)
	}
	return dir
}

// TestHAImageContent: an image uploaded to one server of a three-member
// control plane can be downloaded from the others, which fetch the bytes
// from a server that holds them (once, however many ask at the same
// time), keep them and serve them with ranges, also after the server that
// received the upload has stopped.
func TestHAImageContent(t *testing.T) {
	ms, procs, _ := startThree(t)
	ctx := servertest.Ctx(t)
	content := make([]byte, 3<<20)
	if _, err := rand.Read(content); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(content)
	sumHex := hex.EncodeToString(h[:])
	img := &api.Image{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Image"},
		Metadata: api.ObjectMeta{Name: "uploaded", Tenant: "default"},
		Spec:     api.ImageSpec{Format: api.FormatRaw, Source: api.ImageSource{Upload: true, Checksum: "sha256:" + sumHex}}}
	c1 := procs[0].client()
	if _, err := c1.Create(ctx, img); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.UploadImage(ctx, "default", "uploaded", bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	// offset > 0 asks for the rest from there.
	download := func(p *proc, offset int64) (*http.Response, []byte, error) {
		resp, err := p.client().DownloadImage(ctx, "default", "uploaded", offset, "")
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, body, err
	}
	holders := func(socket string, want int) {
		t.Helper()
		servertest.Eventually(t, 10*time.Second, func() error {
			n, err := localCount(ctx, socket, "/hearth/image-content/"+sumHex+"/")
			if err != nil {
				return err
			}
			if n != int64(want) {
				return fmt.Errorf("%d servers recorded as holding the content, want %d", n, want)
			}
			return nil
		})
	}
	holders(ms[0].socket(), 1)

	// Server 2 has no copy: four downloads at once share one fetch.
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			resp, body, err := download(procs[1], 0)
			switch {
			case err != nil:
				errs <- err
			case resp.StatusCode != http.StatusOK:
				errs <- fmt.Errorf("GET from server 2: %s: %s", resp.Status, body)
			case !bytes.Equal(body, content):
				errs <- fmt.Errorf("GET from server 2: %d bytes, not the %d uploaded", len(body), len(content))
			default:
				errs <- nil
			}
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(ms[1].dataDir, "images", sumHex)); err != nil {
		t.Fatalf("server 2 kept no copy: %v", err)
	}
	holders(ms[1].socket(), 2)
	resp, body, err := download(procs[1], 1000)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, content[1000:]) {
		t.Fatalf("ranged GET from server 2: %s, %d bytes", resp.Status, len(body))
	}
	if etag := resp.Header.Get("ETag"); etag != `"`+sumHex+`"` {
		t.Fatalf("ETag from server 2: %s, want the checksum", etag)
	}

	// With the server that received the upload stopped, its record goes
	// with it (the lease is revoked), and server 3 gets the content from
	// server 2.
	procs[0].stop()
	holders(ms[1].socket(), 1)
	resp, body, err = download(procs[2], 0)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, content) {
		t.Fatalf("GET from server 3 with server 1 down: %s, %d bytes: %.300s", resp.Status, len(body), body)
	}
	holders(ms[2].socket(), 2)

	// Once they have exited their logs are complete: server 2 fetched
	// once, server 3 from server 2.
	procs[1].kill9()
	procs[2].kill9()
	fetches := func(p *proc) []string {
		var lines []string
		for _, l := range strings.Split(p.log.String(), "\n") {
			if strings.Contains(l, "fetched uploaded image content from a peer") {
				lines = append(lines, l)
			}
		}
		return lines
	}
	if f := fetches(procs[1]); len(f) != 1 {
		t.Fatalf("server 2 fetched the content %d times, want once:\n%s", len(f), strings.Join(f, "\n"))
	}
	if f := fetches(procs[2]); len(f) != 1 || !strings.Contains(f[0], "peer="+procs[1].url) {
		t.Fatalf("server 3's fetches %q, want one from server 2 (%s)", f, procs[1].url)
	}
}
