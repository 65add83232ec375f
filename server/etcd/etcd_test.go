package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"hearth.dev/hearth/pki"
)

// TestMain doubles as the child process the socket tests run under
// another uid: with HEARTH_ETCD_TEST_DIAL set it dials that etcd endpoint,
// reads a key and prints it.
func TestMain(m *testing.M) {
	if ep := os.Getenv("HEARTH_ETCD_TEST_DIAL"); ep != "" {
		os.Exit(dialChild(ep, os.Getenv("HEARTH_ETCD_TEST_KEY")))
	}
	os.Exit(m.Run())
}

// dialChild connects to endpoint (unix:///path or http://host:port) as
// etcdctl would and reads key. Exit 3: the connection itself was refused;
// 4: etcd did not answer; 0: it printed the value.
func dialChild(endpoint, key string) int {
	network, addr := "unix", strings.TrimPrefix(endpoint, "unix://")
	if strings.HasPrefix(endpoint, "http://") {
		network, addr = "tcp", strings.TrimPrefix(endpoint, "http://")
	}
	conn, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		fmt.Println("dial:", err)
		return 3
	}
	conn.Close()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		fmt.Println("client:", err)
		return 4
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		fmt.Println("get:", err)
		return 4
	}
	fmt.Printf("value=%s\n", resp.Kvs[0].Value)
	return 0
}

func testCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("etcd test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// startMember starts a lone embedded member in dataDir with its peer port
// on a free loopback port.
func startMember(t *testing.T, dataDir string, ca *pki.CA) *Etcd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := Start(ctx, Config{DataDir: dataDir, CA: ca, PeerURL: "https://127.0.0.1:0"})
	if err != nil {
		t.Fatalf("starting etcd: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// tcpListeners returns the ports this process listens on over TCP, read
// from /proc: the sockets in the kernel's tables that are open here.
func tcpListeners(t *testing.T) map[int]bool {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		link, err := os.Readlink("/proc/self/fd/" + fd.Name())
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	ports := map[int]bool{}
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st … inode (field 9)
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

// TestNoTCPClientListener: the only TCP port an embedded member opens is
// its peer port (mutual TLS, below); etcd clients have the socket alone.
func TestNoTCPClientListener(t *testing.T) {
	before := tcpListeners(t)
	e := startMember(t, t.TempDir(), testCA(t))
	peer := peerPort(t, e)
	var opened []int
	for port := range tcpListeners(t) {
		if !before[port] {
			opened = append(opened, port)
		}
	}
	if len(opened) != 1 || opened[0] != peer {
		t.Fatalf("embedded etcd listens on TCP ports %v, want only its peer port %d", opened, peer)
	}
	// Nothing a member tells its peers or clients points at a TCP
	// client port either.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	members, err := e.Client.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members.Members {
		if len(m.ClientURLs) > 0 {
			t.Errorf("member %s advertises client URLs %v, want none", m.Name, m.ClientURLs)
		}
	}
}

func peerPort(t *testing.T, e *Etcd) int {
	t.Helper()
	if len(e.server.Peers) != 1 {
		t.Fatalf("%d peer listeners, want 1", len(e.server.Peers))
	}
	return e.server.Peers[0].Listener.Addr().(*net.TCPAddr).Port
}

// TestSocketOnlyForOwner: the client socket is 0600 in a 0700 data
// directory; a process of another user cannot connect to it, even where
// it may enter the directory, while root reads through it.
func TestSocketOnlyForOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child process as another user (CI runs as root)")
	}
	// The data directory's parent must let nobody through, so the
	// socket's own mode is what is tested below.
	base, err := os.MkdirTemp("", "hearth-etcd-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(base, "data")
	e := startMember(t, dataDir, testCA(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.Client.Put(ctx, "/hearth/pki/ca", "secret"); err != nil {
		t.Fatal(err)
	}

	sock := SocketPath(dataDir)
	if e.Socket() != sock {
		t.Fatalf("Socket() = %s, want %s", e.Socket(), sock)
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{dataDir, os.ModeDir | 0o700}, {sock, os.ModeSocket | 0o600}} {
		fi, err := os.Lstat(c.path)
		if err != nil {
			t.Error(err)
			continue
		}
		if fi.Mode() != c.mode {
			t.Errorf("%s has mode %v, want %v", c.path, fi.Mode(), c.mode)
		}
	}

	// The child is this test binary, copied where nobody may run it.
	bin := filepath.Join(base, "etcd.test")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	endpoint := "unix://" + sock
	dial := func(uid uint32) (string, int) {
		cmd := exec.Command(bin)
		cmd.Env = []string{"HEARTH_ETCD_TEST_DIAL=" + endpoint, "HEARTH_ETCD_TEST_KEY=/hearth/pki/ca"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("running the child as uid %d: %v", uid, err)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}
	const nobody = 65534
	if out, code := dial(0); code != 0 || !strings.Contains(out, "value=secret") {
		t.Fatalf("root reading through %s: exit %d: %s", endpoint, code, out)
	}
	if out, code := dial(nobody); code != 3 || !strings.Contains(out, "permission denied") {
		t.Errorf("another user reading through %s: exit %d: %s; want the connection refused (permission denied)", endpoint, code, out)
	}
	// With the data directory open to all, the socket's own mode still
	// keeps others out.
	if err := os.Chmod(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dataDir, 0o700)
	if out, code := dial(nobody); code != 3 || !strings.Contains(out, "permission denied") {
		t.Errorf("another user reading through %s in an open directory: exit %d: %s; want the connection refused (permission denied)", endpoint, code, out)
	}
}

// TestPeerPortMutualTLS dials a member's peer port the ways an attacker
// on the network (or the machine) could. Only a certificate from the
// cluster CA with the peer common name gets an answer.
func TestPeerPortMutualTLS(t *testing.T) {
	ca := testCA(t)
	e := startMember(t, t.TempDir(), ca)
	addr := fmt.Sprintf("127.0.0.1:%d", peerPort(t, e))

	// Plain HTTP, as peers spoke before.
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/members")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP GET /members on the peer port: %s %s, want no answer", resp.Status, body)
		}
	}

	certOf := func(c *pki.CA, peer bool) []tls.Certificate {
		t.Helper()
		var certPEM, keyPEM []byte
		var err error
		if peer {
			certPEM, keyPEM, err = c.IssuePeer(nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
		} else {
			certPEM, keyPEM, err = c.IssueServing("hearth-server", nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
		}
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{cert}
	}
	get := func(certs []tls.Certificate, roots *x509.CertPool) (int, error) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{Certificates: certs, RootCAs: roots, MinVersion: tls.VersionTLS12}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + addr + "/members")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		return resp.StatusCode, nil
	}
	other := testCA(t)
	for _, c := range []struct {
		name  string
		certs []tls.Certificate
	}{
		{"no client certificate", nil},
		{"peer certificate from another CA", certOf(other, true)},
		{"self-signed peer certificate", certOf(selfSigned(t), true)},
		{"the cluster CA's serving certificate", certOf(ca, false)},
	} {
		if code, err := get(c.certs, ca.Pool()); err == nil {
			t.Errorf("%s: GET /members answered %d, want the handshake refused", c.name, code)
		}
	}
	// The member proves itself too: a dialer trusting another CA refuses it.
	if _, err := get(certOf(ca, true), other.Pool()); err == nil {
		t.Errorf("dialing with another CA as root: the member's certificate was accepted")
	}
	if code, err := get(certOf(ca, true), ca.Pool()); err != nil || code != http.StatusOK {
		t.Fatalf("a peer certificate from the cluster CA: %d, %v; want 200", code, err)
	}
}

// selfSigned is a CA of one's own making, named like the real one.
func selfSigned(t *testing.T) *pki.CA {
	ca, err := pki.NewCA("hearth-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// TestPeerURLsMustBeTLS: a member refuses to start with a peer URL that is
// not https, naming the flag, before it writes anything.
func TestPeerURLsMustBeTLS(t *testing.T) {
	tests := []struct {
		name     string
		cfg      Config
		wantFlag string
	}{
		{"http peer URL", Config{PeerURL: "http://192.0.2.11:2380"}, "--etcd-peer-url"},
		{"http loopback peer URL", Config{PeerURL: "http://127.0.0.1:0"}, "--etcd-peer-url"},
		{"unspecified address", Config{PeerURL: "https://0.0.0.0:2380"}, "--etcd-peer-url"},
		{"http member in the initial cluster", Config{PeerURL: "https://127.0.0.2:2380",
			InitialCluster: "s1=https://127.0.0.2:2380,s2=http://192.0.2.12:2380"}, "--etcd-initial-cluster"},
		{"no peer URL port", Config{PeerURL: "https://192.0.2.11"}, "--etcd-peer-url"},
		{"client TLS for the embedded etcd", Config{CAFile: "/etc/ssl/ca.pem"}, "--etcd-cafile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			tt.cfg.DataDir, tt.cfg.CA = dir, testCA(t)
			e, err := Start(context.Background(), tt.cfg)
			if err == nil {
				e.Close()
				t.Fatalf("Start: nil error, want one naming %s", tt.wantFlag)
			}
			if !strings.Contains(err.Error(), tt.wantFlag) {
				t.Errorf("Start: %v, want it to name %s", err, tt.wantFlag)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the data directory was created (%v), want nothing written", err)
			}
		})
	}
}

// TestDataDirMustBePrivate: a data directory others may enter is refused
// unless it is empty (then it is made private).
func TestDataDirMustBePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := Start(context.Background(), Config{DataDir: dir, CA: testCA(t), PeerURL: "https://127.0.0.1:0"})
	if err == nil {
		e.Close()
		t.Fatal("Start in a 0755 data directory: nil error, want one")
	}
	if !strings.Contains(err.Error(), "--data-dir") || !strings.Contains(err.Error(), "chmod 0700") {
		t.Errorf("Start: %v, want it to name --data-dir and the fix", err)
	}

	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	startMember(t, empty, testCA(t))
	if fi, err := os.Stat(empty); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("an empty 0755 data directory: %v, %v; want it made 0700", fi.Mode(), err)
	}
}

// TestExternalTLSFlags: client TLS settings for an external etcd are
// checked before anything dials.
func TestExternalTLSFlags(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"cert without key", Config{Endpoints: []string{"https://127.0.0.1:1"}, CertFile: "c.pem"}, "--etcd-certfile and --etcd-keyfile"},
		{"TLS with an http endpoint", Config{Endpoints: []string{"http://127.0.0.1:1"}, CAFile: "ca.pem"}, "every endpoint must be https"},
		{"missing CA file", Config{Endpoints: []string{"https://127.0.0.1:1"}, CAFile: "/nonexistent/ca.pem"}, "--etcd-cafile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := clientTLS(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("clientTLS: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestLoneMemberKeepsFewRaftEntries: a member started alone keeps few
// raft entries in memory once written (etcd's default kept the last
// 5,000, and with them every write's value): 2,000 writes of 8 KiB
// leave much less than their 16 MiB live (no test here runs in
// parallel: the heap's growth is this test's).
func TestLoneMemberKeepsFewRaftEntries(t *testing.T) {
	e := startMember(t, t.TempDir(), testCA(t))
	if !e.LoneVoter() {
		t.Error("a member started alone is not its cluster's lone voter")
	}
	ctx := context.Background()
	live := func() int64 {
		runtime.GC()
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		metrics.Read(s)
		return int64(s[0].Value.Uint64())
	}
	before := live()
	value := strings.Repeat("x", 8<<10)
	for i := range 2000 {
		if _, err := e.Client.Put(ctx, fmt.Sprintf("/k/%d", i%50), value); err != nil {
			t.Fatal(err)
		}
	}
	grew := live() - before
	t.Logf("heap grew by %d MiB", grew>>20)
	// 23 MiB with etcd's default; 6–8 MiB with 500 entries kept.
	if grew > 12<<20 {
		t.Errorf("the heap grew by %d MiB over 2,000 writes of 8 KiB to 50 keys; want under 12 (the raft log kept in memory)", grew>>20)
	}
	for _, tc := range []struct {
		cluster string
		want    uint64
	}{
		{"default=https://127.0.0.1:2380", loneMemberCatchUpEntries},
		{"a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380", 0},
	} {
		if got := catchUpEntries(tc.cluster); got != tc.want {
			t.Errorf("catchUpEntries(%q) = %d, want %d", tc.cluster, got, tc.want)
		}
	}
}
