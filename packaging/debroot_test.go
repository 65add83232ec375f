package packaging

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth.dev/hearth/flock"
)

// The throwaway Debian roots are made by mmdebstrap from Debian's
// packages: the minbase variant (Essential packages and apt), as a
// freshly installed machine has, without anything Hearth needs. The
// suite and mirror are this machine's Debian 12 by default.
func debianSuite() string  { return envOr("HEARTH_TEST_DEBIAN_SUITE", "bookworm") }
func debianMirror() string { return envOr("HEARTH_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian") }
func debianSecurity() string {
	return envOr("HEARTH_TEST_DEBIAN_SECURITY", "http://deb.debian.org/debian-security")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// cacheDir is where the base root's tarball and the .debs downloaded
// into roots are kept between runs (root's cache directory).
func cacheDir(t *testing.T) string {
	t.Helper()
	base, err := os.UserCacheDir()
	if err != nil {
		t.Fatalf("no cache directory: %v", err)
	}
	dir := filepath.Join(base, "hearth", "debroot")
	if err := os.MkdirAll(filepath.Join(dir, "archives"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func needDebRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a Debian root, mounts and chroots into it")
	}
	for _, tool := range []struct{ bin, pkg string }{{"mmdebstrap", "mmdebstrap"}, {"unshare", "util-linux"}, {"nsenter", "util-linux"}, {"dpkg-deb", "dpkg"}} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			t.Skipf("%s is not installed (apt-get install %s; scripts/deps.sh test installs it)", tool.bin, tool.pkg)
		}
	}
}

// baseTarball returns the cached minbase root, making it the first time
// (a few minutes). Runs of the tests on one machine share it, under a
// lock; it is written whole or not at all.
func baseTarball(t *testing.T) string {
	t.Helper()
	dir := cacheDir(t)
	path := filepath.Join(dir, debianSuite()+"-minbase.tar")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	unlock, err := flock.Lock(ctx, dir, time.Second)
	if err != nil {
		t.Fatalf("locking %s: %v", dir, err)
	}
	defer unlock()
	if _, err := os.Stat(path); err == nil {
		return path
	}
	t.Logf("making a %s minbase root with mmdebstrap (once; cached in %s)", debianSuite(), path)
	tmp := filepath.Join(dir, fmt.Sprintf(".tmp-%d.tar", os.Getpid()))
	defer os.Remove(tmp)
	s := debianSuite()
	cmd := exec.CommandContext(ctx, "mmdebstrap", "--variant=minbase", "--quiet", s, tmp,
		fmt.Sprintf("deb %s %s main", debianMirror(), s),
		fmt.Sprintf("deb %s %s-updates main", debianMirror(), s),
		fmt.Sprintf("deb %s %s-security main", debianSecurity(), s))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mmdebstrap: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// debRoot is a throwaway Debian root and a mount namespace of its own
// that holds its mounts (proc, sys, dev, a tmpfs on /run, and whatever the
// test binds in) for as long as the test runs: a process of the test
// sleeps in it, and commands enter it (nsenter) and chroot. When the test
// ends the sleeper is killed and every mount goes with the namespace, so
// nothing is left mounted on the machine, however the test ended.
type debRoot struct {
	t      *testing.T
	dir    string
	holder *exec.Cmd
}

// bind is a host path to show inside the root.
// hostCAFile is where a root keeps the machine's trusted certificate
// authorities (see newDebRoot).
const hostCAFile = "/etc/hearth-test-host-ca.pem"

type bind struct {
	host, inRoot string
	readOnly     bool
	// overlay shows host with the root's writes kept aside (in the
	// test's temporary directory), so the host path never changes.
	overlay bool
}

func newDebRoot(t *testing.T, binds ...bind) *debRoot {
	t.Helper()
	needDebRoot(t)
	base := baseTarball(t)
	tmp := t.TempDir()
	r := &debRoot{t: t, dir: filepath.Join(tmp, "root")}
	if err := os.Mkdir(r.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-xf", base, "-C", r.dir).CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v\n%s", base, err, out)
	}
	if resolv, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		os.WriteFile(filepath.Join(r.dir, "etc", "resolv.conf"), resolv, 0o644)
	}
	// The machine's network comes with the root: its resolver, and the
	// certificate authorities its programs are told to trust (an egress
	// proxy may sign what it forwards), so that Go's module proxy and
	// npm's registry answer in the root as they do on the machine.
	if ca := os.Getenv("SSL_CERT_FILE"); ca != "" {
		if pem, err := os.ReadFile(ca); err == nil {
			os.WriteFile(r.path(hostCAFile), pem, 0o644)
		}
	}
	r.holder = exec.Command("unshare", "--mount", "--propagation", "private", "--", "sleep", "infinity")
	if err := r.holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.holder.Process.Kill()
		r.holder.Wait()
	})
	// unshare has made the namespace once it execs sleep.
	deadline := time.Now().Add(10 * time.Second)
	for {
		self, _ := os.Readlink("/proc/self/ns/mnt")
		held, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", r.holder.Process.Pid))
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", r.holder.Process.Pid))
		if held != "" && held != self && strings.TrimSpace(string(comm)) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare did not make a mount namespace")
		}
		time.Sleep(20 * time.Millisecond)
	}
	mounts := [][]string{
		// The root is a mount point of its own, as / is on a machine
		// (the sandbox makes its mounts private from /).
		{"--bind", r.dir, r.dir},
		{"-t", "proc", "proc", r.path("/proc")},
		{"--rbind", "/sys", r.path("/sys")},
		{"--rbind", "/dev", r.path("/dev")},
		{"-t", "tmpfs", "tmpfs", r.path("/run")},
	}
	for _, b := range binds {
		target := r.path(b.inRoot)
		if fi, err := os.Stat(b.host); err == nil && !fi.IsDir() {
			os.MkdirAll(filepath.Dir(target), 0o755)
			os.WriteFile(target, nil, 0o644)
		} else if err := os.MkdirAll(target, 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case b.overlay:
			up, work := filepath.Join(tmp, "overlay-up"+strconv.Itoa(len(mounts))), filepath.Join(tmp, "overlay-work"+strconv.Itoa(len(mounts)))
			os.MkdirAll(up, 0o755)
			os.MkdirAll(work, 0o755)
			mounts = append(mounts, []string{"-t", "overlay", "overlay", "-o", "lowerdir=" + b.host + ",upperdir=" + up + ",workdir=" + work, target})
		case b.readOnly:
			mounts = append(mounts, []string{"--bind", "-o", "ro", b.host, target})
		default:
			mounts = append(mounts, []string{"--bind", b.host, target})
		}
	}
	for _, m := range mounts {
		args := append([]string{"-t", strconv.Itoa(r.holder.Process.Pid), "-m", "mount"}, m...)
		if out, err := exec.Command("nsenter", args...).CombinedOutput(); err != nil {
			t.Fatalf("mount %v: %v\n%s", m, err, out)
		}
	}
	return r
}

// path is a path inside the root, seen from the host.
func (r *debRoot) path(p string) string { return filepath.Join(r.dir, p) }

// command returns a command that runs inside the root as root, with the
// environment of a fresh login (PATH, HOME, a UTF-8 locale) and the
// machine's Go proxy settings; extra adds to the environment.
func (r *debRoot) command(ctx context.Context, extra []string, args ...string) *exec.Cmd {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", "TERM=dumb"}
	for _, k := range []string{"GOPROXY", "GOSUMDB", "GONOSUMDB", "GOPRIVATE", "GONOPROXY", "GOTOOLCHAIN"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	if _, err := os.Stat(r.path(hostCAFile)); err == nil {
		env = append(env, "SSL_CERT_FILE="+hostCAFile, "NODE_EXTRA_CA_CERTS="+hostCAFile)
	}
	env = append(env, extra...)
	argv := append([]string{"-t", strconv.Itoa(r.holder.Process.Pid), "-m", "--", "chroot", r.dir, "/usr/bin/env", "-i"}, env...)
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	cmd.Dir = "/"
	return cmd
}

// run runs a command in the root and returns its output (stdout and
// stderr together), logging it when the test fails.
func (r *debRoot) run(timeout time.Duration, extra []string, args ...string) (string, error) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := r.command(ctx, extra, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s in the Debian root: %w\n%s", strings.Join(args, " "), err, tailOf(out.String(), 4000))
	}
	return out.String(), err
}

// must is run, failing the test on an error.
func (r *debRoot) must(timeout time.Duration, extra []string, args ...string) string {
	r.t.Helper()
	out, err := r.run(timeout, extra, args...)
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

// withAptCache runs fn with the .debs downloaded earlier (by any test,
// any run) in the root's apt cache, and keeps what fn downloaded for the
// next time. Each root has its own copy, so roots never share apt's
// locks.
func (r *debRoot) withAptCache(fn func()) {
	r.t.Helper()
	cache := filepath.Join(cacheDir(r.t), "archives")
	archives := r.path("/var/cache/apt/archives")
	have := map[string]bool{}
	debs, _ := filepath.Glob(filepath.Join(cache, "*.deb"))
	for _, d := range debs {
		name := filepath.Base(d)
		if err := os.Link(d, filepath.Join(archives, name)); err != nil {
			copyFile(d, filepath.Join(archives, name))
		}
		have[name] = true
	}
	fn()
	got, _ := filepath.Glob(filepath.Join(archives, "*.deb"))
	for _, d := range got {
		name := filepath.Base(d)
		if have[name] {
			continue
		}
		tmp := filepath.Join(cache, ".tmp-"+name)
		if copyFile(d, tmp) == nil {
			os.Rename(tmp, filepath.Join(cache, name))
		}
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// installed lists the packages dpkg has installed in the root.
func (r *debRoot) installed() map[string]bool {
	r.t.Helper()
	out := r.must(time.Minute, nil, "dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n")
	m := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		if name, status, ok := strings.Cut(l, " "); ok && status == "installed" {
			m[name] = true
		}
	}
	return m
}

// syncBuf is a buffer a process writes to while the test reads it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func tailOf(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// repoRoot is the checkout this test runs in.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
