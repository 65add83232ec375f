// Package nfstest gives tests a real NFS server: NFS-Ganesha with
// rpcbind (started by storage/lab, as the sandbox starts its own),
// exporting a temporary directory over NFSv3.
//
// NFSv3 clients — QEMU's and qemu-img's libnfs among them — find the
// server's services through a portmapper on port 111, which cannot be
// moved; so the server runs in a network namespace of its own (where it takes port 111 without meeting anyone else's),
// joined to the test process's namespace by a veth pair with a /30 from
// the link-local range 169.254.0.0/16, chosen at random among those no
// interface here uses. Nothing routes or forwards beyond that pair.
//
// A test process has at most one server: the first Start starts it (in
// a second or two) and later calls share it. The package's TestMain calls
// Main (or Stop), which stops it and removes its namespace and files. A
// process killed before that leaves them behind; the next Start, in any
// test process, finds them by their name (hearth-nfstest-PID-*) and
// removes them first.
package nfstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"hearth.dev/hearth/netns"
	"hearth.dev/hearth/storage/internal/peer"
	"hearth.dev/hearth/storage/lab"
)

const dirPrefix = "hearth-nfstest"

// ExportPath is the path clients mount (Ganesha's pseudo path).
const ExportPath = lab.ExportPath

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
	srv   *lab.NFS
}

var (
	mu       sync.Mutex
	shared   *Server
	startErr error
)

// Tools are the programs the server needs, with their Debian packages.
var Tools = lab.NFSTools

// Start returns the test process's NFS server, starting it on first use.
// It skips t when not root or when a program is missing, and fails t when
// the server does not come up.
func Start(t testing.TB) *Server {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the test NFS server needs root (network namespaces; run the tests as root, as CI does)")
	}
	if tool, pkg := lab.MissingNFSTool(); tool != "" {
		t.Skipf("%s not found: install Debian's %s (scripts/deps.sh test does) to run the NFS tests", tool, pkg)
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
	// The directory is 0700 (peer.NewDir); the server runs as root.
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

	srv, err := lab.StartNFS(context.Background(), lab.NFSOptions{Dir: s.Dir, Netns: s.netns, Address: s.Host})
	if err != nil {
		return err
	}
	s.srv = srv
	return nil
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
	if s.srv != nil {
		if err := s.srv.Stop(); err != nil {
			errs = append(errs, err)
		}
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
