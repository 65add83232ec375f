package agent_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/compute/computetest"
	"hearth.dev/hearth/server/servertest"
)

// TestAgentWithFakeDriver runs the real agent on compute/computetest, as
// `hearth bench scale` runs its simulated hosts, so it needs neither root
// nor QEMU: its console port is any free one (Listen port 0, which the
// Host's agentURL then names), a VM placed on it goes Running, one that
// crashes is started again, and its heartbeats renew the host's lease
// without writing the Host.
func TestAgentWithFakeDriver(t *testing.T) {
	env := servertest.Start(t)
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	drv := &computetest.Driver{}
	actx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(actx, agent.Config{Server: env.Server.URL(), JoinToken: env.JoinToken(api.TokenRequest{TTL: "1h"}).Token,
			CAFile: filepath.Join(env.DataDir, "ca.crt"), Name: "sim1", DataDir: t.TempDir(), Listen: "127.0.0.1:0",
			Driver: drv, Resync: 2 * time.Second})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	var host *api.Host
	servertest.Eventually(t, 30*time.Second, func() error {
		o, err := env.Admin.Get(ctx, "Host", "", "sim1")
		if err != nil {
			return err
		}
		host = o.(*api.Host)
		if host.Status.Phase != api.HostReady {
			return fmt.Errorf("host %s", host.Status.Phase)
		}
		return nil
	})
	if u := host.Status.AgentURL; u == "" || u == "https://127.0.0.1:0" || u == "https://127.0.0.1:9443" {
		t.Fatalf("agentURL %q does not name the port the console took", u)
	}
	if host.Status.KVM {
		t.Fatal("a simulated host reports KVM")
	}

	for _, kind := range []string{"Network", "Subnet"} {
		if _, err := env.Admin.Create(ctx, servertest.Example(kind, "lab")); err != nil {
			t.Fatal(err)
		}
	}
	vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
		Metadata: api.ObjectMeta{Name: "web", Tenant: "lab"},
		Spec: api.VirtualMachineSpec{CPUs: 1, Memory: 64 << 20, Host: "sim1", Boot: api.VMBoot{From: api.BootFromNetwork},
			NICs: []api.VMNIC{{Network: "net1"}}, CloudInit: api.CloudInit{Disabled: true}}}
	created, err := env.Admin.Create(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	uid := created.GetMetadata().UID
	running := func(restarts int) {
		t.Helper()
		servertest.Eventually(t, 20*time.Second, func() error {
			o, err := env.Admin.Get(ctx, "VirtualMachine", "lab", "web")
			if err != nil {
				return err
			}
			st := o.(*api.VirtualMachine).Status
			if st.Phase != api.VMRunning || st.RestartCount != restarts || st.FirstOutputAt == nil {
				return fmt.Errorf("phase %s, restarts %d", st.Phase, st.RestartCount)
			}
			return nil
		})
	}
	running(0)
	if starts := drv.CallsTo(computetest.OpStart, uid); len(starts) != 1 || starts[0].Spec.MemoryMiB != 64 || starts[0].Spec.Boot.From != api.BootFromNetwork {
		t.Fatalf("Start calls %+v", starts)
	}
	// A crash: the agent starts it again (restart policy Always).
	if !drv.Crash(uid) {
		t.Fatal("no VM to crash")
	}
	running(1)
	if n := len(drv.CallsTo(computetest.OpStart, uid)); n != 2 {
		t.Fatalf("%d starts after a crash, want 2", n)
	}
	if !slices.Contains(drv.Running(), uid) {
		t.Fatalf("the VM is not running on the driver: %v", drv.Running())
	}

	// Heartbeats renew the lease and write nothing: with a 5 s lease the
	// agent beats every 1.25 s, and the Host stays as it is and Ready.
	if _, err := env.Admin.Patch(ctx, "Host", "", "sim1", map[string]any{"spec": map[string]any{"leaseSeconds": 5}}, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(12 * time.Second) // the agent's beat in progress picks the new lease up
	before, err := env.Admin.Get(ctx, "Host", "", "sim1")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(8 * time.Second)
	after, err := env.Admin.Get(ctx, "Host", "", "sim1")
	if err != nil {
		t.Fatal(err)
	}
	if after.CommonStatus().Phase != api.HostReady {
		t.Fatalf("host %s with heartbeats on its lease", after.CommonStatus().Phase)
	}
	if a, b := after.GetMetadata().ResourceVersion, before.GetMetadata().ResourceVersion; a != b {
		t.Fatalf("the Host was written (%s → %s) while only heartbeats happened", b, a)
	}
}
