package agent

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/doctor"
	"hearth.dev/hearth/server/servertest"
)

func TestHostConditions(t *testing.T) {
	now := time.Now().UTC()
	f := func(check, cond string, st doctor.Status, fix string) doctor.Finding {
		return doctor.Finding{Check: check, Condition: cond, Status: st, Message: check + " found", Fix: fix}
	}
	tests := []struct {
		name     string
		findings []doctor.Finding
		want     []string // type=status/reason
		fatal    string
	}{
		{"all passed", []doctor.Finding{f("bridge", "KernelFeatures", doctor.OK, ""), f("vxlan", "KernelFeatures", doctor.OK, ""), f("qemu", "QEMU", doctor.OK, "")},
			[]string{"KernelFeatures=True/Passed", "QEMU=True/Passed"}, ""},
		{"a warning", []doctor.Finding{f("kvm", "KVM", doctor.Warn, "enable VT-x"), f("qemu", "QEMU", doctor.OK, "")},
			[]string{"KVM=False/Warning", "QEMU=True/Passed"}, ""},
		{"the worst of a kind wins", []doctor.Finding{f("bridge", "KernelFeatures", doctor.OK, ""), f("vxlan", "KernelFeatures", doctor.Fail, "modprobe vxlan"), f("tun", "KernelFeatures", doctor.Warn, "x")},
			[]string{"KernelFeatures=False/Failed"}, "vxlan: vxlan found (fix: modprobe vxlan)"},
		{"not checked", []doctor.Finding{f("network-namespaces", "KernelFeatures", doctor.Skipped, "run as root")},
			[]string{"KernelFeatures=Unknown/NotChecked"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conds, fatal := hostConditions(tt.findings, now)
			var got []string
			for _, c := range conds {
				got = append(got, fmt.Sprintf("%s=%s/%s", c.Type, c.Status, c.Reason))
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") || fatal != tt.fatal {
				t.Errorf("got %v, fatal %q; want %v, fatal %q", got, fatal, tt.want, tt.fatal)
			}
			for _, c := range conds {
				if c.Status == api.ConditionFalse && !strings.Contains(c.Message, "(fix: ") {
					t.Errorf("%s: message %q does not say what to do", c.Type, c.Message)
				}
			}
		})
	}
}

// TestHostChecksReported runs the agent's checks and heartbeat against a
// real server, first on a host whose QEMU is missing: the Host is
// NotReady with Ready=False/HostChecksFailed and a QEMU condition saying
// what to install, `get hosts` names the failed check, and the scheduler
// places nothing there. Then QEMU is "installed" (the checks look for the
// real one again) and the next check brings the host back to Ready
// without a restart.
func TestHostChecksReported(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86); .ci/run installs it")
	}
	env := servertest.Start(t)
	ctx, cancel := context.WithCancel(servertest.Ctx(t))
	defer cancel()
	hostClient := env.Host("h1")
	// Beat every 2 s.
	if _, err := env.Admin.Patch(ctx, "Host", "", "h1", map[string]any{"spec": map[string]any{"leaseSeconds": 8}}, false); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	a := &Agent{cfg: Config{Name: "h1", DataDir: dataDir, Listen: "127.0.0.1:9443"}, c: hostClient, beat: hostClient,
		checks: newHostChecks(Config{DataDir: dataDir})}
	a.checks.opts.QEMU = "hearth-no-such-qemu"
	a.checks.run(ctx)
	go a.heartbeat(ctx)

	host := func() *api.Host {
		t.Helper()
		o, err := env.Admin.Get(ctx, "Host", "", "h1")
		if err != nil {
			t.Fatal(err)
		}
		return o.(*api.Host)
	}
	servertest.Eventually(t, 20*time.Second, func() error {
		h := host()
		ready, qemu := h.Status.Condition("Ready"), h.Status.Condition("QEMU")
		if h.Status.Phase != api.HostNotReady || ready == nil || ready.Reason != api.HostChecksFailed || qemu == nil {
			return fmt.Errorf("phase %q, conditions %+v", h.Status.Phase, h.Status.Conditions)
		}
		if qemu.Status != api.ConditionFalse || qemu.Reason != api.HostCheckFailed || !strings.Contains(qemu.Message, "apt-get install qemu-system-x86") {
			return fmt.Errorf("QEMU condition %+v", qemu)
		}
		if !strings.Contains(ready.Message, "cannot run VMs") || !strings.Contains(ready.Message, "hearth-no-such-qemu") {
			return fmt.Errorf("Ready message %q", ready.Message)
		}
		return nil
	})
	kind, _ := api.KindByName("Host")
	if got := kind.Columns[0].Get(host()); !strings.HasPrefix(got, "NotReady (QEMU") {
		t.Errorf("STATUS column %q, want NotReady (QEMU…)", got)
	}

	// The scheduler places nothing on it.
	env.Tenant("t1")
	env.Needs("VirtualMachine", "t1")
	vm := servertest.Example("VirtualMachine", "t1").(*api.VirtualMachine)
	vm.Metadata.Name = "v1"
	vm.Spec.Host = ""
	if _, err := env.Admin.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 20*time.Second, func() error {
		o, err := env.Admin.Get(ctx, "VirtualMachine", "t1", "v1")
		if err != nil {
			return err
		}
		v := o.(*api.VirtualMachine)
		c := v.Status.Condition(api.ConditionScheduled)
		if v.Spec.Host != "" {
			t.Fatalf("placed on %s, a host that cannot run VMs", v.Spec.Host)
		}
		if c == nil || !strings.Contains(c.Message, "NotReady") {
			return fmt.Errorf("Scheduled condition %+v", c)
		}
		return nil
	})

	// QEMU appears: the next run of the checks brings the host back.
	a.checks.opts.QEMU = ""
	a.checks.run(ctx)
	servertest.Eventually(t, 20*time.Second, func() error {
		h := host()
		if h.Status.Phase != api.HostReady {
			return fmt.Errorf("phase %q, conditions %+v", h.Status.Phase, h.Status.Conditions)
		}
		if c := h.Status.Condition("QEMU"); c == nil || c.Status != api.ConditionTrue {
			return fmt.Errorf("QEMU condition %+v", c)
		}
		return nil
	})
}
