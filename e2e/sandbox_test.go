package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/sandbox"
	"hearth.dev/hearth/server/servertest"
)

// sandboxLab is a sandbox made by the real binary, and a way to run the
// CLI against it.
type sandboxLab struct {
	t      *testing.T
	dir    string
	prefix string
	config string
	// underlay and provisioning are the sandbox's networks, free /24s
	// reserved for it (reserveSubnets).
	underlay, provisioning netip.Prefix
}

func upSandbox(t *testing.T, hosts int) *sandboxLab {
	t.Helper()
	return upSandboxWith(t, hosts)
}

// upSandboxWith is upSandbox with more flags for `sandbox up`.
func upSandboxWith(t *testing.T, hosts int, flags ...string) *sandboxLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the sandbox needs root (network namespaces); CI runs as root")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed; .ci/run installs it")
	}
	s := &sandboxLab{t: t, dir: t.TempDir(), prefix: fmt.Sprintf("hst%d", os.Getpid()%10000)}
	s.up(append([]string{"--hosts", fmt.Sprint(hosts)}, flags...)...)
	return s
}

// up runs `sandbox up` with args on two free /24s of its own (underlay
// and provisioning network), and reads the config it prints.
func (s *sandboxLab) up(args ...string) string {
	t := s.t
	t.Helper()
	subnets, release := reserveSubnets(t, 2)
	s.underlay, s.provisioning = subnets[0], subnets[1]
	// Owned by this test process, so that should it be killed before its
	// cleanup (go test -timeout), the next sandbox up on this machine
	// removes the sandbox, and t.TempDir's directory with it.
	args = append([]string{"sandbox", "up", "--dir", s.dir, "--prefix", s.prefix,
		"--underlay-cidr", s.underlay.String(), "--provisioning-cidr", s.provisioning.String(),
		"--owner-pid", fmt.Sprint(os.Getpid()), "--owner-dir", filepath.Dir(s.dir)}, args...)
	out, err := exec.Command(hearthBin, args...).CombinedOutput()
	release()
	t.Cleanup(func() { s.down() })
	if err != nil {
		t.Fatalf("%s: %v\n%s\n%s", strings.Join(args[:2], " "), err, out, s.logs())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	cfg, ok := strings.CutPrefix(last, "export HEARTH_CONFIG=")
	if !ok {
		t.Fatalf("sandbox up's last line is %q, want export HEARTH_CONFIG=…", last)
	}
	s.config = cfg
	return string(out)
}

func (s *sandboxLab) logs() string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(s.dir, "*", "*.log"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if len(data) > 3000 {
			data = data[len(data)-3000:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", f, data)
	}
	return b.String()
}

func (s *sandboxLab) down() {
	// The logs first: down removes the directory it made.
	if s.t.Failed() {
		s.t.Logf("sandbox logs:\n%s", s.logs())
	}
	out, err := exec.Command(hearthBin, "sandbox", "down", "--dir", s.dir, "--prefix", s.prefix).CombinedOutput()
	if err != nil {
		s.t.Errorf("sandbox down: %v\n%s", err, out)
	}
}

// hearth runs the CLI against the sandbox.
func (s *sandboxLab) hearth(stdin string, args ...string) (string, error) {
	cmd := exec.Command(hearthBin, args...)
	cmd.Env = append(os.Environ(), "HEARTH_CONFIG="+s.config)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// in is the sandbox as seen by the subtest t: what fails in its helpers
// (must, getJSON, waitVM, …) fails t, not the test that made the
// sandbox (which a subtest must not stop from its own goroutine).
func (s *sandboxLab) in(t *testing.T) *sandboxLab {
	c := *s
	c.t = t
	return &c
}

func (s *sandboxLab) must(stdin string, args ...string) string {
	s.t.Helper()
	out, err := s.hearth(stdin, args...)
	if err != nil {
		s.t.Fatalf("hearth %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// vms lists the tenant's VMs through the CLI.
func (s *sandboxLab) vms(tenant, selector string) []api.VirtualMachine {
	s.t.Helper()
	args := []string{"get", "vm", "--tenant", tenant, "-o", "json"}
	if selector != "" {
		args = append(args, "-l", selector)
	}
	out := s.must("", args...)
	var list struct{ Items []api.VirtualMachine }
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		s.t.Fatalf("get vm -o json: %v\n%s", err, out)
	}
	return list.Items
}

func (s *sandboxLab) guestYAML(name, extra string) string {
	return fmt.Sprintf(`apiVersion: hearth.dev/v1alpha1
kind: VirtualMachine
metadata: {name: %s, tenant: demo}
spec:
  cpus: 1
  memory: 192Mi
  boot:
    from: kernel
    kernel: {image: testguest-kernel}
    initrd: {image: testguest-initrd}
    cmdline: console=ttyS0 panic=-1
%s`, name, extra)
}

// TestSandboxVMs: in a sandbox of two hosts, a VM applied with the CLI is
// scheduled and boots, and its console (through the API) shows its seed's
// hostname and SSH key; a set of four spreads 2+2 and scales to 1; quota
// and scheduling refusals say why.
func TestSandboxVMs(t *testing.T) {
	s := upSandbox(t, 2)
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIcCK0mzKXM8xFOUST82s2fipGzyqvJ2kSYsHaThbzek e2e@hearth"
	s.must(`apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata: {name: demo}
spec: {quota: {vcpus: 6, memory: 2Gi, vms: 6}}
---
apiVersion: hearth.dev/v1alpha1
kind: SSHKey
metadata: {name: k, tenant: demo}
spec: {publicKey: "`+key+`"}
`, "apply", "-f", "-")
	s.must(s.guestYAML("web-1", ""), "apply", "-f", "-")
	keyOnly := strings.Join(strings.Fields(key)[:2], " ")
	servertest.Eventually(t, 3*time.Minute, func() error {
		out, err := s.hearth("", "logs", "vm/web-1", "--tenant", "demo")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		for _, want := range []string{"HEARTH-GUEST hostname=web-1", "HEARTH-GUEST ssh-key=" + keyOnly} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("console lacks %q", want)
			}
		}
		return nil
	})
	vm := s.vms("demo", "")[0]
	if vm.Spec.Host == "" || vm.Status.Phase != api.VMRunning {
		t.Fatalf("web-1: host %q phase %q", vm.Spec.Host, vm.Status.Phase)
	}
	if out := s.must("", "describe", "vm", "web-1", "--tenant", "demo"); !strings.Contains(out, "Scheduled") {
		t.Errorf("describe shows no Scheduled event or condition:\n%s", out)
	}

	// A set of four spreads over the two hosts, two each.
	set := func(n int) string {
		return fmt.Sprintf(`apiVersion: hearth.dev/v1alpha1
kind: VirtualMachineSet
metadata: {name: workers, tenant: demo}
spec:
  replicas: %d
  selector: {app: worker}
  template:
    metadata: {labels: {app: worker}}
    spec:
      cpus: 1
      memory: 128Mi
      boot:
        from: kernel
        kernel: {image: testguest-kernel}
        initrd: {image: testguest-initrd}
        cmdline: console=ttyS0 panic=-1
`, n)
	}
	s.must(set(4), "apply", "-f", "-")
	servertest.Eventually(t, 4*time.Minute, func() error {
		perHost := map[string]int{}
		running := 0
		for _, v := range s.vms("demo", "app=worker") {
			perHost[v.Spec.Host]++
			if v.Status.Phase == api.VMRunning {
				running++
			}
		}
		if running != 4 || len(perHost) != 2 {
			return fmt.Errorf("%d of 4 running, per host %v", running, perHost)
		}
		for h, n := range perHost {
			if n != 2 {
				return fmt.Errorf("host %s has %d replicas, want 2+2: %v", h, n, perHost)
			}
		}
		return nil
	})
	s.must(set(1), "apply", "-f", "-")
	servertest.Eventually(t, 2*time.Minute, func() error {
		if n := len(s.vms("demo", "app=worker")); n != 1 {
			return fmt.Errorf("%d replicas, want 1", n)
		}
		return nil
	})

	// Refusals say why. Memory beyond the tenant's quota:
	out, err := s.hearth(strings.Replace(s.guestYAML("huge", ""), "192Mi", "4Gi", 1), "apply", "-f", "-")
	if err == nil || !strings.Contains(out, "quota exceeded for memory") {
		t.Fatalf("over-quota VM: err %v, output:\n%s", err, out)
	}
	// A host's file as a kernel, even one the agents allow for the
	// shared images:
	hostFile := strings.Replace(s.guestYAML("peek", ""), "{image: testguest-kernel}", `{url: "file://`+s.dir+`/server/admin.conf"}`, 1)
	out, err = s.hearth(hostFile, "apply", "-f", "-")
	if err == nil || !strings.Contains(out, "spec.boot.kernel.url") || !strings.Contains(out, "cannot boot a file of its host") {
		t.Fatalf("a VM booting a host file: err %v, output:\n%s", err, out)
	}
	// Within quota but larger than any host's free memory: pending, with
	// a host-by-host reason.
	s.must(`apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata: {name: big}
---
`+strings.Replace(strings.Replace(s.guestYAML("toobig", ""), "tenant: demo", "tenant: big", 1), "192Mi", "1000Gi", 1), "apply", "-f", "-")
	servertest.Eventually(t, 30*time.Second, func() error {
		out := s.must("", "describe", "vm", "toobig", "--tenant", "big")
		if !strings.Contains(out, "0/2 hosts: 2 lack memory (need 1000Gi") {
			return fmt.Errorf("describe lacks the reason:\n%s", out)
		}
		return nil
	})

	// Prometheus, with docs/prometheus's configuration and a viewer's
	// token made as docs/OBSERVABILITY.md says, scrapes the whole
	// sandbox (its server, both agents and the boot service, at the
	// addresses `sandbox status` prints), and a guest's figures move.
	st, err := sandbox.LoadState(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	status := s.must("", "sandbox", "status", "--dir", s.dir)
	lab := servertest.PrometheusLab{Server: strings.TrimPrefix(st.ServerURL, "https://"), CAFile: filepath.Join(s.dir, "server", "ca.crt")}
	for _, h := range st.Hosts {
		lab.Agents = append(lab.Agents, h.Metrics)
	}
	if st.Provisioning != nil {
		lab.Boot = st.Provisioning.BootMetrics
	}
	for _, addr := range append([]string{lab.Boot}, lab.Agents...) {
		if addr == "" || !strings.Contains(status, "http://"+addr+"/metrics") {
			t.Fatalf("sandbox status does not say where metrics are served (%q):\n%s", addr, status)
		}
	}
	s.must(`{"apiVersion": "hearth.dev/v1alpha1", "kind": "User", "metadata": {"name": "prometheus"}, "spec": {"role": "viewer"}}`, "apply", "-f", "-")
	lab.TokenFile = filepath.Join(t.TempDir(), "hearth-token")
	// The secret is stdout's one line (must returns stderr's note too).
	created := strings.Fields(s.must("", "token", "create", "--user", "prometheus", "--description", "prometheus"))
	if err := os.WriteFile(lab.TokenFile, []byte(created[0]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	prom := servertest.StartPrometheus(t, "../docs", lab)
	prom.WaitTargetsUp(t, time.Minute, map[string]int{"hearth-server": 1, "hearth-agent": len(st.Hosts), "hearth-boot": 1})
	prom.WaitPositive(t, time.Minute,
		`increase(hearth_vm_vcpu_seconds_total{tenant="demo",vm="web-1"}[10s])`,
		`hearth_host_memory_bytes{host="`+vm.Spec.Host+`"}`,
		`hearth_controller_reconciles_total{job="hearth-server",controller="scheduler"}`,
		`process_start_time_seconds{job="hearth-boot"}`)
}
