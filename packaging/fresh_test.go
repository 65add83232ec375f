package packaging

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The README's two commands on a fresh Debian machine with nothing but
// Go: these tests run them (their set-up whole, and a small part of what
// follows) in throwaway Debian roots. They download and install a few
// hundred MB of Debian packages into each root and take several minutes,
// so they run when asked: HEARTH_TEST_FRESH_MACHINE=1.
func needFreshMachineTests(t *testing.T) {
	t.Helper()
	if os.Getenv("HEARTH_TEST_FRESH_MACHINE") == "" {
		t.Skip("installs the README's commands into fresh Debian roots (several minutes, a few hundred MB): set HEARTH_TEST_FRESH_MACHINE=1")
	}
	needDebRoot(t)
	if _, err := os.Stat("/usr/local/go/bin/go"); err != nil {
		t.Skip("needs Go in /usr/local/go, to show it to the fresh root as a newcomer's machine has it")
	}
}

// checkoutRoot makes a fresh Debian root that shows this checkout at /src
// (its writes kept aside, so the checkout never changes), its git
// directory where the checkout's .git points, Go in /usr/local/go, and
// the machine's Go module and build caches (only to save time: they hold
// nothing the root would not download or build itself).
func checkoutRoot(t *testing.T) *debRoot {
	t.Helper()
	repo := repoRoot(t)
	binds := []bind{
		{host: repo, inRoot: "/src", overlay: true},
		{host: "/usr/local/go", inRoot: "/usr/local/go", readOnly: true},
	}
	if out, err := exec.Command("git", "-C", repo, "rev-parse", "--git-common-dir").Output(); err == nil {
		common := strings.TrimSpace(string(out))
		if !filepath.IsAbs(common) {
			common = filepath.Join(repo, common)
		}
		if !strings.HasPrefix(common, repo+"/") {
			// A worktree: its .git names a directory outside it.
			binds = append(binds, bind{host: common, inRoot: common, readOnly: true})
		}
	}
	home, _ := os.UserHomeDir()
	for _, c := range []struct{ env, def string }{{"GOMODCACHE", filepath.Join(home, "go", "pkg", "mod")}, {"GOCACHE", filepath.Join(home, ".cache", "go-build")}} {
		out, err := exec.Command("/usr/local/go/bin/go", "env", c.env).Output()
		dir := strings.TrimSpace(string(out))
		if err != nil || dir == "" {
			continue
		}
		binds = append(binds, bind{host: dir, inRoot: c.def})
	}
	return newDebRoot(t, binds...)
}

// depsInterruptedThenRerun runs scripts/deps.sh ROLE in the root and
// kills it and everything it started (SIGKILL to its process group) once
// dpkg is unpacking: harder than Ctrl-C, which apt and dpkg hold off
// while they unpack, and what a closed terminal or a power cut does. Then
// it checks that running it again finishes the job (dpkg's audit finds
// nothing half-done) and that a third run does nothing.
func depsInterruptedThenRerun(t *testing.T, r *debRoot, role string, want []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := r.command(ctx, nil, "/src/scripts/deps.sh", role)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var said strings.Builder
	sc := bufio.NewScanner(pipe)
	interrupted := false
	for sc.Scan() {
		line := sc.Text()
		said.WriteString(line + "\n")
		if !interrupted && strings.HasPrefix(line, "Unpacking ") {
			// Well into dpkg's work.
			time.Sleep(2 * time.Second)
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			interrupted = true
		}
	}
	err = cmd.Wait()
	if interrupted {
		// What dpkg left: packages unpacked but not configured.
		audit, _ := r.run(time.Minute, nil, "dpkg", "--audit")
		t.Logf("dpkg --audit after the kill:\n%s", tailOf(audit, 1500))
	}
	if !interrupted {
		t.Fatalf("deps.sh %s never unpacked anything (err %v):\n%s", role, err, tailOf(said.String(), 3000))
	}
	first := strings.SplitN(said.String(), "\n", 2)[0]
	if !strings.HasPrefix(first, "installing the Debian packages the "+role+" needs that are missing: ") {
		t.Errorf("deps.sh %s did not first say what it installs; it began with %q", role, first)
	}
	t.Logf("deps.sh %s killed while unpacking (%v)", role, err)

	out := r.must(30*time.Minute, nil, "/src/scripts/deps.sh", role)
	t.Logf("deps.sh %s again: %s", role, tailOf(out, 400))
	if audit := r.must(time.Minute, nil, "dpkg", "--audit"); strings.TrimSpace(audit) != "" {
		t.Errorf("dpkg --audit after the second run:\n%s", audit)
	}
	have := r.installed()
	for _, p := range want {
		if !have[p] {
			t.Errorf("%s is not installed after deps.sh %s", p, role)
		}
	}
	start := time.Now()
	if out := r.must(5*time.Minute, nil, "/src/scripts/deps.sh", role); strings.TrimSpace(out) != "" {
		t.Errorf("deps.sh %s a third time, with everything installed, said:\n%s", role, out)
	}
	t.Logf("deps.sh %s with everything installed took %s", role, time.Since(start).Round(time.Millisecond))
}

// TestFreshMachineDemo: on a fresh root, `sudo ./examples/demo.sh` installs
// what the demo needs (interrupted once while dpkg unpacks, and run
// again), builds hearth from the checkout, and brings the lab up with its
// VMs booting; run again and cut short while the sandbox comes up, it
// takes down the sandbox it found and the one it was building.
func TestFreshMachineDemo(t *testing.T) {
	needFreshMachineTests(t)
	r := checkoutRoot(t)

	// Before anything is installed, hearth doctor names every missing
	// piece with what to install. (Built without VCS stamping: git is
	// one of the missing pieces.)
	r.must(20*time.Minute, []string{"GOFLAGS=-buildvcs=false"}, "sh", "-c", "cd /src && /usr/local/go/bin/go build -o /tmp/hearth ./cmd/hearth")
	out, err := r.run(5*time.Minute, nil, "/tmp/hearth", "doctor", "--role", "sandbox")
	if err == nil {
		t.Errorf("hearth doctor --role sandbox passed on a fresh root:\n%s", out)
	}
	for _, want := range []string{"apt-get install qemu-system-x86", "apt-get install qemu-utils", "apt-get install ipxe"} {
		if !strings.Contains(out, want) {
			t.Errorf("hearth doctor on a fresh root does not say %q:\n%s", want, out)
		}
	}
	t.Logf("hearth doctor --role sandbox on a fresh root:\n%s", out)

	r.withAptCache(func() {
		depsInterruptedThenRerun(t, r, "demo", []string{"qemu-system-x86", "qemu-utils", "ipxe-qemu", "ovmf", "ipxe", "git", "ca-certificates"})
	})

	// Sandboxes of this test's own: another name prefix and underlay
	// than anyone's on this machine.
	prefix := fmt.Sprintf("hfd%d", rand.IntN(1000))
	env := []string{
		"HEARTH_SANDBOX_DIR=/var/lib/hearth-sandbox-test",
		"HEARTH_SANDBOX_ARGS=--prefix " + prefix + fmt.Sprintf(" --underlay-cidr 10.%d.%d.0/24", 200+rand.IntN(50), rand.IntN(250)),
	}
	t.Cleanup(func() {
		r.run(5*time.Minute, nil, "/src/bin/hearth", "sandbox", "down", "--dir", "/var/lib/hearth-sandbox-test", "--prefix", prefix)
	})
	if out, err := r.run(5*time.Minute, nil, "/tmp/hearth", "doctor", "--role", "sandbox"); err != nil {
		t.Errorf("hearth doctor --role sandbox after deps.sh demo: %v\n%s", err, out)
	}
	out, err = r.run(20*time.Minute, env, "/src/examples/demo.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"The sandbox is up", "HEARTH-GUEST"} {
		if !strings.Contains(out, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, tailOf(out, 3000))
		}
	}

	// Again, interrupted while the sandbox comes up.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := r.command(ctx, env, "/src/examples/demo.sh")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pipe, _ := cmd.StderrPipe()
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var said strings.Builder
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		said.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "sandbox: starting") {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		}
	}
	cmd.Wait()
	for _, want := range []string{"taking down the sandbox an earlier run left", "taking the sandbox down"} {
		if !strings.Contains(said.String(), want) {
			t.Errorf("the interrupted demo did not say %q:\n%s", want, tailOf(said.String(), 3000))
		}
	}
	if _, err := os.Stat(r.path("/var/lib/hearth-sandbox-test/sandbox.json")); err == nil {
		t.Error("the interrupted demo left its sandbox's record")
	}
	if out, _ := exec.Command("ip", "-o", "link", "show").Output(); strings.Contains(string(out), prefix+"-") {
		t.Errorf("the interrupted demo left links named %s-…:\n%s", prefix, out)
	}
}

// TestFreshMachineTests: on a fresh root, `./test.sh` installs the test
// peers (interrupted once while dpkg unpacks, and run again), checks
// formatting and vet, and runs a few packages' tests that need the peers
// (QEMU and its firmware, qemu-img with the RBD driver, the TFTP
// clients), which pass there.
func TestFreshMachineTests(t *testing.T) {
	needFreshMachineTests(t)
	r := checkoutRoot(t)
	r.withAptCache(func() {
		depsInterruptedThenRerun(t, r, "test", []string{"qemu-system-x86", "etcd-server", "tftp-hpa", "atftp", "qemu-block-extra", "lintian"})
	})
	out, err := r.run(40*time.Minute, []string{"FUZZTIME=0"}, "/src/test.sh", "-run", "TestQEMU|TestIPXE|TestKernelFeatures|TestRealClients", "./doctor/", "./boot/tftp/")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"== gofmt, go vet", "== go test", "ok  \thearth.dev/hearth/doctor", "ok  \thearth.dev/hearth/boot/tftp"} {
		if !strings.Contains(out, want) {
			t.Errorf("test.sh's output lacks %q:\n%s", want, tailOf(out, 3000))
		}
	}
	if strings.Contains(out, "installing the Debian packages") {
		t.Errorf("test.sh installed packages again:\n%s", tailOf(out, 3000))
	}
}
