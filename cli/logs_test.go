package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/agent/console/consoletest"
	api "hearth.dev/hearth/api/v1alpha1"
)

// consoleVM makes a VM in tenant on a host whose agent serves its console
// log and console, and returns the stand-in for QEMU.
func consoleVM(t *testing.T, tenant, name, log string) *consoletest.VM {
	t.Helper()
	c := adminClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	agent := consoletest.StartAgent(t, theServer.CAPEM())
	host := tenant + "-h1"
	objs := []api.Object{
		&api.Tenant{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tenant"}, Metadata: api.ObjectMeta{Name: tenant}},
		&api.Host{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Host"}, Metadata: api.ObjectMeta{Name: host}},
		// The VM's NIC takes its address on net1.
		&api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"}, Metadata: api.ObjectMeta{Name: "net1", Tenant: tenant}},
		&api.Subnet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Subnet"}, Metadata: api.ObjectMeta{Name: "net1-a", Tenant: tenant},
			Spec: api.SubnetSpec{Network: "net1", CIDR: "10.0.0.0/24"}},
		&api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"}, Metadata: api.ObjectMeta{Name: name, Tenant: tenant},
			Spec: api.VirtualMachineSpec{Host: host, Boot: api.VMBoot{From: api.BootFromNetwork}, NICs: []api.VMNIC{{Network: "net1"}}}},
	}
	var uid string
	for _, o := range objs {
		created, err := c.Create(ctx, o)
		if api.IsAlreadyExists(err) { // the server is shared by -count runs
			m := o.GetMetadata()
			created, err = c.Get(ctx, o.GetTypeMeta().Kind, m.Tenant, m.Name)
		}
		if err != nil {
			t.Fatalf("creating %s: %v", api.Ref(o), err)
		}
		uid = created.GetMetadata().UID
	}
	if _, err := c.Patch(ctx, "Host", "", host, map[string]any{"status": map[string]any{"agentURL": agent.URL, "agentCertSHA256": agent.Fingerprint}}, true); err != nil {
		t.Fatal(err)
	}
	vm := consoletest.NewVM(t, log)
	agent.Add(uid, vm)
	return vm
}

func TestE2ELogsAndConsole(t *testing.T) {
	const tenant = "e2e-logs"
	testServer(t)
	consoleVM(t, tenant, "web-1", "Linux version 6.1\nlogin: ")

	out := hearth(t, "", "logs", "vm/web-1", "-t", tenant)
	if out != "Linux version 6.1\nlogin: " {
		t.Errorf("hearth logs vm/web-1 = %q, want the whole log", out)
	}
	out = hearth(t, "", "logs", "virtualmachine", "web-1", "--tail-bytes", "7", "-t", tenant)
	if out != "login: " {
		t.Errorf("hearth logs --tail-bytes 7 = %q, want the last 7 bytes", out)
	}
	for _, c := range []struct{ n, want string }{
		{"0", ""},
		{"1", "login: "},
		{"2", "Linux version 6.1\nlogin: "},
		{"5", "Linux version 6.1\nlogin: "},
	} {
		if out = hearth(t, "", "logs", "vm/web-1", "--tail", c.n, "-t", tenant); out != c.want {
			t.Errorf("hearth logs --tail %s = %q, want %q", c.n, out, c.want)
		}
	}
	if _, _, err := hearthErr(t, "", "logs", "vm/web-1", "--tail", "1", "--tail-bytes", "7", "-t", tenant); err == nil {
		t.Error("hearth logs --tail --tail-bytes: want a refusal")
	}
	if _, _, err := hearthErr(t, "", "logs", "network/net1", "-t", tenant); err == nil || !strings.Contains(err.Error(), "only VirtualMachines") {
		t.Errorf("hearth logs network/net1: %v, want a refusal", err)
	}

	// Without a terminal, console copies stdin in and output out until
	// interrupted.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		_, _, err := runCLIWith(ctx, &stdout, &stderr, "hello\n", "--config", testServer(t), "console", "vm/web-1", "-t", tenant)
		done <- err
	}()
	for !strings.Contains(stdout.String(), "hello\n") && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("hearth console: %v\n%s", err, stderr.String())
	}
	if got := stdout.String(); got != "hello\n" {
		t.Errorf("hearth console echoed %q, want %q", got, "hello\n")
	}
}
