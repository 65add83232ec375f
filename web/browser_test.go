package web_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/testguest"
)

// chromium is Debian's browser, which playwright-core drives (the browser
// download of `playwright install` is not what the tests use).
const chromium = "/usr/bin/chromium"

// needBrowser skips when chromium or node is truly missing, and installs
// the test script's npm packages (playwright-core) from the lockfile when
// they are not there yet (./test.sh installs them first).
func needBrowser(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("chromium is not installed (%v): the dashboard's browser tests drive it (apt-get install chromium, or scripts/deps.sh test)", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the dashboard's browser tests run in it (apt-get install nodejs, or scripts/deps.sh test)")
	}
	dir, _ := filepath.Abs("browser")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Fatalf("playwright-core is not installed in %s and there is no npm to install it: install npm, then run npm ci there (./test.sh does)", dir)
		}
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
		}
	}
	return node
}

// userToken makes a user and returns a token of theirs.
func userToken(t *testing.T, env *servertest.Env, name, tenant string, role api.Role) string {
	t.Helper()
	env.User(name, tenant, role)
	var tok api.TokenResponse
	if err := env.Admin.Do(servertest.Ctx(t), http.MethodPost, api.PathPrefix+"/users/"+name+"/tokens", map[string]string{"description": "browser test"}, &tok); err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

func create(t *testing.T, env *servertest.Env, objs ...api.Object) {
	t.Helper()
	for _, o := range objs {
		if _, err := env.Admin.Create(servertest.Ctx(t), o); err != nil && !api.IsAlreadyExists(err) {
			t.Fatalf("creating %s: %v", api.Ref(o), err)
		}
	}
}

func meta(name, tenant string) api.ObjectMeta { return api.ObjectMeta{Name: name, Tenant: tenant} }

func tm(kind string) api.TypeMeta { return api.TypeMeta{APIVersion: api.APIVersion, Kind: kind} }

// TestBrowser runs the dashboard's browser tests (browser/ui.test.mjs) in
// Debian's chromium against a real server holding two tenants, a
// thousand VMs for the speed figures, a machine with a boot timeline, and
// (as root with QEMU) a real agent whose guest the console test talks to.
func TestBrowser(t *testing.T) {
	node := needBrowser(t)
	env := servertest.Start(t)
	ctx := servertest.Ctx(t)
	for _, tn := range []string{"red", "blue", "perf"} {
		env.Tenant(tn)
	}
	adminTok := userToken(t, env, "ada", "", api.RoleClusterAdmin)
	redTok := userToken(t, env, "rosa", "red", api.RoleTenantAdmin)
	blueTok := userToken(t, env, "bruno", "blue", api.RoleTenantAdmin)

	// Objects of both tenants, named so that a leak is easy to spot.
	// Red's network routes out through an external network; a VM on it
	// (placed on a host that never comes, so it only has its address and
	// the network a router there) has a floating IP: the topology's every
	// column.
	create(t, env,
		&api.ExternalNetwork{TypeMeta: tm("ExternalNetwork"), Metadata: meta("lab-ext", ""), Spec: api.ExternalNetworkSpec{CIDR: "198.51.100.0/24"}},
		&api.Network{TypeMeta: tm("Network"), Metadata: meta("red-net", "red"), Spec: api.NetworkSpec{ExternalNetwork: "lab-ext"}},
		&api.Subnet{TypeMeta: tm("Subnet"), Metadata: meta("red-sub", "red"), Spec: api.SubnetSpec{Network: "red-net", CIDR: "10.1.0.0/24"}},
		&api.VirtualMachine{TypeMeta: tm("VirtualMachine"), Metadata: meta("red-web", "red"),
			Spec: api.VirtualMachineSpec{Host: "red-host", PowerState: api.PowerStopped, CPUs: 1, Memory: 128 << 20, NICs: []api.VMNIC{{Network: "red-net"}},
				Boot: api.VMBoot{From: api.BootFromKernel, Kernel: &api.BootFile{URL: "http://boot.invalid/vmlinuz"}}}},
		&api.VirtualMachine{TypeMeta: tm("VirtualMachine"), Metadata: meta("red-spare", "red"),
			Spec: api.VirtualMachineSpec{Host: "red-host", PowerState: api.PowerStopped, CPUs: 1, Memory: 128 << 20,
				Boot: api.VMBoot{From: api.BootFromKernel, Kernel: &api.BootFile{URL: "http://boot.invalid/vmlinuz"}}}},
		&api.FloatingIP{TypeMeta: tm("FloatingIP"), Metadata: meta("red-fip", "red"), Spec: api.FloatingIPSpec{ExternalNetwork: "lab-ext", Target: &api.FloatingIPTarget{VM: "red-web"}}},
		&api.Network{TypeMeta: tm("Network"), Metadata: meta("blue-secret-net", "blue")},
		&api.Subnet{TypeMeta: tm("Subnet"), Metadata: meta("blue-secret-sub", "blue"), Spec: api.SubnetSpec{Network: "blue-secret-net", CIDR: "10.1.0.0/24"}},
		&api.SSHKey{TypeMeta: tm("SSHKey"), Metadata: meta("blue-secret-key", "blue"), Spec: api.SSHKeySpec{PublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIcCK0mzKXM8xFOUST82s2fipGzyqvJ2kSYsHaThbzek blue@x"}},
		&api.VirtualMachine{TypeMeta: tm("VirtualMachine"), Metadata: meta("blue-secret-vm", "blue"),
			Spec: api.VirtualMachineSpec{Host: "nowhere", PowerState: api.PowerStopped, CPUs: 1, Memory: 128 << 20, Boot: api.VMBoot{From: api.BootFromKernel, Kernel: &api.BootFile{URL: "http://boot.invalid/vmlinuz"}}}},
		&api.Machine{TypeMeta: tm("Machine"), Metadata: meta("node1", ""), Spec: api.MachineSpec{MAC: "52:54:00:aa:bb:01"}},
	)
	// The machine's boot timeline, as a boot service records it.
	boot := env.BootService("boot1")
	for i, step := range [][2]string{{"DHCPOffer", "offered 10.9.0.50 and undionly.kpxe"}, {"TFTPServed", "undionly.kpxe sent"}, {"HTTPScript", "iPXE script served: waiting for approval"}} {
		ev := &api.Event{TypeMeta: tm("Event"), Metadata: meta(fmt.Sprintf("node1-%d", i), ""),
			Spec: api.EventSpec{InvolvedObject: api.ObjectReference{Kind: "Machine", Name: "node1"}, Type: "Normal", Reason: step[0], Message: step[1], Source: "boot/boot1"}}
		if _, err := boot.Create(ctx, ev); err != nil {
			t.Fatalf("recording the machine's timeline: %v", err)
		}
	}
	seedPerf(t, env, 1000)

	// A smart plug on loopback, for the machine page's power buttons.
	var plugMu sync.Mutex
	plugOn := false
	plug := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plugMu.Lock()
		defer plugMu.Unlock()
		switch r.URL.Path {
		case "/on":
			plugOn = true
		case "/off":
			plugOn = false
		}
		fmt.Fprintf(w, `{"on": %v}`, plugOn)
	}))
	t.Cleanup(plug.Close)
	create(t, env, &api.Machine{TypeMeta: tm("Machine"), Metadata: meta("plug1", ""), Spec: api.MachineSpec{MAC: "52:54:00:aa:bb:02",
		Power: api.MachinePower{Driver: api.PowerDriverWebhook, Webhook: &api.PowerWebhook{OnURL: plug.URL + "/on", OffURL: plug.URL + "/off",
			StatusURL: plug.URL + "/status", StatusOnMatch: `"on": true`}}}})

	// As root with QEMU: a real host whose VMs boot the test guest, for
	// the console test.
	vars := map[string]string{}
	if _, err := exec.LookPath("qemu-system-x86_64"); err == nil && os.Geteuid() == 0 {
		guest, err := testguest.Build(ctx, "")
		if err != nil {
			t.Fatalf("building the test guest: %v", err)
		}
		// The test guest is an administrator's files: shared Images with
		// file:// URLs under a directory the agent allows.
		for name, path := range map[string]string{"testguest-kernel": guest.Kernel, "testguest-initrd": guest.Initrd} {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			create(t, env, &api.Image{TypeMeta: tm("Image"), Metadata: meta(name, ""),
				Spec: api.ImageSpec{Format: api.FormatRaw, Source: api.ImageSource{URL: "file://" + path, Checksum: "sha256:" + hex.EncodeToString(sum[:])}}})
		}
		startAgent(t, env, "h1", filepath.Dir(guest.Kernel), filepath.Dir(guest.Initrd))
		vars["HEARTH_KERNEL"] = "testguest-kernel"
		vars["HEARTH_INITRD"] = "testguest-initrd"
		vars["HEARTH_GUEST_MARKER"] = testguest.Marker
	} else {
		t.Log("no QEMU or not root: the browser tests skip the VM that boots and its console (CI runs them as root)")
	}

	out := t.TempDir()
	args := []string{"--test", "--test-concurrency=1", "--test-reporter=spec"}
	if p := os.Getenv("HEARTH_BROWSER_TESTS"); p != "" {
		args = append(args, "--test-name-pattern="+p) // a regexp of test names, to run some only
	}
	cmd := exec.Command(node, append(args, "ui.test.mjs")...)
	cmd.Dir = "browser"
	cmd.Env = append(os.Environ(), "HEARTH_URL="+env.Server.URL(), "HEARTH_ADMIN_TOKEN="+adminTok,
		"HEARTH_RED_TOKEN="+redTok, "HEARTH_BLUE_TOKEN="+blueTok, "HEARTH_CHROMIUM="+chromium, "HEARTH_OUT="+out)
	if os.Getenv("HEARTH_UPDATE_SCREENSHOTS") != "" {
		abs, _ := filepath.Abs(filepath.Join("..", "docs", "screenshots"))
		cmd.Env = append(cmd.Env, "HEARTH_SCREENSHOTS="+abs)
	}
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	outp, err := cmd.CombinedOutput()
	t.Logf("node --test ui.test.mjs:\n%s", outp)
	if err != nil {
		t.Fatalf("the browser tests failed: %v", err)
	}
	if data, err := os.ReadFile(filepath.Join(out, "figures.json")); err == nil {
		t.Logf("figures: %s", data)
		if p := os.Getenv("HEARTH_BENCH_OUT"); p != "" {
			os.WriteFile(p, data, 0o644)
		}
	}
}

// seedPerf makes n VMs in tenant perf (on a host that does not exist, so
// nothing runs or schedules them) for the speed figures.
func seedPerf(t *testing.T, env *servertest.Env, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errc := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			vm := &api.VirtualMachine{TypeMeta: tm("VirtualMachine"), Metadata: api.ObjectMeta{Name: fmt.Sprintf("vm-%04d", i), Tenant: "perf", Labels: map[string]string{"app": "bench"}},
				Spec: api.VirtualMachineSpec{Host: "nowhere", PowerState: api.PowerStopped, CPUs: 1, Memory: 128 << 20, Boot: api.VMBoot{From: api.BootFromKernel, Kernel: &api.BootFile{URL: "http://boot.invalid/vmlinuz"}}}}
			if _, err := env.Admin.Create(context.Background(), vm); err != nil && !api.IsAlreadyExists(err) {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("seeding VMs: %v", err)
	}
}

// startAgent runs a real agent for host name until the test ends, and
// waits for its Host to be Ready.
func startAgent(t *testing.T, env *servertest.Env, name string, allowFileDirs ...string) {
	t.Helper()
	jt := env.JoinToken(api.TokenRequest{TTL: "1h"})
	dir := t.TempDir()
	actx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg := agent.Config{Server: env.Server.URL(), JoinToken: jt.Token, CAFile: filepath.Join(env.DataDir, "ca.crt"),
		Name: name, DataDir: dir, Address: "127.0.0.1", Listen: fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t)),
		ShutdownTimeout: 5 * time.Second, Resync: 2 * time.Second, AllowFileDirs: allowFileDirs, StatsInterval: time.Second}
	go func() { done <- agent.Run(actx, cfg) }()
	t.Cleanup(func() {
		cancel()
		<-done
		pids, _ := filepath.Glob(filepath.Join(dir, "vms", "*", compute.PIDFile))
		for _, p := range pids {
			data, _ := os.ReadFile(p)
			var pid int
			fmt.Sscan(string(data), &pid)
			if pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	servertest.Eventually(t, 60*time.Second, func() error {
		h, err := env.Admin.Get(servertest.Ctx(t), "Host", "", name)
		if err != nil {
			return err
		}
		if h.CommonStatus().Phase != api.HostReady {
			return fmt.Errorf("host %s is %q", name, h.CommonStatus().Phase)
		}
		return nil
	})
}
