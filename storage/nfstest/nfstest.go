// Package nfstest starts a real NFS server for tests: NFS-Ganesha
// (Debian's nfs-ganesha and nfs-ganesha-vfs) with rpcbind, exporting a
// temporary directory over NFSv3.
//
// This machine's kernel has no nfsd (nor an NFS client), so the server is
// Ganesha, in userspace. NFSv3 clients — QEMU's and qemu-img's libnfs
// among them — find the server's services through a portmapper on port
// 111, which cannot be moved; so the server runs in a network namespace
// of its own (where it takes port 111 without meeting anyone else's),
// joined to the test process's namespace by a veth pair with a /30 from
// the link-local range 169.254.0.0/16, chosen at random among those no
// interface here uses. Nothing routes or forwards beyond that pair. In
// the namespace the server also has a private mount namespace whose /run
// and /var/lib/nfs are its own, so its rpcbind socket and state files
// never meet the machine's or another test's.
//
// A test process has at most one server: the first Start starts it (in
// a second or two) and later calls share it. The package's TestMain calls
// Main (or Stop), which stops it and removes its namespace and files. A
// process killed before that leaves them behind; the next Start, in any
// test process, finds them by their name (hearth-nfstest-PID-*) and
// removes them first.
package nfstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"hearth.dev/hearth/netns"
	"hearth.dev/hearth/storage/internal/peer"
	"hearth.dev/hearth/storage/nfs3"
)

const dirPrefix = "hearth-nfstest"

// ExportPath is the path clients mount (Ganesha's pseudo path).
const ExportPath = "/export"

// Server is a running test NFS server.
type Server struct {
	// Dir holds the server's configuration and logs, and the export.
	Dir string
	// Export is the exported directory, as this machine sees it.
	Export string
	// Host is the server's address, which clients reach.
	Host string
	// Path is what clients mount: ExportPath.
	Path string

	netns string
	veth  string
	proc  *exec.Cmd
}

var (
	mu       sync.Mutex
	shared   *Server
	startErr error
)

// Tools are the programs the server needs, with their Debian packages.
var Tools = map[string]string{
	"ganesha.nfsd": "nfs-ganesha (and nfs-ganesha-vfs)",
	"rpcbind":      "rpcbind",
}

// Start returns the test process's NFS server, starting it on first use.
// It skips t when not root or when a program is missing, and fails t when
// the server does not come up.
func Start(t testing.TB) *Server {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the test NFS server needs root (network namespaces; run the tests as root, as CI does)")
	}
	for tool, pkg := range Tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: install Debian's %s (scripts/deps.sh test does) to run the NFS tests", tool, pkg)
		}
	}
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so"); err != nil {
		if matches, _ := filepath.Glob("/usr/lib/*/ganesha/libfsalvfs.so"); len(matches) == 0 {
			t.Skip("Ganesha's VFS backend not found: install Debian's nfs-ganesha-vfs to run the NFS tests")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if shared == nil && startErr == nil {
		began := time.Now()
		shared, startErr = start()
		if startErr == nil {
			t.Logf("nfstest: server %s:%s up in %s (export %s)", shared.Host, shared.Path, time.Since(began).Round(time.Millisecond), shared.Export)
		}
	}
	if startErr != nil {
		t.Fatalf("nfstest: %v", startErr)
	}
	return shared
}

// Main runs a package's tests, stops the server and exits: call it from
// the package's TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if err := Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "nfstest:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// Stop stops the process's server, if it started one, and removes its
// namespace and files.
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

func start() (*Server, error) {
	if err := peer.Sweep(dirPrefix, sweepDir); err != nil {
		return nil, fmt.Errorf("sweeping a killed test's server: %w", err)
	}
	dir, err := peer.NewDir(dirPrefix)
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, Export: filepath.Join(dir, "export"), Path: ExportPath,
		netns: filepath.Base(dir), veth: "hnfs" + randomHex(4)}
	if err := s.setup(); err != nil {
		err = fmt.Errorf("%w%s", err, s.logTail())
		s.stop()
		return nil, err
	}
	return s, nil
}

// sweepDir removes what the server of a dead test process left: its
// processes (those in its network namespace) and the namespace.
func sweepDir(dir string) error {
	name := filepath.Base(dir)
	path := netns.Path(name)
	var nsStat syscall.Stat_t
	if err := syscall.Stat(path, &nsStat); err != nil {
		return nil // no namespace: nothing runs
	}
	pids := peer.Processes(func(pid int, _ string) bool {
		var st syscall.Stat_t
		return syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) == nil && st.Ino == nsStat.Ino && st.Dev == nsStat.Dev
	})
	if err := peer.KillAndWait(pids, 10*time.Second); err != nil {
		return err
	}
	if err := netns.Delete(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (s *Server) setup() error {
	if err := os.Mkdir(s.Export, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(s.Dir, "log"), 0o700); err != nil {
		return err
	}
	// The directory itself is 0700 (peer.NewDir); the server runs as root.
	ns, err := netns.Create(s.netns)
	if err != nil {
		return err
	}
	defer ns.Close()
	local, remote, err := freeLinkLocal30()
	if err != nil {
		return err
	}
	s.Host = remote.IP.String()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: s.veth}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth %s: %w", s.veth, err)
	}
	// No IPv6 on the machine's side: not even a link-local route.
	os.WriteFile("/proc/sys/net/ipv6/conf/"+s.veth+"/disable_ipv6", []byte("1"), 0o644)
	link, err := netlink.LinkByName(s.veth)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: local}); err != nil {
		return fmt.Errorf("veth %s: %w", s.veth, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return err
	}
	err = netns.Do(ns, func() error {
		for _, name := range []string{"lo", "eth0"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if name == "eth0" {
				if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: remote}); err != nil {
					return err
				}
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("namespace %s: %w", s.netns, err)
	}

	conf := `NFS_CORE_PARAM {
	Protocols = 3;
	Enable_NLM = false;
	Enable_RQUOTA = false;
	Mount_Path_Pseudo = true;
}
NFSV4 { Graceless = true; }
EXPORT {
	Export_Id = 1;
	Path = "` + s.Export + `";
	Pseudo = "` + ExportPath + `";
	Access_Type = RW;
	Squash = No_Root_Squash;
	SecType = sys;
	Protocols = 3;
	Transports = TCP;
	FSAL { Name = VFS; }
}
LOG { Default_Log_Level = WARN; }
`
	confPath := filepath.Join(s.Dir, "ganesha.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	// rpcbind first, in the background; Ganesha registers with it (over
	// loopback: its socket in the private /run is rpcbind's) and then
	// takes the shell's place.
	script := `set -e
mount -t tmpfs -o mode=0755 hearth-nfstest /run
mkdir -p /var/lib/nfs
mount -t tmpfs -o mode=0755 hearth-nfstest /var/lib/nfs
mkdir -p /run/rpcbind /run/ganesha /var/lib/nfs/ganesha
rpcbind -f -w &
i=0
while [ ! -S /run/rpcbind.sock ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
exec ganesha.nfsd -F -f "$1" -L "$2" -p /run/ganesha/ganesha.pid
`
	out, err := os.OpenFile(filepath.Join(s.Dir, "log", "server.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command("/bin/sh", "-c", script, "nfstest", confPath, filepath.Join(s.Dir, "log", "ganesha.log"))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Setpgid: true}
	if err := netns.Start(ns, cmd); err != nil {
		return fmt.Errorf("start ganesha: %w", err)
	}
	s.proc = cmd
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// Ready once a client can mount the export.
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := nfs3.Dial(s.Host, s.Path)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case werr := <-exited:
			s.proc = nil
			return fmt.Errorf("ganesha exited: %v", werr)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the export did not become mountable: %w", err)
		}
	}
}

// freeLinkLocal30 picks a /30 of 169.254.0.0/16 (not 169.254.169.0/24,
// where metadata services live) that no interface here has an address in,
// and returns its two host addresses.
func freeLinkLocal30() (local, remote *net.IPNet, err error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, nil, err
	}
	mask := net.CIDRMask(30, 32)
	for range 100 {
		n, err := rand.Int(rand.Reader, big.NewInt(1<<14))
		if err != nil {
			return nil, nil, err
		}
		base := uint32(169<<24|254<<16) | uint32(n.Int64())<<2
		if (base>>8)&0xff == 169 || (base>>8)&0xff == 0 || (base>>8)&0xff == 255 {
			continue
		}
		ip := func(off uint32) net.IP {
			v := base + off
			return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
		}
		subnet := &net.IPNet{IP: ip(0), Mask: mask}
		used := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && (subnet.Contains(ipn.IP) || ipn.Contains(subnet.IP)) {
				used = true
			}
		}
		if !used {
			return &net.IPNet{IP: ip(1), Mask: mask}, &net.IPNet{IP: ip(2), Mask: mask}, nil
		}
	}
	return nil, nil, errors.New("no free /30 in 169.254.0.0/16")
}

func (s *Server) stop() error {
	var errs []error
	if s.proc != nil {
		// The server's process group: the shell's successor and rpcbind.
		syscall.Kill(-s.proc.Process.Pid, syscall.SIGKILL)
	}
	if err := sweepDir(s.Dir); err != nil {
		errs = append(errs, err)
	}
	if l, err := netlink.LinkByName(s.veth); err == nil {
		netlink.LinkDel(l)
	}
	if err := os.RemoveAll(s.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *Server) logTail() string {
	var b strings.Builder
	for _, f := range []string{"server.out", "ganesha.log"} {
		data, err := os.ReadFile(filepath.Join(s.Dir, "log", f))
		if err != nil || len(data) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 10 {
			lines = lines[len(lines)-10:]
		}
		fmt.Fprintf(&b, "\n--- %s:\n%s", f, strings.Join(lines, "\n"))
	}
	return b.String()
}

// URL is the nfs:// URL of a file in the export, as libnfs (QEMU,
// qemu-img) takes it.
func (s *Server) URL(name string) string {
	return "nfs://" + s.Host + s.Path + "/" + name
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
