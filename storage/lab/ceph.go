// Package lab starts the storage servers Hearth's shared pools talk to,
// real and on one machine: a single-node Ceph cluster (StartCeph) and an
// NFS server (StartNFS). It is the one way to start each, for the
// sandbox's --shared-storage and for the tests' harnesses
// (storage/cephtest, storage/nfstest), which add what tests need on top:
// one server per test process, skips, and sweeping what a killed test
// left.
//
// The servers run as daemons in sessions of their own, so they outlive a
// caller that exits (`hearth sandbox up`); whoever started them stops them
// (Stop, or by their PIDs, or by killing everything in their network
// namespace, as `hearth sandbox down` does). Each server keeps everything
// it writes in the directory it is given.
package lab

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
	"syscall"
	"time"

	"hearth.dev/hearth/netns"
	"hearth.dev/hearth/process"
)

// CephTools are the programs a Ceph cluster needs, with the Debian
// packages that have them.
var CephTools = map[string]string{
	"ceph-mon":      "ceph-mon",
	"ceph-mgr":      "ceph-mgr",
	"ceph-osd":      "ceph-osd",
	"ceph":          "ceph-common",
	"ceph-authtool": "ceph-common",
	"monmaptool":    "ceph-base",
	"rbd":           "ceph-common",
}

// MissingCephTool names a program of CephTools that is not installed, and
// its package, or returns "".
func MissingCephTool() (tool, pkg string) {
	for tool, pkg := range CephTools {
		if _, err := exec.LookPath(tool); err != nil {
			return tool, pkg
		}
	}
	return "", ""
}

// CephOptions say where a cluster runs.
type CephOptions struct {
	// Dir is an existing directory, only the cluster's, for its
	// configuration, keyrings, logs and sockets (mode 0700 is best: the
	// admin keyring is in it).
	Dir string
	// Netns is the network namespace the daemons run in ("" for the
	// caller's). In a namespace of its own the monitor takes Ceph's usual
	// ports (3300, 6789); otherwise ports picked free on Address.
	Netns string
	// Address is the IPv4 address the daemons bind and clients reach
	// (default 127.0.0.1).
	Address string
	// Pool is the replicated pool of size 1 made for RBD (default "rbd").
	Pool string
	// OSDBytes is the size of the OSD's memstore, held in memory
	// (default 1 GiB).
	OSDBytes int64
}

// Ceph is a running single-node cluster: one monitor, one manager and
// one OSD on memstore, cephx on, with one pool of size 1 for RBD.
//
// Why memstore: the OSD needs no disk or file system of its own and
// starts in seconds; what it holds is lost when it stops, which suits a
// lab that is torn down whole. The cluster is ready in 10–30 s, most of
// it the monitor electing itself and the placement groups peering;
// nothing of that can be kept across starts without keeping the OSD's
// data, so callers start it beside other work (the sandbox does).
type Ceph struct {
	// Dir holds the configuration, data, logs and sockets.
	Dir string
	// Conf is the configuration file for the admin (client.admin),
	// whose keyring it names.
	Conf string
	// FSID is the cluster's id.
	FSID string
	// Monitors are the monitor's addresses (ADDRESS:PORT, its msgr2
	// port), as a client configuration lists them.
	Monitors []string
	// Pool is a replicated pool of size 1 with the rbd application.
	Pool string
	// Netns is where the daemons run ("" for the starter's namespace).
	Netns string
	// Daemons are the monitor's, manager's and OSD's processes.
	Daemons []process.ID
}

// StartCeph starts a cluster as opts say and waits until its pool's
// placement groups are active+clean. On failure it stops what it started
// and the error ends with the daemons' last log lines.
func StartCeph(ctx context.Context, opts CephOptions) (*Ceph, error) {
	if tool, pkg := MissingCephTool(); tool != "" {
		return nil, fmt.Errorf("%s not found: install Debian's %s package", tool, pkg)
	}
	if opts.Address == "" {
		opts.Address = "127.0.0.1"
	}
	if ip := net.ParseIP(opts.Address); ip == nil || ip.To4() == nil {
		return nil, fmt.Errorf("ceph: address %q is not an IPv4 address", opts.Address)
	}
	if opts.Pool == "" {
		opts.Pool = "rbd"
	}
	if opts.OSDBytes == 0 {
		opts.OSDBytes = 1 << 30
	}
	c := &Ceph{Dir: opts.Dir, Conf: filepath.Join(opts.Dir, "ceph.conf"), Pool: opts.Pool, Netns: opts.Netns}
	if err := c.bootstrap(ctx, opts); err != nil {
		err = fmt.Errorf("ceph: %w%s", err, logTail(filepath.Join(c.Dir, "log"), 8))
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Ceph) bootstrap(ctx context.Context, opts CephOptions) error {
	for _, d := range []string{"run", "log", "mon/ceph-a", "mgr/ceph-x", "osd/ceph-0"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o700); err != nil {
			return err
		}
	}
	addr := opts.Address
	v2, v1 := 3300, 6789
	if opts.Netns == "" {
		var err error
		if v2, err = freePort(addr); err != nil {
			return err
		}
		if v1, err = freePort(addr); err != nil {
			return err
		}
	}
	c.FSID = newUUID()
	c.Monitors = []string{net.JoinHostPort(addr, strconv.Itoa(v2))}
	monAddrs := fmt.Sprintf("[v2:%s:%d,v1:%s:%d]", addr, v2, addr, v1)
	d := c.Dir
	// Everything the daemons write stays in Dir. The health warnings that
	// a one-OSD, one-replica cluster on a busy disk raises are off: the
	// callers wait for the PGs, not for HEALTH_OK.
	conf := `[global]
fsid = ` + c.FSID + `
mon host = ` + monAddrs + `
public addr = ` + addr + `
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
memstore device bytes = ` + strconv.FormatInt(opts.OSDBytes, 10) + `
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
		if _, err := c.run(ctx, s[0], s[1:]...); err != nil {
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
	if _, err := c.run(ctx, "ceph-authtool", "--create-keyring", osdKeyring, "--gen-key", "-n", "osd.0"); err != nil {
		return err
	}
	if _, err := c.Ceph(ctx, "auth", "add", "osd.0", "osd", "allow *", "mon", "allow profile osd", "mgr", "allow profile osd", "-i", osdKeyring); err != nil {
		return err
	}
	if _, err := c.run(ctx, "ceph-osd", "-c", c.Conf, "-i", "0", "--mkfs", "--osd-uuid", osdUUID); err != nil {
		return err
	}
	if err := c.daemon("ceph-osd", "-i", "0"); err != nil {
		return err
	}
	return c.CreatePool(ctx, c.Pool)
}

// daemon starts a Ceph daemon in the foreground of a session of its own,
// in the cluster's namespace, with its output in Dir/log.
func (c *Ceph) daemon(name string, args ...string) error {
	out, err := os.OpenFile(filepath.Join(c.Dir, "log", name+".out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(name, append([]string{"-f", "-c", c.Conf}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.start(cmd); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	go cmd.Wait()
	id, ok := process.Of(cmd.Process.Pid)
	if !ok {
		return fmt.Errorf("%s exited at once", name)
	}
	c.Daemons = append(c.Daemons, id)
	return nil
}

// start starts cmd in the cluster's namespace.
func (c *Ceph) start(cmd *exec.Cmd) error {
	return startIn(c.Netns, cmd)
}

func startIn(nsName string, cmd *exec.Cmd) error {
	if nsName == "" {
		return cmd.Start()
	}
	ns, err := netns.Open(nsName)
	if err != nil {
		return err
	}
	defer ns.Close()
	return netns.Start(ns, cmd)
}

// CreatePool creates a replicated pool of size 1 for RBD and waits until
// all of the cluster's placement groups are active+clean.
func (c *Ceph) CreatePool(ctx context.Context, name string) error {
	for _, args := range [][]string{
		{"osd", "pool", "create", name, "8"},
		{"osd", "pool", "application", "enable", name, "rbd"},
	} {
		if _, err := c.Ceph(ctx, args...); err != nil {
			return err
		}
	}
	if _, err := c.run(ctx, "rbd", "-c", c.Conf, "--id", "admin", "pool", "init", name); err != nil {
		return err
	}
	return c.waitClean(ctx)
}

// waitClean waits until every placement group is active+clean.
func (c *Ceph) waitClean(ctx context.Context) error {
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

// Ceph runs the ceph CLI as client.admin, in the cluster's namespace, and
// returns its output.
func (c *Ceph) Ceph(ctx context.Context, args ...string) ([]byte, error) {
	return c.run(ctx, "ceph", append([]string{"-c", c.Conf, "--connect-timeout", "20"}, args...)...)
}

// AddUser creates the cephx user client.NAME with the rbd profile on pool
// (what a Hearth storage pool's user needs) and returns its key.
func (c *Ceph) AddUser(ctx context.Context, name, pool string) (key string, err error) {
	out, err := c.Ceph(ctx, "auth", "get-or-create-key", "client."+name,
		"mon", "profile rbd", "osd", "profile rbd pool="+pool, "mgr", "profile rbd pool="+pool)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// Alive reports whether every daemon still runs.
func (c *Ceph) Alive() bool {
	for _, d := range c.Daemons {
		if !d.Alive() {
			return false
		}
	}
	return len(c.Daemons) > 0
}

// Stop kills the daemons and waits until they are gone. It leaves Dir to
// its owner.
func (c *Ceph) Stop() error {
	return killAndWait(c.Daemons, 10*time.Second)
}

// run runs a program in the cluster's namespace and returns its output;
// a failure's error ends with what the program said.
func (c *Ceph) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return runIn(ctx, c.Netns, name, args...)
}

func runIn(ctx context.Context, nsName, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := startIn(nsName, cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: %w (%s)", name, strings.Join(args, " "), ctx.Err(), msg)
		}
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// killAndWait sends SIGKILL to each process still alive and waits up to
// timeout for them to be gone.
func killAndWait(ids []process.ID, timeout time.Duration) error {
	var live []process.ID
	for _, id := range ids {
		if id.Alive() {
			if err := syscall.Kill(id.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("kill %d: %w", id.PID, err)
			}
			live = append(live, id)
		}
	}
	deadline := time.Now().Add(timeout)
	for _, id := range live {
		for id.Alive() {
			if time.Now().After(deadline) {
				return fmt.Errorf("process %d did not exit within %s of SIGKILL", id.PID, timeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// logTail is the end of each log in dir, for an error that says why a
// server did not start.
func logTail(dir string, n int) string {
	logs, _ := filepath.Glob(filepath.Join(dir, "*"))
	var b strings.Builder
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil || len(data) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "\n--- %s:\n%s", filepath.Base(l), strings.Join(lines, "\n"))
	}
	return b.String()
}

// freePort returns a TCP port on addr that nothing listens on now.
func freePort(addr string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func newUUID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/uuid")
	if err != nil {
		panic(errors.New("lab: no /proc/sys/kernel/random/uuid"))
	}
	return strings.TrimSpace(string(b))
}
