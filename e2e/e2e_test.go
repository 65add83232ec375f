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

// serverArgs are the flags of one embedded member on loopback ports.
type member struct {
	name              string
	api, client, peer int
	dataDir           string
}

func newMember(t *testing.T, name string) member {
	return member{name: name, api: servertest.FreePort(t), client: servertest.FreePort(t), peer: servertest.FreePort(t), dataDir: filepath.Join(t.TempDir(), name)}
}

func (m member) args(initialCluster string) []string {
	a := []string{"server", "--data-dir", m.dataDir,
		"--listen", fmt.Sprintf("127.0.0.1:%d", m.api),
		"--etcd-name", m.name,
		"--etcd-client-url", fmt.Sprintf("http://127.0.0.1:%d", m.client),
		"--etcd-peer-url", fmt.Sprintf("http://127.0.0.1:%d", m.peer)}
	if initialCluster != "" {
		a = append(a, "--etcd-initial-cluster", initialCluster)
	}
	return a
}

func (m member) peerEntry() string { return fmt.Sprintf("%s=http://127.0.0.1:%d", m.name, m.peer) }

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
	c, err := client.FromConfig(filepath.Join(p.dataDir, "admin.conf"), "")
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
		resp, err := localCount(ctx, ms[2].client, "/hearth/objects/networks/default/during-")
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
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/health", ms[2].client))
	if err == nil {
		ready.ReadFrom(resp.Body)
		resp.Body.Close()
	}
	t.Logf("restarted member's etcd health: %s", strings.TrimSpace(ready.String()))
}

// startThree starts a three-member control plane of embedded etcd
// members and waits until every server answers. cluster is the members'
// --etcd-initial-cluster, for restarting one.
func startThree(t *testing.T) (ms []member, procs []*proc, cluster string) {
	t.Helper()
	ms = []member{newMember(t, "s1"), newMember(t, "s2"), newMember(t, "s3")}
	var entries []string
	for _, m := range ms {
		entries = append(entries, m.peerEntry())
	}
	cluster = strings.Join(entries, ",")
	procs = make([]*proc, 3)
	for i, m := range ms {
		procs[i] = start(t, m, cluster, false)
	}
	for _, p := range procs {
		p.waitReady()
	}
	return ms, procs, cluster
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
	holders := func(port, want int) {
		t.Helper()
		servertest.Eventually(t, 10*time.Second, func() error {
			n, err := localCount(ctx, port, "/hearth/image-content/"+sumHex+"/")
			if err != nil {
				return err
			}
			if n != int64(want) {
				return fmt.Errorf("%d servers recorded as holding the content, want %d", n, want)
			}
			return nil
		})
	}
	holders(ms[0].client, 1)

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
	holders(ms[1].client, 2)
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
	holders(ms[1].client, 1)
	resp, body, err = download(procs[2], 0)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, content) {
		t.Fatalf("GET from server 3 with server 1 down: %s, %d bytes: %.300s", resp.Status, len(body), body)
	}
	holders(ms[2].client, 2)

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
