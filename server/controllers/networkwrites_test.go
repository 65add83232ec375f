package controllers_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/controllers"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/server/store"
)

// TestNetworkWritesSpaced: while VMs are created on one network in a
// burst, its status (which lists every port) is written at most once per
// PortWriteGap per port it lists, not once per VM, and still ends up
// listing every port exactly.
func TestNetworkWritesSpaced(t *testing.T) {
	const gap = 2 * time.Millisecond // per port: 80 ms at 40 ports
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&controllers.Networks{Client: env.Admin, Recorder: client.NewRecorder(env.Admin, "test/networks"),
			Resync: time.Hour, PortWriteGap: gap}).Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	})
	env.Tenant("lab")
	o := netObjs{t, env}
	o.create(
		&api.Host{TypeMeta: tmeta("Host"), Metadata: api.ObjectMeta{Name: "h1"}, Spec: api.HostSpec{Address: "10.99.0.1"}},
		&api.Network{TypeMeta: tmeta("Network"), Metadata: api.ObjectMeta{Name: "lan", Tenant: "lab"}},
		&api.Subnet{TypeMeta: tmeta("Subnet"), Metadata: api.ObjectMeta{Name: "lan-a", Tenant: "lab"}, Spec: api.SubnetSpec{Network: "lan", CIDR: "10.0.0.0/24"}},
	)
	ports := func() int { return len(o.get("Network", "lab", "lan").(*api.Network).Status.Ports) }
	waitPorts := func(want int) {
		t.Helper()
		servertest.Eventually(t, 30*time.Second, func() error {
			if got := ports(); got != want {
				return fmt.Errorf("network lists %d ports, want %d", got, want)
			}
			return nil
		})
	}
	burst := func(from, to int) {
		t.Helper()
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := from + w; i < to; i += 8 {
					if _, err := env.Admin.Create(servertest.Ctx(t), nvm("lab", fmt.Sprintf("vm%03d", i), "h1", api.VMNIC{Network: "lan"})); err != nil {
						t.Errorf("create vm%03d: %v", i, err)
					}
				}
			}()
		}
		wg.Wait()
	}
	k, _ := api.KindByName("Network")
	key := store.Key(k, "lab", "lan")
	version := func() int64 { // how many times etcd has written the network
		t.Helper()
		resp, err := env.Server.Etcd().Get(servertest.Ctx(t), key)
		if err != nil || len(resp.Kvs) == 0 {
			t.Fatalf("reading %s: %v", key, err)
		}
		return resp.Kvs[0].Version
	}

	burst(0, 40)
	waitPorts(40)
	before, start := version(), time.Now()
	burst(40, 200)
	waitPorts(200)
	writes, took := version()-before, time.Since(start)
	// Every write after the first waited at least 40 ports' gap.
	limit := int64(took/(40*gap)) + 2
	t.Logf("%d writes of the network's status for 160 VMs in %v (at most %d allowed)", writes, took, limit)
	if writes > limit {
		t.Errorf("%d writes of the network's status for 160 VMs in %v, want at most %d (one per %v)", writes, took, limit, 40*gap)
	}
}
