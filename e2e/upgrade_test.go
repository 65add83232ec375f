package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/flock"
	"hearth.dev/hearth/server/servertest"
)

// Upgrades are tested against earlier builds of Hearth made from this
// checkout's history (not tags: CI has a clean clone of main).
const (
	// fixtureCommit made testdata/upgrade-fixture.tar.gz: a data
	// directory from before tokens were bound to their owners, Secrets
	// were sealed and etcd served clients on a socket and peers over TLS.
	// TestMakeUpgradeFixture makes it again.
	fixtureCommit = "848b5f51a5b9750f05a56310001d15be6fa0580c"
	// rollingFrom is the oldest control plane that can be upgraded in
	// place member by member: the first whose members speak TLS to each
	// other (one whose members spoke plain HTTP cannot switch in place;
	// docs/INSTALL.md says what to do).
	rollingFrom = "8cf52ea864df744e301a763aac6d2ecbf4a43ebd"
)

// oldHearth builds hearth as of commit (cached across runs under the
// user's cache directory) and returns the binary. It reports itself as
// version old-COMMIT.
func oldHearth(t *testing.T, commit string) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("git", "-C", root, "cat-file", "-e", commit+"^{commit}").CombinedOutput(); err != nil {
		t.Skipf("the upgrade test builds Hearth as of commit %.12s from this checkout's history, which lacks it (a shallow clone? git fetch --unshallow): %v %s",
			commit, err, out)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(cache, "hearth", "old-builds")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "hearth-"+commit)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	unlock, err := flock.Lock(ctx, dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	t.Logf("building hearth as of %.12s (once; cached in %s)", commit, dir)
	src := t.TempDir()
	archive := exec.Command("sh", "-c", fmt.Sprintf("git -C %q archive %s | tar -x -C %q", root, commit, src))
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", commit, err, out)
	}
	tmp := bin + fmt.Sprintf(".tmp-%d", os.Getpid())
	build := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X hearth.dev/hearth/version.Version=old-"+commit[:12], "-o", tmp, "./cmd/hearth")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		os.Remove(tmp)
		t.Fatalf("building %s: %v\n%s", commit, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// startWith runs member m from binary bin with extra flags (an older
// build's), as start does with the current one.
func startWith(t *testing.T, bin string, m member, args []string, wait bool) *proc {
	t.Helper()
	p := &proc{t: t, args: args, dataDir: m.dataDir, log: &bytes.Buffer{}, url: fmt.Sprintf("https://127.0.0.1:%d", m.api)}
	p.cmd = exec.Command(bin, args...)
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
			t.Logf("log of %s (%s):\n%s", m.name, filepath.Base(bin), p.log.String())
		}
	})
	if wait {
		p.waitReady()
	}
	return p
}

// serverVersion asks a server which build it is.
func serverVersion(t *testing.T, c *client.Client) string {
	t.Helper()
	var v struct {
		Version string `json:"version"`
	}
	if err := c.Do(servertest.Ctx(t), http.MethodGet, "/version", nil, &v); err != nil {
		t.Fatal(err)
	}
	return v.Version
}

// TestUpgradeFromOldDataDir starts this server on a data directory that
// an older Hearth (fixtureCommit) wrote and checks that everything
// carries over: the objects with their uids and allocations, the
// administrator's and a user's tokens (bound to their owners at start),
// tenant isolation for the user, a Machine's inline BMC password (kept,
// shown to cluster admins only), the CA (moved from etcd into
// DATA-DIR/pki), and writes of kinds the old version did not have
// (Secrets, sealed). A second start on the migrated directory works too.
func TestUpgradeFromOldDataDir(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	tokens := extractFixture(t, filepath.Join("testdata", "upgrade-fixture.tar.gz"), dataDir)
	m := newMember(t, "solo")
	m.dataDir = dataDir
	p := start(t, m, "", true)
	ctx := servertest.Ctx(t)
	admin := p.client()
	if v := serverVersion(t, admin); strings.HasPrefix(v, "old-") {
		t.Fatalf("the server under test is %s", v)
	}

	// Objects, as the old server stored them.
	want := map[string]string{}
	if err := json.Unmarshal([]byte(tokens["uids"]), &want); err != nil {
		t.Fatal(err)
	}
	for key, uid := range want {
		kind, rest, _ := strings.Cut(key, "/")
		tenant, name, ok := strings.Cut(rest, "/")
		if !ok {
			tenant, name = "", rest
		}
		o, err := admin.Get(ctx, kind, tenant, name)
		if err != nil {
			t.Errorf("%s after the upgrade: %v", key, err)
			continue
		}
		if o.GetMetadata().UID != uid {
			t.Errorf("%s: uid %s, was %s", key, o.GetMetadata().UID, uid)
		}
	}
	n, err := admin.Get(ctx, "Network", "family", "services")
	if err != nil {
		t.Fatal(err)
	}
	if vni := n.(*api.Network).Status.VNI; fmt.Sprint(vni) != tokens["servicesVNI"] {
		t.Errorf("network services has VNI %v, was %s", vni, tokens["servicesVNI"])
	}

	// Alice's token from the old server: bound to her at start, still
	// hers, and still only her tenant's.
	alice := p.clientWithToken(tokens["alice"], "family")
	if _, err := alice.Get(ctx, "Network", "family", "services"); err != nil {
		t.Errorf("alice's old token, her own tenant: %v", err)
	}
	if _, err := alice.Get(ctx, "Network", "lab", "k8s"); !api.IsForbidden(err) {
		t.Errorf("alice's old token, another tenant: %v, want 403", err)
	}
	viewer := p.clientWithToken(tokens["viewer"], "")

	// The old Machine's inline password: kept, for cluster admins only.
	mo, err := admin.Get(ctx, "Machine", "", "old-bmc")
	if err != nil {
		t.Fatal(err)
	}
	if pw := mo.(*api.Machine).Spec.Power.Password; pw != "fixture-bmc-password" {
		t.Errorf("admin reads the old machine's password as %q", pw)
	}
	if mo, err := viewer.Get(ctx, "Machine", "", "old-bmc"); err != nil || mo.(*api.Machine).Spec.Power.Password != "" {
		t.Errorf("a viewer reads the old machine: %v, password %q", err, mo.(*api.Machine).Spec.Power.Password)
	}

	// A kind the old server did not have.
	sec := &api.Secret{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Secret"}, Metadata: api.ObjectMeta{Name: "bmc"},
		Spec: api.SecretSpec{StringData: map[string]string{"password": "s3cret"}}}
	if _, err := admin.Create(ctx, sec); err != nil {
		t.Fatalf("creating a Secret after the upgrade: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "pki", "ca.key")); err != nil {
		t.Errorf("the CA was not moved into the data directory: %v", err)
	}

	// Again, on the migrated directory.
	p.stop()
	p = start(t, m, "", true)
	if _, err := p.clientWithToken(tokens["alice"], "family").Get(ctx, "Network", "family", "services"); err != nil {
		t.Errorf("alice's token after a second start: %v", err)
	}
	if _, err := p.client().Get(ctx, "Secret", "", "bmc"); err != nil {
		t.Errorf("the Secret after a second start: %v", err)
	}
}

// extractFixture unpacks a data directory fixture into dir (mode 0700, as
// a server keeps it) and returns the values recorded beside it
// (fixture.json: tokens, uids).
func extractFixture(t *testing.T, archive, dir string) map[string]string {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var meta map[string]string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Clean(h.Name)
		if name == "fixture.json" {
			b, _ := io.ReadAll(tr)
			if err := json.Unmarshal(b, &meta); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if strings.HasPrefix(name, "..") || filepath.IsAbs(name) {
			t.Fatalf("fixture entry %q escapes the directory", h.Name)
		}
		path := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, os.FileMode(h.Mode)&0o777); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o777)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(out, tr); err != nil {
				t.Fatal(err)
			}
			out.Close()
		}
	}
	if meta == nil {
		t.Fatal("the fixture has no fixture.json")
	}
	return meta
}

// TestMakeUpgradeFixture writes testdata/upgrade-fixture.tar.gz again
// from fixtureCommit's build: run it with HEARTH_MAKE_UPGRADE_FIXTURE=1.
// It starts the old server, applies the old example lab, a Machine with
// an inline BMC password, a user with a token and a viewer, stops it and
// packs its data directory with the tokens and uids the upgrade test
// checks.
func TestMakeUpgradeFixture(t *testing.T) {
	if os.Getenv("HEARTH_MAKE_UPGRADE_FIXTURE") == "" {
		t.Skip("makes the upgrade fixture only when asked: HEARTH_MAKE_UPGRADE_FIXTURE=1")
	}
	old := oldHearth(t, fixtureCommit)
	root, _ := filepath.Abs("..")
	m := newMember(t, "solo")
	peer := m.peer
	etcdClient := freePortOn(t, "127.0.0.1")
	p := startWith(t, old, m, []string{"server", "--data-dir", m.dataDir, "--listen", fmt.Sprintf("127.0.0.1:%d", m.api),
		"--etcd-client-url", fmt.Sprintf("http://127.0.0.1:%d", etcdClient), "--etcd-peer-url", fmt.Sprintf("http://127.0.0.1:%d", peer)}, true)
	conf := filepath.Join(m.dataDir, "admin.conf")
	hearth := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(old, args...)
		cmd.Env = append(os.Environ(), "HEARTH_CONFIG="+conf)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("old hearth %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	lab, err := exec.Command("git", "-C", root, "show", fixtureCommit+":examples/lab.yaml").Output()
	if err != nil {
		t.Fatal(err)
	}
	hearth(string(lab), "apply", "-f", "-")
	hearth(`apiVersion: hearth.dev/v1alpha1
kind: User
metadata: {name: watcher}
spec: {role: viewer}
---
apiVersion: hearth.dev/v1alpha1
kind: Machine
metadata: {name: old-bmc}
spec:
  mac: "52:54:00:00:00:42"
  power: {driver: ipmi, address: 192.0.2.99, username: admin, password: fixture-bmc-password}
`, "apply", "-f", "-")
	meta := map[string]string{
		"alice":  hearth("", "token", "create", "--user", "alice", "--description", "fixture"),
		"viewer": hearth("", "token", "create", "--user", "watcher", "--description", "fixture"),
	}
	uids := map[string]string{}
	c := p.client()
	ctx := servertest.Ctx(t)
	for _, k := range []string{"Tenant", "User", "Site", "Network", "Subnet", "SecurityGroup", "SSHKey", "Machine"} {
		list, _, err := c.List(ctx, k, "", client.ListOptions{AllTenants: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range list {
			md := o.GetMetadata()
			key := k + "/" + md.Name
			if md.Tenant != "" {
				key = k + "/" + md.Tenant + "/" + md.Name
			}
			uids[key] = md.UID
		}
	}
	b, _ := json.Marshal(uids)
	meta["uids"] = string(b)
	n, err := c.Get(ctx, "Network", "family", "services")
	if err != nil {
		t.Fatal(err)
	}
	meta["servicesVNI"] = fmt.Sprint(n.(*api.Network).Status.VNI)
	p.stop()

	out := filepath.Join("testdata", "upgrade-fixture.tar.gz")
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	b, _ = json.MarshalIndent(meta, "", "  ")
	tw.WriteHeader(&tar.Header{Name: "fixture.json", Mode: 0o600, Size: int64(len(b)), Typeflag: tar.TypeReg})
	tw.Write(b)
	err = filepath.Walk(m.dataDir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(m.dataDir, path)
		if rel == "." || fi.Mode()&os.ModeSocket != 0 || strings.HasSuffix(rel, ".log") {
			return nil
		}
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name, h.ModTime = rel, time.Unix(0, 0)
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			in, err := os.Open(path)
			if err != nil {
				return err
			}
			defer in.Close()
			_, err = io.Copy(tw, in)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	gz.Close()
	f.Close()
	fi, _ := os.Stat(out)
	t.Logf("wrote %s (%d bytes) from %.12s", out, fi.Size(), fixtureCommit)
}

// TestUpgradeRollingHA runs a three-member control plane of rollingFrom's
// build, keeps writing to it, and replaces its members one at a time
// with this build (stop, start the new binary on the same data directory
// and flags, wait until it serves). Writes go on throughout: every write
// a server acknowledged is there at the end on every member, the longest
// time with no successful write is short (a leader change, not an
// outage), and the old administrator's token works on the new servers.
func TestUpgradeRollingHA(t *testing.T) {
	old := oldHearth(t, rollingFrom)
	caDir := createCA(t)
	ms := threeMembers(t)
	for i := range ms {
		ms[i].caDir = caDir
	}
	cluster := initialCluster(ms)
	procs := make([]*proc, 3)
	for i, m := range ms {
		procs[i] = startWith(t, old, m, m.args(cluster), false)
	}
	for _, p := range procs {
		p.waitReady()
	}
	for i, p := range procs {
		if v := serverVersion(t, p.client()); !strings.HasPrefix(v, "old-") {
			t.Fatalf("member %d runs %s, want the old build", i+1, v)
		}
	}

	// The writer: one create at a time, to the next member that is up.
	var (
		mu      sync.Mutex
		clients = make([]*client.Client, 3)
		acked   []string
		lastOK  = time.Now()
		worst   time.Duration
		writing atomic.Bool
	)
	for i, p := range procs {
		clients[i] = p.client()
	}
	writing.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; writing.Load(); i++ {
			mu.Lock()
			c := clients[i%3]
			mu.Unlock()
			if c == nil {
				continue
			}
			name := fmt.Sprintf("w-%05d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := c.Create(ctx, network(name, "default"))
			cancel()
			now := time.Now()
			mu.Lock()
			if err == nil {
				acked = append(acked, name)
				worst = max(worst, now.Sub(lastOK))
				lastOK = now
			}
			mu.Unlock()
			if err != nil {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	waitWrites := func(n int) {
		t.Helper()
		servertest.Eventually(t, 60*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(acked) < n {
				return fmt.Errorf("%d writes acknowledged, want %d", len(acked), n)
			}
			return nil
		})
	}
	waitWrites(20)
	for i, m := range ms {
		mu.Lock()
		clients[i] = nil
		before := len(acked)
		mu.Unlock()
		procs[i].stop()
		// The others go on while it is down.
		waitWrites(before + 10)
		procs[i] = start(t, m, cluster, true)
		if v := serverVersion(t, procs[i].client()); strings.HasPrefix(v, "old-") {
			t.Fatalf("member %d still runs %s", i+1, v)
		}
		mu.Lock()
		clients[i] = procs[i].client()
		before = len(acked)
		mu.Unlock()
		waitWrites(before + 10)
		t.Logf("member %s upgraded", m.name)
	}
	writing.Store(false)
	<-done

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d writes acknowledged; the longest time without one: %s", len(acked), worst.Round(time.Millisecond))
	if worst > 20*time.Second {
		t.Errorf("no write succeeded for %s during the upgrade", worst)
	}
	ctx := servertest.Ctx(t)
	for i, p := range procs {
		// Read on every member (the old admin token works there).
		c := p.client()
		servertest.Eventually(t, 30*time.Second, func() error {
			list, _, err := c.List(ctx, "Network", "default", client.ListOptions{})
			if err != nil {
				return err
			}
			have := map[string]bool{}
			for _, o := range list {
				have[o.GetMetadata().Name] = true
			}
			for _, name := range acked {
				if !have[name] {
					return fmt.Errorf("member %d lacks acknowledged write %s", i+1, name)
				}
			}
			return nil
		})
	}
}
