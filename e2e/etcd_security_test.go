package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/pki"
	"hearth.dev/hearth/server/servertest"
)

// processTCPListeners returns the TCP ports process pid listens on: the
// sockets of the kernel's tables (pid's network namespace) that pid holds.
func processTCPListeners(t *testing.T, pid int) map[int]bool {
	t.Helper()
	inodes := map[string]bool{}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	ports := map[int]bool{}
	for _, table := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st … inode (field 9); 0A is LISTEN.
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
				continue
			}
			_, portHex, _ := strings.Cut(f[1], ":")
			port, err := strconv.ParseUint(portHex, 16, 16)
			if err != nil {
				t.Fatalf("%s: %q: %v", table, line, err)
			}
			ports[int(port)] = true
		}
	}
	return ports
}

// TestServerTCPPorts: a running `hearth server` listens on TCP for its API
// and its etcd peers (mutual TLS) and nothing else: etcd's clients have
// only the socket. A unit that still asks for the old client port is told
// so, and nothing listens there.
func TestServerTCPPorts(t *testing.T) {
	m := newMember(t, "solo")
	p := start(t, m, "", true)
	got := processTCPListeners(t, p.cmd.Process.Pid)
	want := map[int]bool{m.api: true, m.peer: true}
	if len(got) != len(want) || !got[m.api] || !got[m.peer] {
		t.Fatalf("the server listens on TCP ports %v, want only the API's %d and etcd's peer port %d", keys(got), m.api, m.peer)
	}
	if fi, err := os.Stat(m.socket()); err != nil || fi.Mode() != os.ModeSocket|0o600 {
		t.Fatalf("etcd's socket %s: %v, %v; want a socket with mode 0600", m.socket(), fi.Mode(), err)
	}
	if n, err := localCount(servertest.Ctx(t), m.socket(), "/hearth/pki/ca"); err != nil || n != 1 {
		t.Fatalf("reading the CA record through the socket as root: %d, %v", n, err)
	}

	old := newMember(t, "old")
	clientPort := servertest.FreePort(t)
	args := append(old.args(""), "--etcd-client-url", fmt.Sprintf("http://127.0.0.1:%d", clientPort))
	cmd := exec.Command(hearthBin, args...)
	done := make(chan []byte, 1)
	go func() {
		out, _ := cmd.CombinedOutput()
		done <- out
	}()
	var out []byte
	select {
	case out = <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("hearth server --etcd-client-url did not exit: %s", <-done)
	}
	if cmd.ProcessState.Success() || !strings.Contains(string(out), "--etcd-client-url") {
		t.Errorf("hearth server --etcd-client-url: %v: %s; want it refused, naming the flag", cmd.ProcessState, out)
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", clientPort), 2*time.Second); err == nil {
		c.Close()
		t.Errorf("a TCP connection to the old client port %d was accepted", clientPort)
	}
}

func keys(m map[int]bool) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestHAPeersNeedClusterCA: three members whose peer ports are on
// addresses of their own form a cluster over mutual TLS only when they
// share the cluster CA. A member with a CA of its own is never let in
// (nor does it let the others in), and the peer port refuses plain HTTP
// and certificates of anyone's own making. Given the cluster's CA, the same
// member joins.
func TestHAPeersNeedClusterCA(t *testing.T) {
	caDir, strangerCA := createCA(t), createCA(t)
	ms := threeMembers(t)
	ms[0].caDir, ms[1].caDir, ms[2].caDir = caDir, caDir, strangerCA
	cluster := initialCluster(ms)
	procs := []*proc{start(t, ms[0], cluster, false), start(t, ms[1], cluster, false), start(t, ms[2], cluster, false)}
	procs[0].waitReady()
	procs[1].waitReady()
	ctx := servertest.Ctx(t)
	if _, err := procs[0].client().Create(ctx, network("quorum", "default")); err != nil {
		t.Fatal(err)
	}
	if _, err := procs[1].client().Get(ctx, "Network", "default", "quorum"); err != nil {
		t.Fatal(err)
	}

	// The stranger has had time to join; it has not. (Its etcd serves
	// no clients until it has a quorum, so the read below times out.)
	time.Sleep(3 * time.Second)
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	n, err := localCount(sctx, ms[2].socket(), "/hearth/objects/networks/default/quorum")
	scancel()
	if err == nil && n > 0 {
		t.Errorf("the member with another CA holds the cluster's data")
	}
	if _, err := os.Stat(filepath.Join(ms[2].dataDir, "admin.conf")); err == nil {
		t.Errorf("the member with another CA became ready")
	}
	if procs[2].cmd.ProcessState != nil {
		t.Fatalf("the member with another CA exited: %s", procs[2].log)
	}

	// Dial s1's peer port as an outsider would.
	peer := net.JoinHostPort(ms[0].peerIP, fmt.Sprint(ms[0].peer))
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + peer + "/members"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP GET /members on a peer port: %s", resp.Status)
		}
	}
	stranger, err := pki.ReadCA(filepath.Join(strangerCA, "ca.crt"), filepath.Join(strangerCA, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := stranger.IssuePeer(nil, []net.IP{net.ParseIP(ms[2].peerIP)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", peer,
		&tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true})
	if err == nil {
		// TLS 1.3 reports the server's refusal of a client
		// certificate on the first read.
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "GET /members HTTP/1.1\r\nHost: %s\r\n\r\n", peer)
		buf := make([]byte, 64)
		n, rerr := conn.Read(buf)
		conn.Close()
		if rerr == nil {
			t.Errorf("a peer certificate from another CA got an answer: %q", buf[:n])
		}
	}

	// The same member, given the cluster's CA, joins.
	procs[2].stop()
	ms[2].caDir = caDir
	if err := os.RemoveAll(ms[2].dataDir); err != nil {
		t.Fatal(err)
	}
	procs[2] = start(t, ms[2], cluster, true)
	ctx = servertest.Ctx(t)
	servertest.Eventually(t, 30*time.Second, func() error {
		n, err := localCount(ctx, ms[2].socket(), "/hearth/objects/networks/default/quorum")
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("the member given the cluster's CA holds %d of 1 networks", n)
		}
		return nil
	})
}

// TestHARefusesPlainPeers: a server given a plain http peer URL, or an
// HA member given no CA, stops at once with an error naming the flag.
func TestHARefusesPlainPeers(t *testing.T) {
	ms := threeMembers(t)
	caDir := createCA(t)
	plain := ms[0]
	plain.peerHTTP, plain.caDir = true, caDir
	noCA := ms[1]
	for _, c := range []struct {
		name string
		m    member
		want string
	}{
		{"http peer URL", plain, "--etcd-peer-url"},
		{"no CA for an HA member", noCA, "--ca-cert"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// A server that does not refuse waits for its peers:
			// the context ends it.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, hearthBin, c.m.args(initialCluster(ms))...).CombinedOutput()
			if err == nil || ctx.Err() != nil || !strings.Contains(string(out), c.want) {
				t.Fatalf("hearth server: %v: %s; want it refused, naming %s", err, out, c.want)
			}
			if c, err := net.DialTimeout("tcp", net.JoinHostPort(c.m.peerIP, fmt.Sprint(c.m.peer)), time.Second); err == nil {
				c.Close()
				t.Errorf("something listens on the refused member's peer port")
			}
		})
	}
}
