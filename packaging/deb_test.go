package packaging

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/doctor"
)

// buildDeb builds the package with packaging/deb.sh into a directory of
// the test's and returns its path and version.
func buildDeb(t *testing.T, version string) (string, string) {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb is not installed (Debian's dpkg)")
	}
	out := t.TempDir()
	cmd := exec.Command("./packaging/deb.sh", out)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "HEARTH_VERSION="+version)
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("packaging/deb.sh: %v", err)
	}
	deb := strings.TrimSpace(string(b))
	if !filepath.IsAbs(deb) {
		deb = filepath.Join(repoRoot(t), deb)
	}
	return deb, version
}

// TestDebianPackage builds the package and checks what it holds (units,
// flags files, directories with their modes, dependencies), lints it
// (no errors), installs it with apt into a fresh Debian root that has
// nothing of Hearth's (so apt must pull every dependency it declares),
// and runs it there: hearth version; hearth doctor for the agent and the
// boot service, whose QEMU, firmware, block driver and iPXE checks pass
// only if the declared dependencies bring them; the server started as
// its unit starts it (the user hearth, the packaged data directory).
// Then it installs the package again (postinst is idempotent), upgrades
// to a newer build, and purges it.
func TestDebianPackage(t *testing.T) {
	needDebRoot(t)
	deb, version := buildDeb(t, "0.0.1~test1")

	// What the package holds, before anything installs it.
	contents, err := exec.Command("dpkg-deb", "--contents", deb).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`-rwxr-xr-x root/root .* ./usr/bin/hearth`,
		`-rw-r--r-- root/root .* ./lib/systemd/system/hearth-server.service`,
		`-rw-r--r-- root/root .* ./lib/systemd/system/hearth-agent.service`,
		`-rw-r--r-- root/root .* ./lib/systemd/system/hearth-boot.service`,
		`-rw-r--r-- root/root .* ./etc/hearth/server.env`,
		`-rw-r--r-- root/root .* ./etc/hearth/agent.env`,
		`drwx------ root/root .* ./var/lib/hearth/`,
		`drwx------ root/root .* ./var/lib/hearth-agent/`,
		`drwx------ root/root .* ./var/lib/hearth-boot/`,
	} {
		if !regexp.MustCompile(`(?m)^` + want + `$`).Match(contents) {
			t.Errorf("the package has no line like %q:\n%s", want, contents)
		}
	}
	field := func(name string) string {
		b, err := exec.Command("dpkg-deb", "--field", deb, name).Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	for _, dep := range []string{"qemu-system-x86", "qemu-utils", "qemu-block-extra", "ovmf", "ipxe-qemu", "ipxe", "nftables", "iproute2", "adduser"} {
		if !regexp.MustCompile(`(^|, )` + regexp.QuoteMeta(dep) + `($|,| )`).MatchString(field("Depends")) {
			t.Errorf("Depends %q lacks %s", field("Depends"), dep)
		}
	}
	if v := field("Version"); v != version {
		t.Errorf("Version %q, want %q", v, version)
	}
	unit, err := exec.Command("sh", "-c", "dpkg-deb --fsys-tarfile "+deb+" | tar -xOf - ./lib/systemd/system/hearth-agent.service").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^KillMode=process$`).Match(unit) {
		t.Errorf("the agent's unit lacks KillMode=process (VMs would die with the agent):\n%s", unit)
	}

	if _, err := exec.LookPath("lintian"); err != nil {
		t.Errorf("lintian is not installed (apt-get install lintian; scripts/deps.sh test installs it): the package is not linted")
	} else {
		out, err := exec.Command("lintian", "--fail-on", "error", "--tag-display-limit", "0", deb).CombinedOutput()
		if err != nil {
			t.Errorf("lintian finds errors: %v\n%s", err, out)
		} else {
			t.Logf("lintian (no errors):\n%s", out)
		}
	}

	// Install into a fresh Debian root.
	r := newDebRoot(t)
	if r.installed()["qemu-system-x86"] {
		t.Fatal("the fresh root already has QEMU: it would not show that the package pulls it in")
	}
	inRoot := "/tmp/" + filepath.Base(deb)
	if err := copyFile(deb, r.path(inRoot)); err != nil {
		t.Fatal(err)
	}
	apt := []string{"DEBIAN_FRONTEND=noninteractive"}
	r.withAptCache(func() {
		r.must(5*time.Minute, apt, "apt-get", "update", "-q")
		r.must(15*time.Minute, apt, "apt-get", "install", "-y", "-q", "--no-install-recommends", inRoot)
	})
	pkgs := r.installed()
	for _, p := range []string{"hearth", "qemu-system-x86", "qemu-block-extra", "ovmf", "ipxe", "nftables"} {
		if !pkgs[p] {
			t.Errorf("%s is not installed after apt-get install hearth", p)
		}
	}

	if out := r.must(time.Minute, nil, "hearth", "version", "--client"); !strings.Contains(out, version) {
		t.Errorf("hearth version says %q, want %s", out, version)
	}

	// Owners and modes, after postinst.
	for path, want := range map[string]string{
		"/var/lib/hearth":       "hearth:hearth 700",
		"/var/lib/hearth-agent": "root:root 700",
		"/var/lib/hearth-boot":  "root:root 700",
		"/etc/hearth":           "root:root 755",
	} {
		if got := strings.TrimSpace(r.must(time.Minute, nil, "stat", "-c", "%U:%G %a", path)); got != want {
			t.Errorf("%s is %s, want %s", path, got, want)
		}
	}
	// Nothing enabled or started.
	if links, _ := filepath.Glob(r.path("/etc/systemd/system/*/hearth-*")); len(links) > 0 {
		t.Errorf("installing enabled units: %v", links)
	}

	// hearth doctor in the root: what the package depends on is there.
	for _, role := range []string{"agent", "boot"} {
		out, _ := r.run(5*time.Minute, nil, "hearth", "doctor", "--role", role, "-o", "json")
		var rep doctor.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("hearth doctor --role %s -o json: %v\n%s", role, err, out)
		}
		for _, f := range rep.Findings[doctor.Role(role)] {
			t.Logf("%s: %-4s %s: %s", role, f.Status, f.Check, f.Message)
			switch f.Check {
			case "qemu", "firmware-bios", "firmware-uefi", "qemu-img", "rbd", "ipxe", "network-namespaces", "bridge", "vxlan", "tun", "nftables", "data-dir":
				if f.Status != doctor.OK {
					t.Errorf("doctor --role %s in the installed root: %s is %s: %s (fix: %s)", role, f.Check, f.Status, f.Message, f.Fix)
				}
			}
		}
	}
	if out, err := r.run(2*time.Minute, nil, "runuser", "-u", "hearth", "--", "hearth", "doctor", "--role", "server"); err != nil {
		// A failure is a port in use on this shared machine, or a real
		// problem: say which.
		if !strings.Contains(out, "port tcp/") {
			t.Errorf("hearth doctor --role server as hearth: %v\n%s", err, out)
		}
	}

	// The server as its unit starts it: as hearth, on /var/lib/hearth,
	// with the flags of /etc/hearth/server.env (and ports of the test's
	// own, which come later on the command line and win).
	serverUnit, err := os.ReadFile(r.path("/lib/systemd/system/hearth-server.service"))
	if err != nil {
		t.Fatal(err)
	}
	execStart := regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindSubmatch(serverUnit)
	if execStart == nil || !regexp.MustCompile(`(?m)^User=hearth$`).Match(serverUnit) {
		t.Fatalf("the server's unit has no ExecStart or runs as another user:\n%s", serverUnit)
	}
	api, peer := freePort(t), freePort(t)
	script := fmt.Sprintf(". /etc/hearth/server.env; exec %s --listen 127.0.0.1:%d --etcd-peer-url https://127.0.0.1:%d",
		string(execStart[1]), api, peer)
	srv := r.command(t.Context(), nil, "runuser", "-u", "hearth", "--", "sh", "-c", script)
	var srvLog syncBuf
	srv.Stdout, srv.Stderr = &srvLog, &srvLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			// runuser forwards the signal to the server.
			srv.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { srv.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				srv.Process.Kill()
			}
		}
	}
	defer stop()
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, err := os.Stat(r.path("/var/lib/hearth/admin.conf")); err == nil {
			break
		}
		if time.Now().After(deadline) || srv.ProcessState != nil {
			t.Fatalf("the packaged server did not start as hearth:\n%s", srvLog.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	out := r.must(time.Minute, nil, "env", "HEARTH_CONFIG=/var/lib/hearth/admin.conf", "hearth", "version")
	if !strings.Contains(out, "Server Version: "+version) {
		t.Errorf("hearth version against the packaged server: %s", out)
	}
	stop()
	if got := strings.TrimSpace(r.must(time.Minute, nil, "stat", "-c", "%U %a", "/var/lib/hearth/etcd")); got != "hearth 700" {
		t.Errorf("the server's etcd directory is %s, want hearth 700", got)
	}

	// Again, then newer, then gone.
	r.must(5*time.Minute, apt, "dpkg", "-i", inRoot)
	newer, _ := buildDeb(t, "0.0.1~test2")
	newerIn := "/tmp/" + filepath.Base(newer)
	if err := copyFile(newer, r.path(newerIn)); err != nil {
		t.Fatal(err)
	}
	r.must(5*time.Minute, apt, "dpkg", "-i", newerIn)
	if out := r.must(time.Minute, nil, "hearth", "version", "--client"); !strings.Contains(out, "0.0.1~test2") {
		t.Errorf("after the upgrade hearth version says %q", out)
	}
	if got := strings.TrimSpace(r.must(time.Minute, nil, "stat", "-c", "%U:%G %a", "/var/lib/hearth")); got != "hearth:hearth 700" {
		t.Errorf("after reinstall and upgrade /var/lib/hearth is %s", got)
	}
	r.must(5*time.Minute, apt, "apt-get", "purge", "-y", "-q", "hearth")
	if out, _ := r.run(time.Minute, nil, "dpkg-statoverride", "--list", "/var/lib/hearth"); strings.TrimSpace(out) != "" {
		t.Errorf("purge left the statoverride: %s", out)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
