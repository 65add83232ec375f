package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"hearth.dev/hearth/client"
)

// serverProc is one `hearth server` run as a child process, so that its
// CPU and memory are its own (the simulated hosts share the bench's
// process) and it can be killed like a real server.
type serverProc struct {
	name, dir, url string
	cmd            *exec.Cmd
	log            *os.File
	exited         chan struct{}
	// heapProfile is where the server writes its heap at SIGUSR1, if
	// asked to.
	heapProfile string
}

// writeHeap has the server write its heap profile now (SIGUSR1) and
// waits until it has.
func (p *serverProc) writeHeap(ctx context.Context) error {
	stats := p.heapProfile + ".memstats"
	before, _ := os.Stat(stats)
	if err := p.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return err
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(100 * time.Millisecond) {
		if st, err := os.Stat(stats); err == nil && (before == nil || st.ModTime().After(before.ModTime())) {
			return nil
		}
	}
	return fmt.Errorf("server %s wrote no heap profile to %s within a minute", p.name, p.heapProfile)
}

// startServers starts n servers (one, or three as an HA control plane
// with a CA from `hearth server ca create`) and waits until each answers.
func startServers(ctx context.Context, bin, dir string, n, maxConns int, profileDir, heapDir, memLimit string) ([]*serverProc, error) {
	var caArgs []string
	if n > 1 {
		caDir := filepath.Join(dir, "ca")
		if out, err := exec.CommandContext(ctx, bin, "server", "ca", "create", caDir).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("hearth server ca create: %v: %s", err, out)
		}
		caArgs = []string{"--ca-cert", filepath.Join(caDir, "ca.crt"), "--ca-key", filepath.Join(caDir, "ca.key")}
	}
	type member struct{ name, peer string }
	var members []member
	var apis []int
	for i := range n {
		pp, err := freePort()
		if err != nil {
			return nil, err
		}
		ap, err := freePort()
		if err != nil {
			return nil, err
		}
		members = append(members, member{fmt.Sprintf("s%d", i+1), fmt.Sprintf("https://127.0.0.1:%d", pp)})
		apis = append(apis, ap)
	}
	var cluster []string
	for _, m := range members {
		cluster = append(cluster, m.name+"="+m.peer)
	}
	var procs []*serverProc
	for i, m := range members {
		p := &serverProc{name: m.name, dir: filepath.Join(dir, m.name), url: fmt.Sprintf("https://127.0.0.1:%d", apis[i]), exited: make(chan struct{})}
		if err := os.MkdirAll(p.dir, 0o700); err != nil {
			return procs, err
		}
		args := []string{"server", "--data-dir", p.dir, "--listen", fmt.Sprintf("127.0.0.1:%d", apis[i]),
			"--etcd-name", m.name, "--etcd-peer-url", m.peer, "--max-connections", strconv.Itoa(maxConns)}
		if profileDir != "" {
			args = append(args, "--cpuprofile", filepath.Join(profileDir, m.name+".pprof"), "--memprofile", filepath.Join(profileDir, m.name+".heap.pprof"))
		}
		if heapDir != "" {
			p.heapProfile = filepath.Join(heapDir, m.name+".heap.pprof")
			args = append(args, "--memprofile", p.heapProfile)
		}
		if n > 1 {
			args = append(args, "--etcd-initial-cluster", strings.Join(cluster, ","))
			args = append(args, caArgs...)
		}
		var err error
		if p.log, err = os.Create(filepath.Join(dir, m.name+".log")); err != nil {
			return procs, err
		}
		p.cmd = exec.Command(bin, args...)
		if memLimit != "" {
			// The Go runtime's soft limit, for the server alone (the
			// simulated hosts in this process keep theirs).
			p.cmd.Env = append(os.Environ(), "GOMEMLIMIT="+memLimit)
		}
		p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
		if err := p.cmd.Start(); err != nil {
			return procs, err
		}
		go func() { _ = p.cmd.Wait(); close(p.exited) }()
		procs = append(procs, p)
	}
	for _, p := range procs {
		if err := p.waitReady(ctx); err != nil {
			return procs, err
		}
	}
	return procs, nil
}

func (p *serverProc) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-p.exited:
			return fmt.Errorf("server %s exited at start: see %s", p.name, p.log.Name())
		default:
		}
		if c, err := p.client(); err == nil {
			if _, err := c.WhoAmI(ctx); err == nil {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("server %s did not answer within 2 minutes: see %s", p.name, p.log.Name())
}

func (p *serverProc) client() (*client.Client, error) {
	return client.FromConfig(filepath.Join(p.dir, "admin.conf"), "")
}

func (p *serverProc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill ends the server at once, as a power cut would: SIGKILL, no
// graceful shutdown of its etcd member or its leadership.
func (p *serverProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// nextProfile makes the server end its CPU profile and start the next
// (hearth server --cpuprofile NAME writes NAME.1, NAME.2, … at each
// SIGUSR1), so that a phase of the run is profiled alone.
func (p *serverProc) nextProfile() {
	if p.alive() {
		_ = p.cmd.Process.Signal(syscall.SIGUSR1)
	}
}

func (p *serverProc) stop() {
	if !p.alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		p.kill()
	}
	p.log.Close()
}

// etcd is a client of the member's unix socket, the way root reaches it.
func (p *serverProc) etcd() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + filepath.Join(p.dir, "etcd.sock")},
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// procStats are a process's CPU time so far and its memory.
type procStats struct {
	cpu       time.Duration
	rss, peak int64
	// rssAnon is the process's own memory; rssFile files mapped and
	// touched (etcd's database, in a server).
	rssAnon, rssFile int64
}

// readProc reads /proc/PID/stat and status.
func readProc(pid int) (procStats, error) {
	var st procStats
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	// The command name may hold spaces; the fields after it do not.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(f) < 13 {
		return st, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	st.cpu = time.Duration(utime+stime) * time.Second / 100 // USER_HZ
	fh, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			st.rss = kb << 10
		case "VmHWM":
			st.peak = kb << 10
		case "RssAnon":
			st.rssAnon = kb << 10
		case "RssFile":
			st.rssFile = kb << 10
		}
	}
	return st, nil
}
