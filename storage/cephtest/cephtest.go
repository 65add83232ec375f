// Package cephtest starts a real, single-node Ceph cluster for tests:
// one monitor, one manager and one OSD on memstore, from Debian's ceph
// packages (ceph-mon, ceph-mgr, ceph-osd, ceph-common), with cephx
// authentication and a pool "rbd" of size 1 ready for RBD images. It
// listens on 127.0.0.1 only, on ports picked free at start (the OSD and
// manager take theirs from Ceph's usual 6800–7300 range, skipping ports in
// use), so test processes of several people run their clusters side by
// side.
//
// A test process has at most one cluster: the first Start starts it (in
// about 10–30 s) and later calls share it. Tests that need one call Start;
// the package's TestMain calls Main, which stops the cluster and removes
// its files when the tests end. A process killed before that leaves its
// daemons running; the next Start, in any test process, kills them (they
// are recognised by their directory, hearth-cephtest-PID-*, in their
// command lines) before it starts its own.
package cephtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth.dev/hearth/storage/internal/peer"
)

// dirPrefix names the directories clusters live in, under os.TempDir().
const dirPrefix = "hearth-cephtest"

// StartTimeout bounds how long Start waits for the cluster to be ready.
const StartTimeout = 3 * time.Minute

// Cluster is a running test cluster.
type Cluster struct {
	// Dir holds the cluster's configuration, data, logs and sockets.
	Dir string
	// Conf is the configuration file for the admin (client.admin), whose
	// keyring it names.
	Conf string
	// FSID is the cluster's id.
	FSID string
	// Monitors are the monitor's addresses ("127.0.0.1:PORT", its msgr2
	// port), as a client configuration lists them.
	Monitors []string
	// Pool is a replicated pool of size 1 with the rbd application on it.
	Pool string

	procs []*exec.Cmd
}

var (
	mu       sync.Mutex
	shared   *Cluster
	startErr error
)

// Tools are the programs a cluster needs, with the Debian packages that
// have them.
var Tools = map[string]string{
	"ceph-mon":      "ceph-mon",
	"ceph-mgr":      "ceph-mgr",
	"ceph-osd":      "ceph-osd",
	"ceph":          "ceph-common",
	"ceph-authtool": "ceph-common",
	"monmaptool":    "ceph-base",
	"rbd":           "ceph-common",
}

// Start returns the test process's cluster, starting it on first use. It
// skips t when not run as root or when a Ceph program is missing, and
// fails t when the cluster does not come up (every later Start fails the
// same way at once).
func Start(t testing.TB) *Cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the test Ceph cluster needs root (run the tests as root, as CI does)")
	}
	for tool, pkg := range Tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: install Debian's %s package (scripts/deps.sh test does) to run the Ceph tests", tool, pkg)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if shared == nil && startErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
		began := time.Now()
		shared, startErr = start(ctx)
		cancel()
		if startErr == nil {
			t.Logf("cephtest: cluster %s up in %s (monitor %s)", shared.Dir, time.Since(began).Round(time.Millisecond), shared.Monitors[0])
		}
	}
	if startErr != nil {
		t.Fatalf("cephtest: %v", startErr)
	}
	return shared
}

// Main runs the tests of a package that uses the cluster, stops the
// cluster and exits: call it from the package's TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if err := Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "cephtest:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// Stop stops the process's cluster, if it started one, and removes its
// files.
func Stop() error {
	mu.Lock()
	defer mu.Unlock()
	if shared == nil {
		return nil
	}
	err := shared.stop()
	shared = nil
	return err
}

func start(ctx context.Context) (*Cluster, error) {
	if err := peer.Sweep(dirPrefix, killDir); err != nil {
		return nil, fmt.Errorf("sweeping a killed test's cluster: %w", err)
	}
	dir, err := peer.NewDir(dirPrefix)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, Conf: filepath.Join(dir, "ceph.conf"), Pool: "rbd"}
	if err := c.bootstrap(ctx); err != nil {
		err = fmt.Errorf("%w%s", err, c.logTail())
		c.stop()
		return nil, err
	}
	return c, nil
}

// killDir stops the daemons of a cluster whose test process is gone.
func killDir(dir string) error {
	pids := peer.Processes(func(_ int, cmdline string) bool {
		return strings.HasPrefix(cmdline, "ceph-") && strings.Contains(cmdline, dir+"/")
	})
	return peer.KillAndWait(pids, 10*time.Second)
}

func (c *Cluster) bootstrap(ctx context.Context) error {
	for _, d := range []string{"run", "log", "mon/ceph-a", "mgr/ceph-x", "osd/ceph-0"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o700); err != nil {
			return err
		}
	}
	v2, err := freePort()
	if err != nil {
		return err
	}
	v1, err := freePort()
	if err != nil {
		return err
	}
	c.FSID = newUUID()
	c.Monitors = []string{"127.0.0.1:" + strconv.Itoa(v2)}
	monAddrs := fmt.Sprintf("[v2:127.0.0.1:%d,v1:127.0.0.1:%d]", v2, v1)
	d := c.Dir
	// Everything the daemons write stays in Dir. The health warnings that
	// a one-OSD, one-replica cluster on a busy disk raises are off: the
	// tests wait for the PGs, not for HEALTH_OK.
	conf := `[global]
fsid = ` + c.FSID + `
mon host = ` + monAddrs + `
public addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd crush chooseleaf type = 0
run dir = ` + d + `/run
admin socket = ` + d + `/run/$cluster-$name.asok
pid file = ` + d + `/run/$name.pid
log file = ` + d + `/log/$cluster-$name.log
log to stderr = false
err to stderr = false
mon data = ` + d + `/mon/$cluster-$id
mgr data = ` + d + `/mgr/$cluster-$id
osd data = ` + d + `/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = 1073741824
keyring = ` + d + `/admin.keyring
[mon]
keyring = ` + d + `/mon.keyring
[mgr]
keyring = ` + d + `/mgr/$cluster-$id/keyring
[osd]
keyring = ` + d + `/osd/$cluster-$id/keyring
`
	if err := os.WriteFile(c.Conf, []byte(conf), 0o600); err != nil {
		return err
	}
	steps := [][]string{
		{"ceph-authtool", "--create-keyring", d + "/mon.keyring", "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"},
		{"ceph-authtool", "--create-keyring", d + "/admin.keyring", "--gen-key", "-n", "client.admin",
			"--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *", "--cap", "mds", "allow *"},
		{"ceph-authtool", d + "/mon.keyring", "--import-keyring", d + "/admin.keyring"},
		{"monmaptool", "--create", "--addv", "a", monAddrs, "--fsid", c.FSID, d + "/monmap"},
		{"ceph-mon", "-c", c.Conf, "--mkfs", "-i", "a", "--monmap", d + "/monmap", "--keyring", d + "/mon.keyring"},
	}
	for _, s := range steps {
		if _, err := run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	if err := c.daemon("ceph-mon", "-i", "a"); err != nil {
		return err
	}
	if _, err := c.Ceph(ctx, "auth", "get-or-create", "mgr.x", "mon", "allow profile mgr", "osd", "allow *", "mds", "allow *",
		"-o", d+"/mgr/ceph-x/keyring"); err != nil {
		return err
	}
	if err := c.daemon("ceph-mgr", "-i", "x"); err != nil {
		return err
	}
	osdUUID := newUUID()
	out, err := c.Ceph(ctx, "osd", "new", osdUUID)
	if err != nil {
		return err
	}
	if id := strings.TrimSpace(string(out)); id != "0" {
		return fmt.Errorf("ceph osd new: got osd %q, want 0", id)
	}
	osdKeyring := d + "/osd/ceph-0/keyring"
	if _, err := run(ctx, "ceph-authtool", "--create-keyring", osdKeyring, "--gen-key", "-n", "osd.0"); err != nil {
		return err
	}
	if _, err := c.Ceph(ctx, "auth", "add", "osd.0", "osd", "allow *", "mon", "allow profile osd", "mgr", "allow profile osd", "-i", osdKeyring); err != nil {
		return err
	}
	if _, err := run(ctx, "ceph-osd", "-c", c.Conf, "-i", "0", "--mkfs", "--osd-uuid", osdUUID); err != nil {
		return err
	}
	if err := c.daemon("ceph-osd", "-i", "0"); err != nil {
		return err
	}
	if err := c.CreatePool(ctx, c.Pool); err != nil {
		return err
	}
	return nil
}

// daemon starts a Ceph daemon in the foreground, as a child of the test
// process, with its output in Dir/log.
func (c *Cluster) daemon(name string, args ...string) error {
	out, err := os.OpenFile(filepath.Join(c.Dir, "log", name+".out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(name, append([]string{"-f", "-c", c.Conf}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	c.procs = append(c.procs, cmd)
	go cmd.Wait()
	return nil
}

// CreatePool creates a replicated pool of size 1 for RBD and waits until
// all of the cluster's placement groups are active+clean.
func (c *Cluster) CreatePool(ctx context.Context, name string) error {
	for _, args := range [][]string{
		{"osd", "pool", "create", name, "8"},
		{"osd", "pool", "application", "enable", name, "rbd"},
	} {
		if _, err := c.Ceph(ctx, args...); err != nil {
			return err
		}
	}
	if _, err := run(ctx, "rbd", "-c", c.Conf, "--id", "admin", "pool", "init", name); err != nil {
		return err
	}
	return c.waitClean(ctx)
}

// waitClean waits until every placement group is active+clean.
func (c *Cluster) waitClean(ctx context.Context) error {
	last := ""
	for {
		out, err := c.Ceph(ctx, "pg", "stat", "--format", "json")
		if err == nil {
			var st struct {
				Summary struct {
					ByState []struct {
						Name string `json:"name"`
						Num  int    `json:"num"`
					} `json:"num_pg_by_state"`
					NumPGs int `json:"num_pgs"`
				} `json:"pg_summary"`
			}
			if jerr := json.Unmarshal(out, &st); jerr != nil {
				return fmt.Errorf("ceph pg stat: %w", jerr)
			}
			clean := 0
			var states []string
			for _, s := range st.Summary.ByState {
				states = append(states, fmt.Sprintf("%d %s", s.Num, s.Name))
				if s.Name == "active+clean" {
					clean = s.Num
				}
			}
			if st.Summary.NumPGs > 0 && clean == st.Summary.NumPGs {
				return nil
			}
			last = strings.Join(states, ", ")
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("placement groups not active+clean (%s): %w", last, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Ceph runs the ceph CLI as client.admin and returns its output.
func (c *Cluster) Ceph(ctx context.Context, args ...string) ([]byte, error) {
	return run(ctx, "ceph", append([]string{"-c", c.Conf, "--connect-timeout", "20"}, args...)...)
}

// AddUser creates the cephx user client.NAME with the rbd profile on pool
// (what a Hearth storage pool's user needs) and returns its key.
func (c *Cluster) AddUser(ctx context.Context, name, pool string) (key string, err error) {
	out, err := c.Ceph(ctx, "auth", "get-or-create-key", "client."+name,
		"mon", "profile rbd", "osd", "profile rbd pool="+pool, "mgr", "profile rbd pool="+pool)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

func (c *Cluster) stop() error {
	for _, p := range c.procs {
		p.Process.Kill()
	}
	var pids []int
	for _, p := range c.procs {
		pids = append(pids, p.Process.Pid)
	}
	err := peer.KillAndWait(pids, 10*time.Second)
	if err == nil {
		err = os.RemoveAll(c.Dir)
	}
	return err
}

// logTail is the end of each daemon's log, for an error that says why
// the cluster did not start.
func (c *Cluster) logTail() string {
	logs, _ := filepath.Glob(filepath.Join(c.Dir, "log", "*"))
	var b strings.Builder
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil || len(data) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 8 {
			lines = lines[len(lines)-8:]
		}
		fmt.Fprintf(&b, "\n--- %s:\n%s", filepath.Base(l), strings.Join(lines, "\n"))
	}
	return b.String()
}

func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: %w (%s)", name, strings.Join(args, " "), ctx.Err(), msg)
		}
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func newUUID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/uuid")
	if err != nil {
		panic(errors.New("cephtest: no /proc/sys/kernel/random/uuid"))
	}
	return strings.TrimSpace(string(b))
}
