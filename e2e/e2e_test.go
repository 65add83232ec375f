// Package e2e runs the real hearth binary as separate processes: crash
// durability, a three-member control plane, and the CLI as a person uses it.
package e2e

import (
	"bytes"
	"context"
	"fmt"
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
	ms := []member{newMember(t, "s1"), newMember(t, "s2"), newMember(t, "s3")}
	var entries []string
	for _, m := range ms {
		entries = append(entries, m.peerEntry())
	}
	cluster := strings.Join(entries, ",")
	procs := make([]*proc, 3)
	for i, m := range ms {
		procs[i] = start(t, m, cluster, false)
	}
	for _, p := range procs {
		p.waitReady()
	}
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
