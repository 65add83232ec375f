package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/pki"
)

// fakeAgent stands in for the agent of the VMs of tenant: whenever a VM's
// spec is newer than its status, it writes the phase its power state asks
// for, as the agent does once it has acted. It stops when the returned
// function is called.
func fakeAgent(t *testing.T, tenant string) (stop func()) {
	t.Helper()
	c := adminClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			vms, _, err := c.List(ctx, "VirtualMachine", tenant, client.ListOptions{})
			if err == nil {
				for _, o := range vms {
					vm := o.(*api.VirtualMachine)
					if vm.Status.ObservedGeneration >= vm.Metadata.Generation {
						continue
					}
					_, _ = c.Patch(ctx, "VirtualMachine", tenant, vm.Metadata.Name, map[string]any{"status": map[string]any{
						"observedGeneration": vm.Metadata.Generation, "phase": phaseFor(vm.Spec.PowerState)}}, true)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() { cancel(); <-done }
}

// TestE2EVMWait: `hearth vm VERB --wait` returns once the agent has acted
// and the VM is in the phase asked for, and says where it is stuck when
// the timeout passes first.
func TestE2EVMWait(t *testing.T) {
	const tenant = "e2e-wait"
	hearth(t, `apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata: {name: e2e-wait}
---
apiVersion: hearth.dev/v1alpha1
kind: VirtualMachine
metadata: {name: a, tenant: e2e-wait}
spec: {host: elsewhere, boot: {from: kernel, kernel: {image: vmlinuz}}}
`, "apply", "-f", "-")
	stop := fakeAgent(t, tenant)
	out := hearth(t, "", "vm", "stop", "a", "--wait", "--timeout", "20s", "-t", tenant)
	if out != "virtualmachine/a stopped\nvirtualmachine/a is Stopped\n" {
		t.Errorf("vm stop --wait:\n%s", out)
	}
	out = hearth(t, "", "vm", "restart", "a", "--wait", "--timeout", "20s", "-t", tenant)
	wantContains(t, "vm restart --wait of a stopped VM", out, "virtualmachine/a restart requested", "virtualmachine/a is Stopped")
	out = hearth(t, "", "vm", "start", "a", "--wait", "-t", tenant)
	wantContains(t, "vm start --wait", out, "virtualmachine/a is Running")
	stop()

	// Nobody acts on it now.
	start := time.Now()
	out, errOut, err := hearthErr(t, "", "vm", "pause", "a", "--wait", "--timeout", "1s", "-t", tenant)
	if err == nil {
		t.Fatalf("vm pause --wait with nobody to pause it succeeded:\n%s", out)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("a 1s timeout took %s", took)
	}
	wantContains(t, "vm pause --wait timing out", errOut,
		"timed out waiting for virtualmachine/a to be Paused: it is Running, its agent not having seen the change yet")
}

// TestE2EVMStartHeld: `hearth vm start` of a VM its restart policy left
// stopped (spec.powerState Running already) asks for a restart, which is
// what starts it; of any other VM it only sets the power state.
func TestE2EVMStartHeld(t *testing.T) {
	const tenant = "e2e-held"
	hearth(t, `apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata: {name: e2e-held}
---
apiVersion: hearth.dev/v1alpha1
kind: VirtualMachine
metadata: {name: held, tenant: e2e-held}
spec: {host: elsewhere, restartPolicy: OnFailure, boot: {from: kernel, kernel: {image: vmlinuz}}}
---
apiVersion: hearth.dev/v1alpha1
kind: VirtualMachine
metadata: {name: off-always, tenant: e2e-held}
spec: {host: elsewhere, boot: {from: kernel, kernel: {image: vmlinuz}}}
`, "apply", "-f", "-")
	c := adminClient(t)
	ctx := context.Background()
	for _, name := range []string{"held", "off-always"} {
		// As the agent leaves a VM whose guest powered itself off.
		cond := map[string]any{"type": api.ConditionReady, "status": "False", "reason": api.ReasonGuestShutdown, "message": "the guest powered itself off"}
		if _, err := c.Patch(ctx, "VirtualMachine", tenant, name, map[string]any{"status": map[string]any{
			"phase": api.VMStopped, "conditions": []any{cond}}}, true); err != nil {
			t.Fatal(err)
		}
	}
	hearth(t, "", "vm", "start", "held", "off-always", "-t", tenant)
	for name, want := range map[string]bool{"held": true, "off-always": false} {
		o, err := c.Get(ctx, "VirtualMachine", tenant, name)
		if err != nil {
			t.Fatal(err)
		}
		if got := o.(*api.VirtualMachine).Spec.RestartRequested != nil; got != want {
			t.Errorf("%s: restartRequested set %v, want %v", name, got, want)
		}
	}
}

// TestE2ECompletesVMs: console and logs complete VM names, not kinds.
func TestE2ECompletesVMs(t *testing.T) {
	const tenant = "e2e-complete"
	hearth(t, `apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata: {name: e2e-complete}
---
apiVersion: hearth.dev/v1alpha1
kind: VirtualMachine
metadata: {name: web-1, tenant: e2e-complete}
spec: {host: elsewhere, boot: {from: kernel, kernel: {image: vmlinuz}}}
`, "apply", "-f", "-")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"console", ""}, "web-1\n"},
		{[]string{"console", "w"}, "web-1\n"},
		{[]string{"console", "vm/"}, "vm/web-1\n"},
		{[]string{"console", "network/"}, ""},
		{[]string{"console", "virtualmachine", ""}, "web-1\n"},
		{[]string{"console", "web-1", ""}, ""},
		{[]string{"logs", ""}, "web-1\n"},
	} {
		out := hearth(t, "", append([]string{"__complete", "-t", tenant}, c.args...)...)
		got, _, _ := strings.Cut(out, ":") // the directive follows the names
		if got != c.want {
			t.Errorf("completing %q: got %q, want %q", c.args, got, c.want)
		}
	}
}

func TestAgainKeepsWhereTo(t *testing.T) {
	for _, c := range []struct {
		g    globals
		want string
	}{
		{globals{}, "hearth console vm/web-1"},
		{globals{tenant: "lab"}, "hearth console vm/web-1 --tenant lab"},
		{globals{config: "/home/me/my lab.conf", context: "home", tenant: "lab"}, "hearth console vm/web-1 --config '/home/me/my lab.conf' --context home --tenant lab"},
	} {
		if got := c.g.again("console", "vm/web-1"); got != c.want {
			t.Errorf("again = %q, want %q", got, c.want)
		}
	}
}

// TestE2ELoginSaysWhatToDoAboutTheCA: logging in without the cluster's CA
// says to pass --ca-file and where the server keeps it, not just x509.
func TestE2ELoginSaysWhatToDoAboutTheCA(t *testing.T) {
	testServer(t)
	conf := filepath.Join(t.TempDir(), "c.conf")
	_, errOut, err := runCLI(context.Background(), t, "", "--config", conf, "login", theServer.URL(), "--token", "whatever")
	if err == nil {
		t.Fatal("login without the CA succeeded")
	}
	wantContains(t, "login without --ca-file", errOut, "pass --ca-file", "DATA-DIR/ca.crt", "x509")

	other, err := pki.NewCA("another-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := writeFile(t, t.TempDir(), "other.crt", string(other.CertPEM))
	_, errOut, err = runCLI(context.Background(), t, "", "--config", conf, "login", theServer.URL(), "--token", "whatever", "--ca-file", caFile)
	if err == nil {
		t.Fatal("login with another CA succeeded")
	}
	wantContains(t, "login with another cluster's CA", errOut, "not signed by the CA in "+caFile)
}

func TestExplainTLSHostname(t *testing.T) {
	err := explainTLS("https://hearth.lan:8443", "ca.crt", fmt.Errorf("GET: %w", x509.HostnameError{Host: "hearth.lan", Certificate: &x509.Certificate{}}))
	if !strings.Contains(err.Error(), "not valid for hearth.lan") || !strings.Contains(err.Error(), "--tls-san hearth.lan") {
		t.Errorf("got %v", err)
	}
	plain := errors.New("connection refused")
	if got := explainTLS("https://hearth.lan:8443", "", plain); got != plain {
		t.Errorf("other errors changed: %v", got)
	}
}

// TestE2EExplain: explain reads the served OpenAPI document: a kind and
// its fields, a field deep down with its doc comment, lists' elements,
// and a mistyped field named with the ones there are.
func TestE2EExplain(t *testing.T) {
	out := hearth(t, "", "explain", "vm")
	wantContains(t, "explain vm", out, "KIND:     VirtualMachine", "VERSION:  hearth.dev/v1alpha1", "DESCRIPTION:",
		"spec\t<VirtualMachineSpec>", "Spec is what the object should be", "status\t<VirtualMachineStatus>")
	out = hearth(t, "", "explain", "virtualmachine.spec.host")
	wantContains(t, "explain a field", out, "FIELD:    host <string>", "Host runs the VM. Empty until the scheduler places it")
	out = hearth(t, "", "explain", "vm.spec.nics")
	wantContains(t, "explain a list", out, "FIELD:    nics <[]VMNIC>", "VMNIC is a network interface of the VM.",
		"network\t<string>", "Network names a Network of the same tenant.")
	out = hearth(t, "", "explain", "subnet.spec.dhcp")
	wantContains(t, "explain a nested struct", out, "rangeStart\t<string>", "leaseSeconds\t<integer>")
	_, errOut, err := hearthErr(t, "", "explain", "vm.spec.nic")
	if err == nil {
		t.Fatal("explain of a missing field succeeded")
	}
	wantContains(t, "explain of a missing field", errOut, `VirtualMachine.spec has no field "nic"`, "nics")
}
