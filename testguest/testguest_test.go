package testguest_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth.dev/hearth/cloudinit"
	"hearth.dev/hearth/testguest"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFhearthTestGuestKey0000000000000000000000 test@hearth"

// TestBuildConcurrent builds into a fresh directory from several goroutines
// at once: one build, the same paths for everyone, nothing left behind.
func TestBuildConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads Debian packages; skipped with -short")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	const callers = 3
	guests := make([]testguest.Guest, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			guests[i], errs[i] = testguest.Build(ctx, dir)
		}()
	}
	wg.Wait()
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("Build #%d: %v", i, errs[i])
		}
		if guests[i] != guests[0] {
			t.Errorf("Build #%d = %+v, want %+v like #0", i, guests[i], guests[0])
		}
	}
	t.Logf("built in %v: %+v", time.Since(start).Round(time.Millisecond), guests[0])

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	if len(dirs) != 1 || filepath.Join(dir, dirs[0]) != filepath.Dir(guests[0].Kernel) {
		t.Errorf("cache holds directories %q, want only the guest's", dirs)
	}
	for _, p := range []string{guests[0].Kernel, guests[0].Initrd} {
		if st, err := os.Stat(p); err != nil || st.Size() < 1<<20 {
			t.Errorf("%s: %v (size %v), want a file of at least 1 MiB", p, err, st)
		}
	}
	var info struct {
		KernelVersion string
		Modules       []string
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(guests[0].Kernel), "guest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s, modules %s", info.KernelVersion, strings.Join(info.Modules, " "))

	start = time.Now()
	again, err := testguest.Build(ctx, dir)
	if err != nil || again != guests[0] {
		t.Errorf("Build again = %+v, %v; want %+v", again, err, guests[0])
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("a cached Build took %v, want it at once", d)
	}
}

// vm is a QEMU process running the test guest.
type vm struct {
	cmd     *exec.Cmd
	log     string // console log
	qmp     string // QMP socket
	started time.Time
	exited  chan struct{}
	err     error // valid after exited is closed
}

func bootGuest(t *testing.T, g testguest.Guest, seed cloudinit.Seed, devices ...string) *vm {
	t.Helper()
	return bootGuestCmdline(t, g, seed, "", devices...)
}

// bootGuestCmdline boots the guest with more kernel parameters.
func bootGuestCmdline(t *testing.T, g testguest.Guest, seed cloudinit.Seed, cmdline string, devices ...string) *vm {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not found: install Debian's qemu-system-x86 to boot the test guest")
	}
	// A short directory: the QMP socket's path must fit in sun_path.
	dir, err := os.MkdirTemp("", "tg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	iso := filepath.Join(dir, "seed.iso")
	if err := seed.WriteISO(iso); err != nil {
		t.Fatal(err)
	}
	v := &vm{log: filepath.Join(dir, "console.log"), qmp: filepath.Join(dir, "qmp.sock"), exited: make(chan struct{})}
	args := []string{
		"-accel", "tcg", "-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-serial", "file:" + v.log,
		"-qmp", "unix:" + v.qmp + ",server=on,wait=off",
		"-kernel", g.Kernel, "-initrd", g.Initrd,
		"-append", strings.TrimSpace("console=ttyS0 panic=-1 " + cmdline),
	}
	for _, d := range devices {
		args = append(args, strings.ReplaceAll(d, "SEED", iso))
	}
	v.cmd = exec.Command(qemu, args...)
	var stderr strings.Builder
	v.cmd.Stderr = &stderr
	v.started = time.Now()
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("start QEMU: %v", err)
	}
	go func() {
		v.err = v.cmd.Wait()
		if v.err != nil && stderr.Len() > 0 {
			v.err = fmt.Errorf("%w: %s", v.err, strings.TrimSpace(stderr.String()))
		}
		close(v.exited)
	}()
	t.Cleanup(func() {
		v.cmd.Process.Kill()
		<-v.exited
		if t.Failed() {
			b, _ := os.ReadFile(v.log)
			t.Logf("console log:\n%s", b)
		}
	})
	return v
}

// waitMarker polls the console log until the guest prints marker key,
// and returns all markers so far.
func (v *vm) waitMarker(t *testing.T, key string, timeout time.Duration) map[string][]string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(v.log)
		m := testguest.ParseMarkers(string(b))
		if _, ok := m[key]; ok {
			return m
		}
		select {
		case <-v.exited:
			t.Fatalf("QEMU exited before the guest printed %s %s: %v", testguest.Marker, key, v.err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s %s on the console after %v", testguest.Marker, key, timeout)
		}
	}
}

// qmpCommand runs one QMP command on a fresh connection.
func (v *vm) qmpCommand(t *testing.T, command string) {
	t.Helper()
	conn, err := net.DialTimeout("unix", v.qmp, 5*time.Second)
	if err != nil {
		t.Fatalf("QMP: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil { // greeting
		t.Fatalf("QMP greeting: %v", err)
	}
	for _, c := range []string{"qmp_capabilities", command} {
		if _, err := fmt.Fprintf(conn, `{"execute":%q}`+"\n", c); err != nil {
			t.Fatalf("QMP %s: %v", c, err)
		}
		for { // skip events until the command's answer
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("QMP %s: %v", c, err)
			}
			var reply struct {
				Return json.RawMessage
				Error  *struct{ Desc string }
			}
			if err := json.Unmarshal([]byte(line), &reply); err != nil {
				t.Fatalf("QMP %s: %v in %q", c, err, line)
			}
			if reply.Error != nil {
				t.Fatalf("QMP %s: %s", c, reply.Error.Desc)
			}
			if reply.Return != nil {
				break
			}
		}
	}
}

func buildGuest(t *testing.T) testguest.Guest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	g, err := testguest.Build(ctx, "") // the shared cache, as other packages' tests use it
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestBoot boots the guest the way the compute driver will (seed on
// virtio-blk, a virtio NIC on QEMU's user network, which stays inside
// QEMU), waits for every marker, then presses the ACPI power button and
// expects the guest to power off.
func TestBoot(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not found: install Debian's qemu-system-x86 to boot the test guest")
	}
	g := buildGuest(t)
	// A seed's hostname wins over the kernel command line's.
	v := bootGuestCmdline(t, g, cloudinit.Seed{InstanceID: "uid-guest-1", Hostname: "guest-1", SSHKeys: []string{testKey}},
		"hearth.hostname=not-this-one",
		"-drive", "file=SEED,if=virtio,format=raw,readonly=on",
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0")

	m := v.waitMarker(t, "ready", 90*time.Second)
	t.Logf("QEMU start to %s ready: %v", testguest.Marker, time.Since(v.started).Round(time.Millisecond))
	checks := []struct {
		key  string
		want []string
	}{
		{"booted", []string{""}},
		{"seed", []string{"/dev/vda"}},
		{"instance-id", []string{"uid-guest-1"}},
		{"hostname", []string{"guest-1"}},
		{"ssh-key", []string{testKey}},
		{"ip", []string{"10.0.2.15"}}, // QEMU's user network hands out this one first
		{"gateway", []string{"10.0.2.2"}},
	}
	for _, c := range checks {
		if got := m[c.key]; strings.Join(got, "\n") != strings.Join(c.want, "\n") {
			t.Errorf("marker %s = %q, want %q", c.key, got, c.want)
		}
	}
	for _, bad := range []string{"module-failed", "acpi", "dhcp", "report", "ssh-host-key"} {
		if got, ok := m[bad]; ok {
			t.Errorf("marker %s = %q, want none", bad, got)
		}
	}

	start := time.Now()
	v.qmpCommand(t, "system_powerdown")
	select {
	case <-v.exited:
		t.Logf("system_powerdown to QEMU exit: %v", time.Since(start).Round(time.Millisecond))
		if v.err != nil {
			t.Errorf("QEMU exited with %v after the guest powered off", v.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("QEMU still runs 30s after system_powerdown: the guest ignored the ACPI power button")
	}
	if m := v.waitMarker(t, "poweroff", time.Second); len(m["poweroff"]) != 1 {
		t.Errorf("marker poweroff = %q, want once", m["poweroff"])
	}
}

// TestBootCDROMScript boots with the seed on the pc machine's IDE cdrom
// (/dev/sr0), no NIC, and a user-data script.
func TestBootCDROMScript(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not found: install Debian's qemu-system-x86 to boot the test guest")
	}
	g := buildGuest(t)
	v := bootGuest(t, g, cloudinit.Seed{InstanceID: "uid-guest-2", Hostname: "guest-2", SSHKeys: []string{testKey},
		UserData: "#!/bin/sh\necho \"HEARTH-GUEST custom=$(hostname)\"\nexit 3\n"},
		"-machine", "pc", "-drive", "file=SEED,media=cdrom,if=ide,readonly=on")
	m := v.waitMarker(t, "ready", 90*time.Second)
	t.Logf("QEMU start to %s ready: %v", testguest.Marker, time.Since(v.started).Round(time.Millisecond))
	checks := []struct {
		key  string
		want []string
	}{
		{"seed", []string{"/dev/sr0"}},
		{"hostname", []string{"guest-2"}},
		{"ssh-key", []string{testKey}},
		{"custom", []string{"guest-2"}},
		{"script-exit", []string{"3"}},
	}
	for _, c := range checks {
		if got := m[c.key]; strings.Join(got, "\n") != strings.Join(c.want, "\n") {
			t.Errorf("marker %s = %q, want %q", c.key, got, c.want)
		}
	}
	for _, absent := range []string{"ip", "dhcp", "module-failed"} {
		if got, ok := m[absent]; ok {
			t.Errorf("marker %s = %q, want none without a NIC", absent, got)
		}
	}
}

// TestBootReport boots the guest as bare metal does, without a seed and
// with the hostname and a report URL on the kernel command line, on QEMU's
// user network, where 10.0.2.2 is the host's loopback: the guest's report
// reaches a server on 127.0.0.1.
func TestBootReport(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not found: install Debian's qemu-system-x86 to boot the test guest")
	}
	g := buildGuest(t)
	type report struct {
		method, path, auth, contentType string
		form                            url.Values
	}
	reports := make(chan report, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		reports <- report{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), r.PostForm}
		io.WriteString(w, "ok\n")
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port

	v := bootGuestCmdline(t, g, cloudinit.Seed{},
		fmt.Sprintf("hearth.report=http://10.0.2.2:%d/machines/metal-1/report hearth.token=secret-1 hearth.hostname=metal-1", port),
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:99")
	m := v.waitMarker(t, "ready", 120*time.Second)
	for _, c := range []struct {
		key  string
		want []string
	}{
		{"seed", []string{"none"}},
		{"hostname", []string{"metal-1"}},
		{"ip", []string{"10.0.2.15"}},
		{"report", []string{"ok"}},
	} {
		if got := m[c.key]; strings.Join(got, "\n") != strings.Join(c.want, "\n") {
			t.Errorf("marker %s = %q, want %q", c.key, got, c.want)
		}
	}

	var r report
	select {
	case r = <-reports:
	default:
		t.Fatal("the guest says report=ok, but no report arrived")
	}
	if r.method != http.MethodPost || r.path != "/machines/metal-1/report" {
		t.Errorf("report: %s %s, want POST /machines/metal-1/report", r.method, r.path)
	}
	if r.auth != "Bearer secret-1" {
		t.Errorf("Authorization = %q, want %q", r.auth, "Bearer secret-1")
	}
	if r.contentType != "application/x-www-form-urlencoded" {
		t.Errorf("Content-Type = %q, want a form", r.contentType)
	}
	for key, want := range map[string]string{"ip": "10.0.2.15", "hostname": "metal-1", "mac": "52:54:00:12:34:99", "result": "ok"} {
		if got := r.form[key]; len(got) != 1 || got[0] != want {
			t.Errorf("report field %s = %q, want %q", key, got, want)
		}
	}
	if _, ok := r.form["message"]; ok {
		t.Errorf("report field message = %q, want none with result ok", r.form["message"])
	}
	// The host key is an Ed25519 public key as an SSH server would show
	// it, and the one the console shows.
	key := r.form.Get("ssh_host_key")
	f := strings.Fields(key)
	if len(f) != 3 || f[0] != "ssh-ed25519" || f[2] != "root@metal-1" {
		t.Fatalf("ssh_host_key = %q, want \"ssh-ed25519 BASE64 root@metal-1\"", key)
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	wantHeader := "\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"
	if err != nil || len(blob) != len(wantHeader)+32 || string(blob[:len(wantHeader)]) != wantHeader {
		t.Errorf("ssh_host_key's key %q (%v): want an SSH wire-format Ed25519 public key", f[1], err)
	}
	if got := m["ssh-host-key"]; len(got) != 1 || got[0] != key {
		t.Errorf("marker ssh-host-key = %q, want the reported %q", got, key)
	}
	select {
	case extra := <-reports:
		t.Errorf("a second report: %+v", extra)
	default:
	}
}
