package agent_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/compute/computetest"
	"hearth.dev/hearth/server/servertest"
)

// TestAgentOneConnection: an agent's informers (its watches) and its
// requests (status writes, lease renewals, lookups) share one connection
// to the API server, and the connections its join and its start-up host
// check used are closed once done. At a thousand hosts, a connection per watch and per request
// in flight (about eight per agent) filled the server's connection limit.
func TestAgentOneConnection(t *testing.T) {
	env := servertest.Start(t)
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	for _, kind := range []string{"Network", "Subnet"} {
		if _, err := env.Admin.Create(ctx, servertest.Example(kind, "lab")); err != nil {
			t.Fatal(err)
		}
	}
	join := env.JoinToken(api.TokenRequest{TTL: "1h"}).Token
	// The controllers' own client connects as they start: wait for the
	// count to settle before the agent comes.
	before := env.Server.Connections()
	for settled := 0; settled < 10; {
		time.Sleep(100 * time.Millisecond)
		if now := env.Server.Connections(); now != before {
			before, settled = now, 0
			continue
		}
		settled++
	}

	drv := &computetest.Driver{}
	runReadyAgent(t, env, env.Server.URL(), join, drv)
	// Three VMs at once, so the agent has several requests in flight.
	for i := range 3 {
		vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
			Metadata: api.ObjectMeta{Name: fmt.Sprintf("web-%d", i), Tenant: "lab"},
			Spec: api.VirtualMachineSpec{CPUs: 1, Memory: 64 << 20, Host: "sim1", Boot: api.VMBoot{From: api.BootFromNetwork},
				NICs: []api.VMNIC{{Network: "net1"}}, CloudInit: api.CloudInit{Disabled: true}}}
		if _, err := env.Admin.Create(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	servertest.Eventually(t, 30*time.Second, func() error {
		for i := range 3 {
			o, err := env.Admin.Get(ctx, "VirtualMachine", "lab", fmt.Sprintf("web-%d", i))
			if err != nil {
				return err
			}
			if ph := o.(*api.VirtualMachine).Status.Phase; ph != api.VMRunning {
				return fmt.Errorf("web-%d is %s", i, ph)
			}
		}
		return nil
	})
	time.Sleep(3 * time.Second) // a resync or two, and a lease renewal
	after := env.Server.Connections()
	// The join's connection, the host check's (doctor's: can the server
	// be reached, is the clock right), and the agent's own.
	if n := after.Accepted - before.Accepted; n != 3 {
		t.Errorf("the agent opened %d connections to join, watch and run three VMs, want 3 (one to join, one for the host check, one for the rest)", n)
	}
	servertest.Eventually(t, 5*time.Second, func() error {
		if n := env.Server.Connections().Open - before.Open; n != 1 {
			return fmt.Errorf("the agent holds %d connections open, want 1", n)
		}
		return nil
	})
}

// runReadyAgent runs an agent, host sim1, joining through server with
// join and running VMs with drv, and waits until its Host is Ready; it
// returns what stops it (which the test's end calls too).
func runReadyAgent(t *testing.T, env *servertest.Env, server, join string, drv *computetest.Driver) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, agent.Config{Server: server, JoinToken: join,
			CAFile: filepath.Join(env.DataDir, "ca.crt"), Name: "sim1", DataDir: t.TempDir(), Listen: "127.0.0.1:0",
			Driver: drv, Resync: 2 * time.Second})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop) // also if the agent never gets Ready
	servertest.Eventually(t, 30*time.Second, func() error {
		o, err := env.Admin.Get(servertest.Ctx(t), "Host", "", "sim1")
		if err != nil {
			return err
		}
		if ph := o.(*api.Host).Status.Phase; ph != api.HostReady {
			return fmt.Errorf("host %s", ph)
		}
		return nil
	})
	return stop
}
