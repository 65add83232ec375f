package boot_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/boot"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/dhcp"
	"hearth.dev/hearth/dhcp/dhcptest"
	"hearth.dev/hearth/netns"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/serving"
)

// lab is a real control plane and a real boot service (boot.Run): on
// loopback with DHCP off, or in a network namespace serving DHCP to a
// client namespace (dhcptest), where the client plays the machine.
type lab struct {
	t    *testing.T
	env  *servertest.Env
	cfg  boot.Config
	net  *dhcptest.Net // nil on loopback
	base string        // the boot service's HTTP base URL
	// files is a directory the service serves file:// artifacts from
	// (its --allow-file-dir).
	files string

	stop func()
}

// newLab starts a control plane and a boot service with cfg filled in
// (server, join token, data dir, and the addresses on loopback).
func newLab(t *testing.T, n *dhcptest.Net, cfg boot.Config) *lab {
	t.Helper()
	env := servertest.Start(t)
	var jt api.TokenResponse
	if err := env.Admin.Do(servertest.Ctx(t), http.MethodPost, api.PathPrefix+"/jointokens", map[string]string{"ttl": "1h"}, &jt); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, env.Server.CAPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Server, cfg.JoinToken, cfg.CAFile, cfg.Name = env.Server.URL(), jt.Token, ca, "boot"
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	files := t.TempDir()
	cfg.AllowFileDirs = append(cfg.AllowFileDirs, files)
	if n == nil {
		cfg.Address = netip.MustParseAddr("127.0.0.1")
		cfg.HTTPListen = fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
		cfg.TFTPListen = fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
		cfg.DHCPMode = dhcp.ModeOff
	} else {
		cfg.Interface, cfg.Address = dhcptest.ServerLink, n.ServerAddr.Addr()
	}
	l := &lab{t: t, env: env, cfg: cfg, net: n, files: files}
	l.base = "http://" + cfg.HTTPListen
	if cfg.HTTPListen == "" {
		l.base = "http://" + netip.AddrPortFrom(cfg.Address, 8080).String()
	}
	l.start()
	return l
}

func freeUDPPort(t *testing.T) int {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// start runs the boot service until stop (or the end of the test), in the
// server namespace when there is one: its sockets on the provisioning
// side are opened there, its API connections (made from other threads)
// reach the server on loopback.
func (l *lab) start() {
	l.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		if l.net != nil {
			done <- netns.Do(l.net.Server, func() error { return boot.Run(ctx, l.cfg) })
			return
		}
		done <- boot.Run(ctx, l.cfg)
	}()
	var once sync.Once
	l.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					l.t.Errorf("boot service: %v", err)
				}
			case <-time.After(10 * time.Second):
				l.t.Error("the boot service did not stop within 10s")
			}
		})
	}
	l.t.Cleanup(l.stop)
	var side netip.Addr // the server's own side
	hc := l.client(side, true)
	servertest.Eventually(l.t, 20*time.Second, func() error {
		select {
		case err := <-done:
			l.t.Fatalf("boot service: %v", err)
		default:
		}
		resp, err := hc.Get(l.base + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
}

// client is an HTTP client whose connections come from address from (any
// address when invalid): in the client namespace, or, with serverSide, in
// the server's own.
func (l *lab) client(from netip.Addr, serverSide bool) *http.Client {
	var dial func(ctx context.Context, network, addr string) (net.Conn, error)
	switch {
	case l.net != nil && serverSide:
		dial = dhcptest.DialContext(l.net.Server, netip.Addr{})
	case l.net != nil:
		dial = dhcptest.DialContext(l.net.Client, from)
	default:
		d := net.Dialer{}
		if from.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: from.AsSlice()}
		}
		dial = d.DialContext
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

// request is one HTTP request as a client on the provisioning network
// makes it.
type request struct {
	from      netip.Addr
	method    string
	url       string // absolute, or a path under the boot service
	userAgent string
	body      string
	ctype     string
	bearer    string
}

func (l *lab) do(r request) (int, string) {
	l.t.Helper()
	u := r.url
	if strings.HasPrefix(u, "/") {
		u = l.base + u
	}
	if r.method == "" {
		r.method = http.MethodGet
	}
	req, err := http.NewRequest(r.method, u, strings.NewReader(r.body))
	if err != nil {
		l.t.Fatal(err)
	}
	if r.userAgent != "" {
		req.Header.Set("User-Agent", r.userAgent)
	}
	if r.ctype != "" {
		req.Header.Set("Content-Type", r.ctype)
	}
	if r.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	resp, err := l.client(r.from, false).Do(req)
	if err != nil {
		l.t.Fatalf("%s %s from %v: %v", r.method, u, r.from, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const ipxeAgent = "iPXE/1.21.1+ (g4e456)"

func (l *lab) machines() []*api.Machine {
	l.t.Helper()
	objs, _, err := l.env.Admin.List(servertest.Ctx(l.t), "Machine", "", client.ListOptions{})
	if err != nil {
		l.t.Fatal(err)
	}
	out := make([]*api.Machine, len(objs))
	for i, o := range objs {
		out[i] = o.(*api.Machine)
	}
	return out
}

func (l *lab) machine(name string) *api.Machine {
	l.t.Helper()
	o, err := l.env.Admin.Get(servertest.Ctx(l.t), "Machine", "", name)
	if err != nil {
		l.t.Fatal(err)
	}
	return o.(*api.Machine)
}

// events are the reasons and messages of the events about an object.
func (l *lab) events(kind, name string) []string {
	l.t.Helper()
	objs, _, err := l.env.Admin.List(servertest.Ctx(l.t), "Event", "", client.ListOptions{FieldSelector: "involvedObject.kind=" + kind + ",involvedObject.name=" + name})
	if err != nil {
		l.t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		e := o.(*api.Event)
		out = append(out, e.Spec.Type+"/"+e.Spec.Reason+": "+e.Spec.Message)
	}
	return out
}

func (l *lab) waitEvent(kind, name, substr string) {
	l.t.Helper()
	servertest.Eventually(l.t, 15*time.Second, func() error {
		evs := l.events(kind, name)
		for _, e := range evs {
			if strings.Contains(e, substr) {
				return nil
			}
		}
		return fmt.Errorf("no event on %s/%s with %q among %q", kind, name, substr, evs)
	})
}

func randomMAC() string {
	b := make([]byte, 6)
	rand.Read(b)
	b[0] = b[0]&^1 | 2 // unicast, locally administered
	return net.HardwareAddr(b).String()
}

// TestDiscoveryFlood: unauthenticated GET /boot.ipxe?mac=<random> requests
// (the audit's flood made a Machine each) create no Machine unless they
// come from iPXE, are rate-limited per source, and stop at
// --max-discovered with a Warning event on the machine waiting longest.
func TestDiscoveryFlood(t *testing.T) {
	const max = 10
	l := newLab(t, nil, boot.Config{MaxDiscovered: max})
	local := netip.MustParseAddr("127.0.0.1")

	// Not iPXE (a browser, curl, a script): never a machine.
	for i := range 300 {
		if code, body := l.do(request{from: local, url: "/boot.ipxe?mac=" + randomMAC()}); code != http.StatusForbidden {
			t.Fatalf("request %d from a plain HTTP client: %d %s, want 403", i, code, body)
		}
	}
	if ms := l.machines(); len(ms) != 0 {
		t.Fatalf("300 requests from a plain HTTP client made %d machines", len(ms))
	}

	// From iPXE at one address: a few, then 429.
	codes := map[int]int{}
	for range 300 {
		code, _ := l.do(request{from: local, url: "/boot.ipxe?mac=" + randomMAC(), userAgent: ipxeAgent})
		codes[code]++
	}
	if n := len(l.machines()); n == 0 || n > 4 || codes[http.StatusTooManyRequests] < 290 {
		t.Fatalf("300 iPXE requests from one address: %d machines, answers %v; want a few machines and the rest 429", n, codes)
	}

	// From many addresses: at most --max-discovered wait in Discovered.
	codes = map[int]int{}
	for i := range 300 {
		from := netip.AddrFrom4([4]byte{127, 0, 1, byte(1 + i%100)})
		code, _ := l.do(request{from: from, url: "/boot.ipxe?mac=" + randomMAC(), userAgent: ipxeAgent})
		codes[code]++
	}
	if n := len(l.machines()); n > max {
		t.Fatalf("the flood from 100 addresses made %d machines; --max-discovered is %d (answers %v)", n, max, codes)
	}
	if codes[http.StatusServiceUnavailable] == 0 {
		t.Errorf("no request was refused for the cap: answers %v", codes)
	}
	// A boot service records events only about Machines: the warning is
	// on the machine that has waited longest.
	oldest := l.machines()[0]
	for _, m := range l.machines() {
		if c, o := *m.Metadata.CreationTimestamp, *oldest.Metadata.CreationTimestamp; c.Before(o) || c.Equal(o) && m.Metadata.Name < oldest.Metadata.Name {
			oldest = m
		}
	}
	l.waitEvent("Machine", oldest.Metadata.Name, "--max-discovered 10")

	// A known MAC is still sent to its machine's script.
	m := l.machines()[0]
	code, body := l.do(request{from: local, url: "/boot.ipxe?mac=" + strings.ToUpper(m.Spec.MAC)})
	if code != http.StatusOK || !strings.Contains(body, "/machines/"+m.Metadata.Name+"/boot.ipxe") {
		t.Errorf("boot.ipxe for known MAC %s: %d %s", m.Spec.MAC, code, body)
	}
}

// ramroot is a stateless profile whose args carry the boot's files URL,
// report URL and token, and whose file carries the token and a password
// hash, as the documented preseed does. Its kernel and initrd are files
// in the service's allowed directory.
func (l *lab) ramroot(autoApprove bool) (*api.MachineProfile, string) {
	t, dir := l.t, l.files
	kernel := "kernel bytes " + rand.Text()
	if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte(kernel), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "initrd.img"), []byte("initrd bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &api.MachineProfile{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "MachineProfile"}, Metadata: api.ObjectMeta{Name: "ramroot"},
		Spec: api.MachineProfileSpec{AutoApprove: autoApprove,
			ProfileBoot: api.ProfileBoot{
				Kernel:  &api.BootFile{URL: "file://" + dir + "/vmlinuz"},
				Initrds: []api.BootFile{{URL: "file://" + dir + "/initrd.img"}},
				Args:    "files={{ .FilesURL }} hearth.report={{ .URLs.Report }} hearth.token={{ .Token }}",
			},
			Files: []api.ProfileFile{{Name: "user-data", Template: "#cloud-config\n# report token {{ .Token }}\npassword: $6$secret-hash\n"}},
		}}
	return p, kernel
}

func (l *lab) create(obj api.Object) {
	l.t.Helper()
	if _, err := l.env.Admin.Create(servertest.Ctx(l.t), obj); err != nil {
		l.t.Fatal(err)
	}
}

func (l *lab) patchSpec(name string, spec map[string]any) {
	l.t.Helper()
	if _, err := l.env.Admin.Patch(servertest.Ctx(l.t), "Machine", "", name, map[string]any{"spec": spec}, false); err != nil {
		l.t.Fatal(err)
	}
}

func newMachine(name, mac string, approved bool) *api.Machine {
	return &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"}, Metadata: api.ObjectMeta{Name: name},
		Spec: api.MachineSpec{MAC: mac, Architecture: api.ArchX86_64, Approved: approved}}
}

// bootScript is what a boot script says: its kernel and initrd URLs and
// its kernel args by name.
type bootScript struct {
	text    string
	kernel  string
	initrds []string
	args    map[string]string
}

func parseScript(text string) bootScript {
	s := bootScript{text: text, args: map[string]string{}}
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "kernel":
			s.kernel = f[1]
			for _, a := range f[2:] {
				k, v, _ := strings.Cut(a, "=")
				s.args[k] = v
			}
		case len(f) == 4 && f[0] == "initrd":
			s.initrds = append(s.initrds, f[3])
		}
	}
	return s
}

// script fetches a machine's script from an address until the service
// knows the machine.
func (l *lab) script(from netip.Addr, name string) bootScript {
	l.t.Helper()
	var s bootScript
	servertest.Eventually(l.t, 15*time.Second, func() error {
		code, body := l.do(request{from: from, url: "/machines/" + name + "/boot.ipxe", userAgent: ipxeAgent})
		if code != http.StatusOK {
			return fmt.Errorf("boot.ipxe of %s: %d %s", name, code, body)
		}
		s = parseScript(body)
		return nil
	})
	return s
}

// bootOf fetches the script until it boots the profile.
func (l *lab) bootOf(from netip.Addr, name string) bootScript {
	l.t.Helper()
	var s bootScript
	servertest.Eventually(l.t, 15*time.Second, func() error {
		if s = l.script(from, name); s.kernel == "" {
			return fmt.Errorf("machine %s is not booted its profile:\n%s", name, s.text)
		}
		return nil
	})
	return s
}

// TestFilesOnlyWithinAnApprovedBoot: a machine's rendered files (which
// carry its report token and here a password hash) are not served while
// it is unapproved, not outside the boot its script started, not to
// another address than the one that boot went to, and not once it is no
// longer approved.
func TestFilesOnlyWithinAnApprovedBoot(t *testing.T) {
	l := newLab(t, nil, boot.Config{})
	p, kernel := l.ramroot(false)
	l.create(p)
	l.create(newMachine("node1", "52:54:00:aa:bb:01", false))
	machine := netip.MustParseAddr("127.0.0.1")
	other := netip.MustParseAddr("127.0.0.2")

	// Unapproved: a wait script, and no files at the paths a client can
	// guess.
	s := l.script(machine, "node1")
	if s.kernel != "" || strings.Contains(s.text, "/boots/") {
		t.Fatalf("an unapproved machine was given a boot:\n%s", s.text)
	}
	for _, path := range []string{"/machines/node1/files/user-data", "/machines/node1/files/meta-data",
		"/machines/node1/boots/00000000000000000000000000000000/files/user-data"} {
		for _, from := range []netip.Addr{machine, other} {
			if code, body := l.do(request{from: from, url: path, userAgent: ipxeAgent}); code == http.StatusOK || strings.Contains(body, "secret-hash") {
				t.Errorf("GET %s of an unapproved machine from %s: %d %s", path, from, code, body)
			}
		}
	}

	// Approved: its boot's files go to the address its boot went to.
	l.patchSpec("node1", map[string]any{"approved": true})
	s = l.bootOf(machine, "node1")
	userData := s.args["files"] + "/user-data"
	code, body := l.do(request{from: machine, url: userData})
	if code != http.StatusOK || !strings.Contains(body, "report token "+s.args["hearth.token"]) {
		t.Fatalf("GET %s from the machine: %d %s", userData, code, body)
	}
	if code, body := l.do(request{from: machine, url: s.kernel}); code != http.StatusOK || body != kernel {
		t.Fatalf("GET kernel %s from the machine: %d %q", s.kernel, code, body)
	}
	// Not to another address: neither the files nor the kernel, nor a
	// script that would start a boot of its own.
	for _, u := range []string{userData, s.args["files"] + "/meta-data", s.kernel, s.initrds[0]} {
		if code, body := l.do(request{from: other, url: u}); code != http.StatusForbidden {
			t.Errorf("GET %s from another address: %d %s, want 403", u, code, body)
		}
	}
	l.waitEvent("Machine", "node1", "refused to 127.0.0.2")

	// No longer approved: no files, even within the boot.
	l.patchSpec("node1", map[string]any{"approved": false})
	servertest.Eventually(t, 15*time.Second, func() error {
		if code, body := l.do(request{from: machine, url: userData}); code != http.StatusForbidden {
			return fmt.Errorf("GET %s of a machine no longer approved: %d %s, want 403", userData, code, body)
		}
		return nil
	})

	// A new boot ends the last: its files are gone.
	l.patchSpec("node1", map[string]any{"approved": true})
	s2 := l.bootOf(machine, "node1")
	if s2.args["files"] == s.args["files"] || s2.args["hearth.token"] == s.args["hearth.token"] {
		t.Fatalf("a second boot has the first's URLs or token: %v", s2.args)
	}
	if code, body := l.do(request{from: machine, url: userData}); code != http.StatusNotFound {
		t.Errorf("GET %s of an ended boot: %d %s, want 404", userData, code, body)
	}
}

// report posts a report as the test guest does (a form, bearer token).
func (l *lab) report(from netip.Addr, url, token, hostKey string) (int, string) {
	l.t.Helper()
	return l.do(request{from: from, method: http.MethodPost, url: url, bearer: token, ctype: "application/x-www-form-urlencoded",
		body: "ip=10.9.9.9&hostname=h&ssh_host_key=" + strings.ReplaceAll(hostKey, " ", "+") + "&result=ok"})
}

const (
	hostKeyA = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE7Xr3CV9ZJ6aJqzCgH8vxqPqVJ8Qz7kT9Y9A1d7Xh3F root@a"
	hostKeyB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm3sWw5R4mP0pX1oV2n8K6t9YvJq3zLr4cB5dE7fH1a root@evil"
)

// TestReportBeforeItsBootIsRecorded: a system that reports before the
// service has written its boot's record (the record waits in the update
// queue behind other writes; here a busy neighbour's) keeps the host keys
// it reported: its own boot's record does not clear them afterwards, and
// the machine comes to Ready.
func TestReportBeforeItsBootIsRecorded(t *testing.T) {
	l := newLab(t, nil, boot.Config{})
	p, _ := l.ramroot(true)
	l.create(p)
	l.create(newMachine("node1", "52:54:00:aa:bb:11", false))
	l.create(newMachine("busy", "52:54:00:aa:bb:12", false))
	local := netip.MustParseAddr("127.0.0.1")
	l.bootOf(local, "busy")
	l.bootOf(local, "node1")

	// A neighbour that fetches its script over and over queues a write
	// or two each time, ahead of node1's next boot record.
	for range 300 {
		l.do(request{from: local, url: "/machines/busy/boot.ipxe", userAgent: ipxeAgent})
	}
	fetched := time.Now()
	s := l.bootOf(local, "node1")
	if code, body := l.report(local, s.args["hearth.report"], s.args["hearth.token"], hostKeyA); code != http.StatusOK {
		t.Fatalf("the report: %d %s", code, body)
	}
	servertest.Eventually(t, 60*time.Second, func() error {
		m := l.machine("node1")
		if m.Status.LastBoot == nil || m.Status.LastBoot.Before(fetched) {
			return fmt.Errorf("node1's boot is not recorded yet (lastBoot %v)", m.Status.LastBoot)
		}
		return nil
	})
	if m := l.machine("node1"); len(m.Status.SSHHostKeys) != 1 || m.Status.SSHHostKeys[0] != hostKeyA {
		t.Fatalf("node1's host keys after its boot was recorded: %q, want the key it reported", m.Status.SSHHostKeys)
	}
	servertest.Eventually(t, 15*time.Second, func() error {
		if m := l.machine("node1"); m.Status.Phase != api.MachineReady {
			return fmt.Errorf("node1 is %s, want Ready", m.Status.Phase)
		}
		return nil
	})
}

// TestReportsOncePerBoot: a report is taken with its boot's token, once;
// a replay, a report with another boot's token (an ended boot of the same
// machine, or another machine's) or naming another machine's boot is
// refused, leaves the machine's status as it was, and is a Warning on its
// timeline.
func TestReportsOncePerBoot(t *testing.T) {
	l := newLab(t, nil, boot.Config{})
	p, _ := l.ramroot(true)
	l.create(p)
	l.create(newMachine("node1", "52:54:00:aa:bb:01", false))
	l.create(newMachine("node2", "52:54:00:aa:bb:02", false))
	local := netip.MustParseAddr("127.0.0.1")

	first := l.bootOf(local, "node1")
	other := l.bootOf(local, "node2")
	if code, body := l.report(local, first.args["hearth.report"], first.args["hearth.token"], hostKeyA); code != http.StatusOK {
		t.Fatalf("the boot's own report: %d %s", code, body)
	}
	var reported *api.Machine
	servertest.Eventually(t, 15*time.Second, func() error {
		reported = l.machine("node1")
		if len(reported.Status.SSHHostKeys) != 1 || reported.Status.SSHHostKeys[0] != hostKeyA {
			return fmt.Errorf("status after the report: %s", servertest.JSON(reported.Status))
		}
		return nil
	})

	second := l.bootOf(local, "node1") // a new boot clears the stateless machine's host keys
	servertest.Eventually(t, 15*time.Second, func() error {
		if m := l.machine("node1"); len(m.Status.SSHHostKeys) != 0 {
			return fmt.Errorf("host keys after a new boot: %v", m.Status.SSHHostKeys)
		}
		return nil
	})
	before := l.machine("node1")
	refused := []struct{ name, url, token string }{
		{"an ended boot's report, replayed", first.args["hearth.report"], first.args["hearth.token"]},
		{"an ended boot's token on the current boot", second.args["hearth.report"], first.args["hearth.token"]},
		{"another machine's token on the current boot", second.args["hearth.report"], other.args["hearth.token"]},
		{"another machine's boot under this machine's name",
			strings.Replace(other.args["hearth.report"], "/machines/node2/", "/machines/node1/", 1), other.args["hearth.token"]},
		{"no token", second.args["hearth.report"], ""},
	}
	for _, r := range refused {
		if code, body := l.report(local, r.url, r.token, hostKeyB); code != http.StatusForbidden {
			t.Errorf("%s: %d %s, want 403", r.name, code, body)
		}
	}
	if code, body := l.report(local, second.args["hearth.report"], second.args["hearth.token"], hostKeyA); code != http.StatusOK {
		t.Fatalf("the current boot's report: %d %s", code, body)
	}
	if code, body := l.report(local, second.args["hearth.report"], second.args["hearth.token"], hostKeyB); code != http.StatusForbidden {
		t.Errorf("the current boot's report, replayed: %d %s, want 403", code, body)
	}
	time.Sleep(500 * time.Millisecond) // a report wrongly taken would have landed
	after := l.machine("node1")
	if len(after.Status.SSHHostKeys) != 1 || after.Status.SSHHostKeys[0] != hostKeyA {
		t.Errorf("host keys %v, want only the current boot's report's %q", after.Status.SSHHostKeys, hostKeyA)
	}
	if len(before.Status.SSHHostKeys) != 0 {
		t.Errorf("refused reports set host keys: %v", before.Status.SSHHostKeys)
	}
	if m := l.machine("node2"); len(m.Status.SSHHostKeys) != 0 {
		t.Errorf("node2's host keys were set by reports on node1: %v", m.Status.SSHHostKeys)
	}
	l.waitEvent("Machine", "node1", "Warning/ReportRefused: refused a report from 127.0.0.1: this boot's token was used already")
	l.waitEvent("Machine", "node1", "Warning/ReportRefused: refused a report from 127.0.0.1: its token is not this boot's")
	l.waitEvent("Machine", "node1", "Warning/ReportRefused: refused a report from 127.0.0.1: it names no current boot")
}

// TestArtifactsStreamAndStayInTheirDirectory: a kernel larger than the
// socket buffers, read by slow firmware at a pace, is served past the
// HTTP write timeout (each write within it), and a profile's file://
// artifact outside the service's --allow-file-dir is not served at all.
func TestArtifactsStreamAndStayInTheirDirectory(t *testing.T) {
	l := newLab(t, nil, boot.Config{HTTPLimits: serving.Limits{ReadHeaderTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second}})
	p, _ := l.ramroot(true)
	kernel := bytes.Repeat([]byte("vmlinuz!"), 4<<20) // 32MiB
	if err := os.WriteFile(filepath.Join(l.files, "vmlinuz"), kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	l.create(p)
	l.create(newMachine("node1", "52:54:00:aa:bb:01", false))
	local := netip.MustParseAddr("127.0.0.1")
	s := l.bootOf(local, "node1")

	resp, err := l.client(local, false).Get(s.kernel)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", s.kernel, resp.StatusCode, b)
	}
	start := time.Now()
	var got bytes.Buffer
	for {
		n, err := io.CopyN(&got, resp.Body, 1<<20)
		if err == io.EOF || n == 0 {
			break
		}
		if err != nil {
			t.Fatalf("a kernel read at a pace broke off after %d bytes and %s: %v", got.Len(), time.Since(start).Round(time.Millisecond), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !bytes.Equal(got.Bytes(), kernel) {
		t.Fatalf("a kernel read at a pace for %s: %d bytes, want %d", time.Since(start).Round(time.Millisecond), got.Len(), len(kernel))
	}

	// The same kernel in a directory the service was not given: refused.
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "vmlinuz"), []byte("kernel outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	p2, _ := l.ramroot(true)
	p2.Metadata.Name = "outside"
	p2.Spec.Kernel.URL = "file://" + outside + "/vmlinuz"
	l.create(p2)
	l.patchSpec("node1", map[string]any{"profile": "outside"})
	servertest.Eventually(t, 15*time.Second, func() error {
		s = l.bootOf(local, "node1") // ramroot's boot until the change arrives
		code, body := l.do(request{from: local, url: s.kernel})
		if code != http.StatusBadGateway || !strings.Contains(body, "allowed for file://") {
			return fmt.Errorf("GET %s outside --allow-file-dir: %d %q, want 502 saying it is not allowed", s.kernel, code, body)
		}
		return nil
	})
}

// TestBootsSurviveRestart: a boot issued before the service restarted
// still serves its files and takes its report; a boot the service lost
// (its record gone) is refused, saying the machine must boot again.
func TestBootsSurviveRestart(t *testing.T) {
	l := newLab(t, nil, boot.Config{})
	p, _ := l.ramroot(true)
	l.create(p)
	l.create(newMachine("node1", "52:54:00:aa:bb:01", false))
	local := netip.MustParseAddr("127.0.0.1")
	s := l.bootOf(local, "node1")

	l.stop()
	l.start()
	servertest.Eventually(t, 15*time.Second, func() error {
		if code, body := l.do(request{from: local, url: s.args["files"] + "/user-data"}); code != http.StatusOK {
			return fmt.Errorf("a file of the boot issued before the restart: %d %s", code, body)
		}
		return nil
	})
	if code, body := l.report(local, s.args["hearth.report"], s.args["hearth.token"], hostKeyA); code != http.StatusOK {
		t.Fatalf("the report of the boot issued before the restart: %d %s", code, body)
	}

	s = l.bootOf(local, "node1")
	l.stop()
	if err := os.Remove(filepath.Join(l.cfg.DataDir, "boots.json")); err != nil {
		t.Fatal(err)
	}
	l.start()
	servertest.Eventually(t, 15*time.Second, func() error {
		code, body := l.do(request{from: local, url: s.args["files"] + "/user-data"})
		if code != http.StatusNotFound || !strings.Contains(body, "network-boot it again") {
			return fmt.Errorf("a file of a boot the service lost: %d %s, want 404 saying to boot again", code, body)
		}
		return nil
	})
}

// dhcpClient speaks DHCP from the client namespace, with whatever
// hardware address it likes: a real machine, or a client forging one.
type dhcpClient struct {
	t    *testing.T
	conn *net.UDPConn
	xid  uint32
}

func newDHCPClient(t *testing.T, n *dhcptest.Net) *dhcpClient {
	conn, err := dhcptest.ListenUDP(n.Client, dhcptest.ClientLink, dhcp.ClientPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &dhcpClient{t: t, conn: conn, xid: 0x4000}
}

// packet is a client message; pxe adds what iPXE on BIOS sends (client
// architecture, PXEClient vendor class, user class iPXE).
func (c *dhcpClient) packet(typ dhcp.MessageType, mac string, pxe bool) *dhcp.Packet {
	hw, _ := net.ParseMAC(mac)
	c.xid++
	p := &dhcp.Packet{Op: dhcp.BootRequest, XID: c.xid, Flags: dhcp.FlagBroadcast}
	p.SetHardwareAddr(hw)
	p.SetMessageType(typ)
	if pxe {
		p.SetOption(dhcp.OptClientArch, []byte{0, 0})
		p.SetString(dhcp.OptVendorClass, "PXEClient:Arch:00000:UNDI:002001")
		p.SetString(dhcp.OptUserClass, "iPXE")
	}
	return p
}

// exchange broadcasts p and returns the answer, or nil if none comes.
func (c *dhcpClient) exchange(p *dhcp.Packet, wait time.Duration) *dhcp.Packet {
	c.t.Helper()
	to := netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), dhcp.ServerPort)
	if _, err := c.conn.WriteToUDPAddrPort(p.Marshal(), to); err != nil {
		c.t.Fatal(err)
	}
	buf := make([]byte, 4096)
	deadline := time.Now().Add(wait)
	for {
		c.conn.SetReadDeadline(deadline)
		n, _, err := c.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return nil
		}
		if r, err := dhcp.Parse(buf[:n]); err == nil && r.Op == dhcp.BootReply && r.XID == p.XID {
			return r
		}
	}
}

// getAddress is a machine's (or a forger's) DHCP for mac: in full mode
// DISCOVER and REQUEST to this service, which leases an address; in proxy
// mode a DISCOVER this service answers with boot information and the
// REQUEST for want that the network's own server (absent here) would
// answer, which this service only hears. It returns the address.
func (c *dhcpClient) getAddress(mode dhcp.Mode, mac string, want, server netip.Addr) netip.Addr {
	c.t.Helper()
	offer := c.exchange(c.packet(dhcp.MsgDiscover, mac, true), 2*time.Second)
	if offer == nil || offer.MessageType() != dhcp.MsgOffer {
		c.t.Fatalf("no OFFER for a PXE DISCOVER from %s: %v", mac, offer)
	}
	req := c.packet(dhcp.MsgRequest, mac, true)
	if mode == dhcp.ModeProxy {
		req.SetIPs(dhcp.OptRequestedIP, want)
		req.SetIPs(dhcp.OptServerID, netip.MustParseAddr("10.78.0.254")) // the home router
		if ack := c.exchange(req, 300*time.Millisecond); ack != nil {
			c.t.Fatalf("proxy mode answered a REQUEST to the home router: %v", ack)
		}
		return want
	}
	req.SetIPs(dhcp.OptRequestedIP, offer.YIAddr)
	req.SetIPs(dhcp.OptServerID, server)
	ack := c.exchange(req, 2*time.Second)
	if ack == nil || ack.MessageType() != dhcp.MsgAck {
		c.t.Fatalf("no ACK for %s's REQUEST of %s: %v", mac, offer.YIAddr, ack)
	}
	return ack.YIAddr
}

// TestBootOnTheLAN runs the boot service on a provisioning link in full
// and proxy DHCP mode, with a machine on the other end, and checks what
// the machine, and another client on the link, can and cannot do:
// ordinary DHCP clients and HTTP clients claiming MACs are not discovered;
// the machine's boot goes only to the address DHCP gave (or saw) for its
// MAC; a client that takes that address with another MAC, or forges DHCP
// in the machine's name, is refused.
func TestBootOnTheLAN(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make network namespaces; CI runs as root")
	}
	for _, mode := range []dhcp.Mode{dhcp.ModeFull, dhcp.ModeProxy} {
		t.Run(string(mode), func(t *testing.T) { testBootOnTheLAN(t, mode) })
	}
}

func testBootOnTheLAN(t *testing.T, mode dhcp.Mode) {
	const victim, attacker = "52:54:00:12:34:56", "52:54:00:66:66:66"
	victimHW, _ := net.ParseMAC(victim)
	server := netip.MustParsePrefix("10.78.0.1/24")
	n, err := dhcptest.New(server, victimHW)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	cfg := boot.Config{DHCPMode: mode, MetricsListen: netip.AddrPortFrom(server.Addr(), 9100).String()}
	if mode == dhcp.ModeFull {
		cfg.PoolStart, cfg.PoolEnd = netip.MustParseAddr("10.78.0.100"), netip.MustParseAddr("10.78.0.149")
	}
	l := newLab(t, n, cfg)
	c := newDHCPClient(t, n)

	// An operating system asking for an address is not a machine (full
	// mode leases it one; proxy mode does not answer it).
	plain := c.exchange(c.packet(dhcp.MsgDiscover, randomMAC(), false), time.Second)
	if mode == dhcp.ModeFull && (plain == nil || !plain.YIAddr.IsValid()) {
		t.Errorf("full mode offered no address to a plain DHCP client: %v", plain)
	}
	if mode == dhcp.ModeProxy && plain != nil {
		t.Errorf("proxy mode answered a plain DHCP client: %v", plain)
	}

	// The machine network-boots: it is discovered and gets its address.
	addr := c.getAddress(mode, victim, netip.MustParseAddr("10.78.0.60"), server.Addr())
	if err := n.AddAddr(n.Client, dhcptest.ClientLink, netip.PrefixFrom(addr, 24)); err != nil {
		t.Fatal(err)
	}
	name := "mac-525400123456"
	servertest.Eventually(t, 10*time.Second, func() error {
		ms := l.machines()
		if len(ms) != 1 || ms[0].Metadata.Name != name {
			var names []string
			for _, m := range ms {
				names = append(names, m.Metadata.Name)
			}
			return fmt.Errorf("machines %v, want only %s (the PXE client)", names, name)
		}
		return nil
	})

	// A client on the link claiming other MACs over HTTP discovers none.
	for range 50 {
		if code, body := l.do(request{from: addr, url: "/boot.ipxe?mac=" + randomMAC(), userAgent: ipxeAgent}); code != http.StatusForbidden {
			t.Fatalf("an HTTP discovery for another MAC from the machine's address: %d %s, want 403", code, body)
		}
	}
	if code, body := l.do(request{from: addr, url: "/boot.ipxe?mac=" + victim, userAgent: ipxeAgent}); code != http.StatusOK || !strings.Contains(body, "/machines/"+name+"/boot.ipxe") {
		t.Errorf("boot.ipxe?mac= of the machine from its address: %d %s", code, body)
	}
	if n := len(l.machines()); n != 1 {
		t.Fatalf("HTTP requests claiming MACs made %d machines", n)
	}

	// Its boot, files and kernel go to its address.
	p, kernel := l.ramroot(true)
	l.create(p)
	s := l.bootOf(addr, name)
	userData := s.args["files"] + "/user-data"
	if code, body := l.do(request{from: addr, url: userData}); code != http.StatusOK || !strings.Contains(body, "secret-hash") {
		t.Fatalf("GET %s from the machine: %d %s", userData, code, body)
	}
	if code, body := l.do(request{from: addr, url: s.kernel}); code != http.StatusOK || body != kernel {
		t.Fatalf("GET %s from the machine: %d %q", s.kernel, code, body)
	}

	// Another address on the link: no files, no boot of its own.
	other := netip.MustParseAddr("10.78.0.77")
	if err := n.AddAddr(n.Client, dhcptest.ClientLink, netip.PrefixFrom(other, 24)); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{userData, s.kernel} {
		if code, body := l.do(request{from: other, url: u}); code != http.StatusForbidden {
			t.Errorf("GET %s from another address: %d %s, want 403", u, code, body)
		}
	}
	if s := l.script(other, name); s.kernel != "" || !strings.Contains(s.text, "dhcp ||") {
		t.Errorf("the script from another address boots or does not renew:\n%s", s.text)
	}

	// Another client takes the machine's place on the link with its own
	// MAC, forges the machine's DHCP and uses the address it got: the
	// kernel resolves that address to the other MAC, so no boot and no
	// files.
	if err := n.SetMAC(n.Client, dhcptest.ClientLink, mustMAC(attacker)); err != nil {
		t.Fatal(err)
	}
	if err := n.FlushNeighbours(n.Server, dhcptest.ServerLink); err != nil {
		t.Fatal(err)
	}
	forged := c.getAddress(mode, victim, other, server.Addr())
	if forged != other {
		if err := n.AddAddr(n.Client, dhcptest.ClientLink, netip.PrefixFrom(forged, 24)); err != nil && !strings.Contains(err.Error(), "exists") {
			t.Fatal(err)
		}
	}
	if s := l.script(forged, name); s.kernel != "" {
		t.Errorf("a client with another MAC that forged the machine's DHCP got a boot:\n%s", s.text)
	}
	for _, u := range []string{userData, s.kernel} {
		if code, body := l.do(request{from: forged, url: u}); code != http.StatusForbidden {
			t.Errorf("GET %s by a client with another MAC at %s: %d %s, want 403", u, forged, code, body)
		}
	}
	l.waitEvent("Machine", name, "is at link-layer address "+attacker+", not "+victim)

	// The machine back on the link, with its DHCP: its boot works again.
	if err := n.SetMAC(n.Client, dhcptest.ClientLink, victimHW); err != nil {
		t.Fatal(err)
	}
	if err := n.FlushNeighbours(n.Server, dhcptest.ServerLink); err != nil {
		t.Fatal(err)
	}
	if back := c.getAddress(mode, victim, addr, server.Addr()); back != addr {
		t.Fatalf("the machine got %s back, want %s", back, addr)
	}
	s = l.bootOf(addr, name)
	if code, body := l.do(request{from: addr, url: s.args["files"] + "/user-data"}); code != http.StatusOK {
		t.Errorf("GET the file of the machine's new boot: %d %s", code, body)
	}

	// What it served is counted: the DISCOVERs and what was answered.
	answer := "OFFER"
	if mode == dhcp.ModeProxy {
		answer = "proxy"
	}
	m := l.metrics("http://" + cfg.MetricsListen + "/metrics")
	wantCounted(t, m, `hearth_boot_dhcp_messages_total{reply="`+answer+`",type="DISCOVER"}`)
	wantCounted(t, m, `hearth_boot_http_requests_total{`)
}

// metrics reads the boot service's metrics page from its own side.
func (l *lab) metrics(url string) string {
	l.t.Helper()
	resp, err := l.client(netip.Addr{}, true).Get(url)
	if err != nil {
		l.t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		l.t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}

// wantCounted fails unless a series starting with prefix has a value
// above zero on the metrics page m.
func wantCounted(t *testing.T, m, prefix string) {
	t.Helper()
	for _, line := range strings.Split(m, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil && v > 0 {
			return
		}
	}
	t.Errorf("no series %s… counted above zero in:\n%s", prefix, m)
}

// TestBootMetricsCountTFTP: a TFTP transfer by a real client (tftp-hpa)
// is counted, with its bytes.
func TestBootMetricsCountTFTP(t *testing.T) {
	bin, err := exec.LookPath("tftp")
	if err != nil {
		t.Skip("tftp not found: install Debian's tftp-hpa package (scripts/deps.sh test does)")
	}
	dir := t.TempDir()
	want := bytes.Repeat([]byte("iPXE"), 3000) // a few blocks
	if err := os.WriteFile(filepath.Join(dir, "ipxe.pxe"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	l := newLab(t, nil, boot.Config{IPXEDir: dir, MetricsListen: metrics})
	host, port, _ := net.SplitHostPort(l.cfg.TFTPListen)
	local := filepath.Join(t.TempDir(), "got")
	ctx, cancel := context.WithTimeout(servertest.Ctx(t), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bin, "-m", "binary", host, port, "-c", "get", "ipxe.pxe", local).CombinedOutput(); err != nil {
		t.Fatalf("tftp get: %v\n%s", err, out)
	}
	if got, err := os.ReadFile(local); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("tftp got %d bytes (%v), want %d", len(got), err, len(want))
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		m := l.metrics("http://" + metrics + "/metrics")
		for _, series := range []string{`hearth_boot_tftp_transfers_total{event="completed"} 1`, fmt.Sprintf("hearth_boot_tftp_sent_bytes_total %d", len(want))} {
			if !strings.Contains(m, series+"\n") {
				return fmt.Errorf("no %q in the metrics:\n%s", series, m)
			}
		}
		return nil
	})
}

func mustMAC(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

// TestDeclaredMachine: a Machine a person wrote before it ever
// network-booted (as `hearth sandbox machine add` does) is recognised by
// its MAC under its own name, not discovered again, and its first DHCP
// request records what its firmware said, as discovery would have.
func TestDeclaredMachine(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make network namespaces; CI runs as root")
	}
	const mac = "52:54:00:12:34:57"
	hw, _ := net.ParseMAC(mac)
	server := netip.MustParsePrefix("10.79.0.1/24")
	n, err := dhcptest.New(server, hw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	l := newLab(t, n, boot.Config{DHCPMode: dhcp.ModeFull,
		PoolStart: netip.MustParseAddr("10.79.0.100"), PoolEnd: netip.MustParseAddr("10.79.0.149")})
	// Declared while the service is down, so that it knows the machine
	// from its start.
	l.stop()
	l.create(&api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"},
		Metadata: api.ObjectMeta{Name: "node1"}, Spec: api.MachineSpec{MAC: mac, Architecture: api.ArchX86_64}})
	l.start()

	c := newDHCPClient(t, n)
	c.getAddress(dhcp.ModeFull, mac, netip.Addr{}, server.Addr())
	servertest.Eventually(t, 10*time.Second, func() error {
		m := l.machine("node1")
		if m.Status.Firmware != "bios" || m.Status.VendorClass != "PXEClient:Arch:00000:UNDI:002001" || len(m.Status.Addresses) == 0 {
			return fmt.Errorf("node1's status %s, want firmware bios, the vendor class and an address", servertest.JSON(m.Status))
		}
		return nil
	})
	if ms := l.machines(); len(ms) != 1 {
		t.Errorf("%d machines, want only node1: the DHCP of a declared machine discovered another", len(ms))
	}

	// Once recorded, they stay: a client on the link sending DHCP in
	// node1's name (UEFI firmware, another UUID and vendor class) does
	// not rewrite them, nor does an operating system's DHCP.
	forged := c.packet(dhcp.MsgDiscover, mac, false)
	forged.SetOption(dhcp.OptClientArch, []byte{0, 7})
	forged.SetString(dhcp.OptVendorClass, "PXEClient:Arch:00007:UNDI:003016")
	c.exchange(forged, 2*time.Second)
	c.exchange(c.packet(dhcp.MsgDiscover, mac, false), 2*time.Second)
	time.Sleep(time.Second)
	if m := l.machine("node1"); m.Status.VendorClass != "PXEClient:Arch:00000:UNDI:002001" || m.Status.Firmware != "bios" {
		t.Errorf("node1's firmware facts after a forged DHCP request and an OS's: %s", servertest.JSON(m.Status))
	}
	// The timeline says the booted system asked, not its firmware.
	l.waitEvent("Machine", "node1", "DHCP DISCOVER from the booted system")
}

// TestRevokedBootServiceStopsServing: a boot service whose credential is
// revoked while it runs stops serving (nothing is handed out on a
// credential that no longer holds) and waits for a new join token. Its
// metrics endpoint stays, so Prometheus sees it waiting rather than gone.
func TestRevokedBootServiceStopsServing(t *testing.T) {
	metrics := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	l := newLab(t, nil, boot.Config{CredentialCheck: 200 * time.Millisecond, MetricsListen: metrics})
	ctx := servertest.Ctx(t)
	hc := l.client(netip.Addr{}, true)
	var list struct{ Items []api.TokenRecord }
	if err := l.env.Admin.Do(ctx, http.MethodGet, api.PathPrefix+"/hosttokens", nil, &list); err != nil {
		t.Fatal(err)
	}
	var id string
	for _, r := range list.Items {
		if r.Kind == api.BootToken && r.Host == l.cfg.Name {
			id = r.ID
		}
	}
	if id == "" {
		t.Fatalf("no boot credential among %+v", list.Items)
	}
	if err := l.env.Admin.Do(ctx, http.MethodDelete, api.PathPrefix+"/hosttokens/"+id, nil, nil); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 45*time.Second, func() error {
		resp, err := hc.Get(l.base + "/healthz")
		if err != nil {
			return nil // no longer listening
		}
		resp.Body.Close()
		return fmt.Errorf("the boot service still answers %s after its credential was revoked", resp.Status)
	})
	resp, err := hc.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatalf("the metrics endpoint of a boot service waiting for a new join token: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "hearth_boot_http_requests_total") {
		t.Errorf("the metrics of a boot service waiting for a new join token: %s\n%.300s", resp.Status, body)
	}
}
