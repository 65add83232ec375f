package server_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

func haVM(name, tenant, host string, disks ...api.VMDisk) *api.VirtualMachine {
	return &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"}, Metadata: api.ObjectMeta{Name: name, Tenant: tenant},
		Spec: api.VirtualMachineSpec{Host: host, CPUs: 1, Memory: 256 << 20, Disks: disks, HighAvailability: true}}
}

// TestHighAvailabilityAdmission: a highly available VM whose disks are
// not all in shared pools, or that boots UEFI, is refused with the field
// in the way, and nothing is written; one on shared volumes (and a
// cdrom) is accepted, and so is switching it on later.
func TestHighAvailabilityAdmission(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	env.Tenant("a")
	alice := env.User("alice", "a", api.RoleTenantAdmin)
	if _, err := env.Admin.Create(ctx, storagePool("ceph", api.StoragePoolSpec{Driver: api.PoolDriverRBD,
		RBD: &api.RBDPoolSpec{Monitors: []string{"192.0.2.1"}, Pool: "vms"}})); err != nil {
		t.Fatal(err)
	}
	local := &api.Volume{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Volume"}, Metadata: api.ObjectMeta{Name: "local", Tenant: "a"},
		Spec: api.VolumeSpec{Size: 1 << 30}}
	for _, v := range []*api.Volume{poolVolume("shared", "a", "ceph"), local} {
		if _, err := alice.Create(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	uefi := haVM("uefi", "a", "", api.VMDisk{Volume: "shared"})
	uefi.Spec.Firmware = api.FirmwareUEFI
	for _, tt := range []struct {
		vm    *api.VirtualMachine
		field string // "" means accepted
		says  string
	}{
		{haVM("ok", "a", "", api.VMDisk{Volume: "shared"}, api.VMDisk{Image: "installer", Device: api.DeviceCDROM}), "", ""},
		{haVM("on-local", "a", "", api.VMDisk{Volume: "shared"}, api.VMDisk{Volume: "local"}), "spec.disks[1].volume", "volume local is local"},
		{haVM("on-image", "a", "", api.VMDisk{Image: "debian", Size: 1 << 30}), "spec.disks[0].image", "clone of image debian"},
		{haVM("no-volume", "a", "", api.VMDisk{Volume: "nope"}), "spec.disks[0].volume", "does not exist"},
		{uefi, "spec.highAvailability", "UEFI"},
	} {
		_, err := alice.Create(ctx, tt.vm)
		_, gerr := alice.Get(ctx, "VirtualMachine", "a", tt.vm.Metadata.Name)
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("%s: %v, want it accepted", tt.vm.Metadata.Name, err)
		case tt.field != "" && (err == nil || !strings.Contains(err.Error(), tt.field) || !strings.Contains(err.Error(), tt.says)):
			t.Errorf("%s: create = %v, want a 422 on %s saying %q", tt.vm.Metadata.Name, err, tt.field, tt.says)
		case tt.field != "" && !api.IsNotFound(gerr):
			t.Errorf("%s: refused, yet stored (get: %v)", tt.vm.Metadata.Name, gerr)
		}
	}
	// Switching it on for a VM on a local volume is refused the same way.
	plain := haVM("plain", "a", "", api.VMDisk{Volume: "local"})
	plain.Spec.HighAvailability = false
	if _, err := alice.Create(ctx, plain); err != nil {
		t.Fatal(err)
	}
	_, err := alice.Patch(ctx, "VirtualMachine", "a", "plain", map[string]any{"spec": map[string]any{"highAvailability": true}}, false)
	if err == nil || !strings.Contains(err.Error(), "spec.disks[0].volume") {
		t.Errorf("switching highAvailability on over a local volume: %v, want a 422 on spec.disks[0].volume", err)
	}
	got, _ := alice.Get(ctx, "VirtualMachine", "a", "plain")
	if got.(*api.VirtualMachine).Spec.HighAvailability {
		t.Errorf("refused, yet spec.highAvailability is stored")
	}
}

// fakePlug is a smart plug's webhook: off switches it off, and it says
// whether it is on. At the off call it records where the VM was bound
// then (vmHost), to prove the VM did not leave the host before the fence.
type fakePlug struct {
	mu     sync.Mutex
	on     bool
	offs   int
	vmHost string
	// bound reads the VM's spec.host at the off call.
	bound func() string
}

func (p *fakePlug) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch r.URL.Path {
	case "/off":
		p.on = false
		p.offs++
		if p.offs == 1 && p.bound != nil {
			p.vmHost = p.bound()
		}
	case "/on":
		p.on = true
	case "/status":
		if p.on {
			fmt.Fprint(w, `{"output": true}`)
		} else {
			fmt.Fprint(w, `{"output": false}`)
		}
	}
}

// readyHost makes host name Ready with room for VMs and keeps its lease
// until ctx ends.
func readyHost(t *testing.T, ctx context.Context, env *servertest.Env, name string, leaseSeconds int) *client.Client {
	t.Helper()
	h := env.Host(name)
	if _, err := env.Admin.Patch(ctx, "Host", "", name, map[string]any{"spec": map[string]any{"leaseSeconds": leaseSeconds}}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Patch(ctx, "Host", "", name, map[string]any{"status": map[string]any{"phase": api.HostReady, "lastHeartbeat": time.Now().UTC(),
		"cpus": 4, "memory": "8Gi"}}, true); err != nil {
		t.Fatal(err)
	}
	go func() {
		for ctx.Err() == nil {
			h.RenewHostLease(ctx, name)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	return h
}

// vmEvents are the reasons of the events about a VM, oldest first.
func vmEvents(t *testing.T, env *servertest.Env, tenant, name string) []string {
	t.Helper()
	evs, _, err := env.Admin.List(servertest.Ctx(t), "Event", tenant, client.ListOptions{FieldSelector: "involvedObject.kind=VirtualMachine,involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	// Oldest first: the recorder writes one object's events in order,
	// stamped to the millisecond.
	sort.SliceStable(evs, func(i, j int) bool {
		return evs[i].(*api.Event).Spec.FirstTimestamp.Before(*evs[j].(*api.Event).Spec.FirstTimestamp)
	})
	var out []string
	for _, e := range evs {
		ev := e.(*api.Event)
		for range max(ev.Spec.Count, 1) {
			out = append(out, ev.Spec.Reason)
		}
	}
	return out
}

// TestFailoverFencesThenRestarts: a highly available VM whose host's
// lease runs out is restarted on another host only after the Machine
// backing the lost host (named in its spec.machine) was switched off
// through its power driver: at the off call the VM was still bound to
// the lost host, the steps show as events in order, status.failover
// records the fence, and once the new host runs it the failover is
// closed with a Restarted event.
func TestFailoverFencesThenRestarts(t *testing.T) {
	env := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env.Tenant("a")
	if _, err := env.Admin.Create(ctx, storagePool("nas", api.StoragePoolSpec{Driver: api.PoolDriverNFS, NFS: &api.NFSPoolSpec{Server: "192.0.2.2", Export: "/srv"}})); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Admin.Create(ctx, poolVolume("root", "a", "nas")); err != nil {
		t.Fatal(err)
	}
	plug := &fakePlug{on: true}
	plug.bound = func() string {
		o, err := env.Admin.Get(context.Background(), "VirtualMachine", "a", "web")
		if err != nil {
			return "error: " + err.Error()
		}
		return o.(*api.VirtualMachine).Spec.Host
	}
	srv := httptest.NewServer(plug)
	defer srv.Close()
	if _, err := env.Admin.Create(ctx, &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"}, Metadata: api.ObjectMeta{Name: "rack-1"},
		Spec: api.MachineSpec{MAC: "52:54:00:aa:00:01", Power: api.MachinePower{Driver: api.PowerDriverWebhook, Webhook: &api.PowerWebhook{
			OnURL: srv.URL + "/on", OffURL: srv.URL + "/off", StatusURL: srv.URL + "/status", StatusOnMatch: `"output": true`}}}}); err != nil {
		t.Fatal(err)
	}
	h1ctx, stopH1 := context.WithCancel(ctx)
	readyHost(t, h1ctx, env, "h1", 5)
	if _, err := env.Admin.Patch(ctx, "Host", "", "h1", map[string]any{"spec": map[string]any{"machine": "rack-1"}}, false); err != nil {
		t.Fatal(err)
	}
	h2 := readyHost(t, ctx, env, "h2", 30)
	if _, err := env.Admin.Create(ctx, haVM("web", "a", "h1", api.VMDisk{Volume: "root"})); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 20*time.Second, func() error {
		vm := getVM(t, env, "a", "web")
		if c := vm.Status.Condition(api.ConditionHighAvailability); c == nil || c.Reason != api.ReasonHAProtected || !strings.Contains(c.Message, "rack-1") {
			return fmt.Errorf("HighAvailability condition %+v, want Protected naming machine rack-1", c)
		}
		return nil
	})

	stopH1() // h1 dies: no more lease renewals
	var vm *api.VirtualMachine
	servertest.Eventually(t, time.Minute, func() error {
		vm = getVM(t, env, "a", "web")
		if vm.Spec.Host != "h2" {
			return fmt.Errorf("VM on %q, HighAvailability %+v", vm.Spec.Host, vm.Status.Condition(api.ConditionHighAvailability))
		}
		return nil
	})
	plug.mu.Lock()
	offs, on, atOff := plug.offs, plug.on, plug.vmHost
	plug.mu.Unlock()
	if offs == 0 || on {
		t.Fatalf("the VM moved, but the plug of h1's machine was switched off %d times and is on=%v", offs, on)
	}
	if atOff != "h1" {
		t.Errorf("at the off call the VM was bound to %q, want h1: it left before the fence", atOff)
	}
	fo := vm.Status.Failover
	if fo == nil || fo.From != "h1" || fo.Machine != "rack-1" || fo.FencedAt == nil || fo.LostAt == nil {
		t.Fatalf("status.failover %+v, want from h1, machine rack-1, lostAt and fencedAt set", fo)
	}
	if vm.Status.Host != "" || vm.Status.PID != 0 {
		t.Errorf("status still names h1's process: host %q pid %d", vm.Status.Host, vm.Status.PID)
	}

	// h2's agent starts it.
	if _, err := h2.Patch(ctx, "VirtualMachine", "a", "web", map[string]any{"status": map[string]any{"phase": api.VMRunning, "host": "h2", "pid": 4242}}, true); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 20*time.Second, func() error {
		vm = getVM(t, env, "a", "web")
		c := vm.Status.Condition(api.ConditionHighAvailability)
		// Restarted, and then what the next loss would do: h2 has no
		// Machine to fence it by.
		if vm.Status.Failover != nil || c == nil || (c.Reason != api.ReasonRestarted && c.Reason != api.ReasonHAUnprotected) {
			return fmt.Errorf("failover %+v, HighAvailability %+v; want it closed", vm.Status.Failover, c)
		}
		return nil
	})
	var steps []string
	for _, r := range vmEvents(t, env, "a", "web") {
		switch r {
		case api.ReasonHostLost, api.ReasonFencing, api.ReasonFenced, api.ReasonRestarting, api.ReasonRestarted:
			steps = append(steps, r)
		}
	}
	want := []string{api.ReasonHostLost, api.ReasonFencing, api.ReasonFenced, api.ReasonRestarting, api.ReasonRestarted}
	if strings.Join(steps, ",") != strings.Join(want, ",") {
		t.Errorf("events %v, want %v", steps, want)
	}
}

func getVM(t *testing.T, env *servertest.Env, tenant, name string) *api.VirtualMachine {
	t.Helper()
	o, err := env.Admin.Get(servertest.Ctx(t), "VirtualMachine", tenant, name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*api.VirtualMachine)
}

// TestFailoverWithoutFence: a lost host that cannot be fenced (no
// Machine; a Machine without a power driver; one on Wake-on-LAN, which
// cannot switch off) keeps its highly available VM: it is not restarted
// elsewhere, its condition says NotFenced and why, with one event, and
// ahead of the loss the condition said Unprotected.
func TestFailoverWithoutFence(t *testing.T) {
	env := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env.Tenant("a")
	if _, err := env.Admin.Create(ctx, storagePool("nas", api.StoragePoolSpec{Driver: api.PoolDriverNFS, NFS: &api.NFSPoolSpec{Server: "192.0.2.2", Export: "/srv"}})); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Admin.Create(ctx, &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"}, Metadata: api.ObjectMeta{Name: "h-wol"},
		Spec: api.MachineSpec{MAC: "52:54:00:aa:00:02", Power: api.MachinePower{Driver: api.PowerDriverWOL}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Admin.Create(ctx, &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"}, Metadata: api.ObjectMeta{Name: "h-none"},
		Spec: api.MachineSpec{MAC: "52:54:00:aa:00:03"}}); err != nil {
		t.Fatal(err)
	}
	readyHost(t, ctx, env, "h-spare", 30)
	lose := map[string]context.CancelFunc{}
	cases := map[string]string{"h-bare": "no Machine backs host h-bare", "h-wol": "Wake-on-LAN", "h-none": "no power driver"}
	for host := range cases {
		hctx, stop := context.WithCancel(ctx)
		lose[host] = stop
		readyHost(t, hctx, env, host, 5)
		if _, err := env.Admin.Create(ctx, poolVolume("root-"+host, "a", "nas")); err != nil {
			t.Fatal(err)
		}
		if _, err := env.Admin.Create(ctx, haVM("vm-"+host, "a", host, api.VMDisk{Volume: "root-" + host})); err != nil {
			t.Fatal(err)
		}
	}
	for host, why := range cases {
		servertest.Eventually(t, 20*time.Second, func() error {
			c := getVM(t, env, "a", "vm-"+host).Status.Condition(api.ConditionHighAvailability)
			if c == nil || c.Reason != api.ReasonHAUnprotected || !strings.Contains(c.Message, why) {
				return fmt.Errorf("%s: HighAvailability %+v, want Unprotected saying %q", host, c, why)
			}
			return nil
		})
		lose[host]()
	}
	for host, why := range cases {
		servertest.Eventually(t, time.Minute, func() error {
			c := getVM(t, env, "a", "vm-"+host).Status.Condition(api.ConditionHighAvailability)
			if c == nil || c.Reason != api.ReasonNotFenced || !strings.Contains(c.Message, why) || !strings.Contains(c.Message, "NOT restarted") {
				return fmt.Errorf("%s: HighAvailability %+v, want NotFenced saying %q", host, c, why)
			}
			return nil
		})
	}
	// It stays so, saying it once.
	time.Sleep(5 * time.Second)
	for host := range cases {
		vm := getVM(t, env, "a", "vm-"+host)
		if vm.Spec.Host != host || vm.Status.Failover == nil || vm.Status.Failover.FencedAt != nil {
			t.Errorf("%s: VM bound to %q, failover %+v; want it left on %s, not fenced", host, vm.Spec.Host, vm.Status.Failover, host)
		}
		n := 0
		for _, r := range vmEvents(t, env, "a", "vm-"+host) {
			if r == api.ReasonNotFenced {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: %d NotFenced events, want 1", host, n)
		}
	}
}

// TestFailoverRecordIsTheServers: status.failover is what lets a VM
// leave its host without a live migration, so only the server's own
// controllers act on it: the VM's host cannot write it, and a person
// (even a cluster admin, who may write status) cannot unbind a VM by
// forging one.
func TestFailoverRecordIsTheServers(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	env.Tenant("a")
	h1 := env.Host("h1")
	if _, err := env.Admin.Create(ctx, storagePool("nas", api.StoragePoolSpec{Driver: api.PoolDriverNFS, NFS: &api.NFSPoolSpec{Server: "192.0.2.2", Export: "/srv"}})); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Admin.Create(ctx, poolVolume("root", "a", "nas")); err != nil {
		t.Fatal(err)
	}
	vm := haVM("web", "a", "h1", api.VMDisk{Volume: "root"})
	vm.Spec.NICs = nil
	if _, err := env.Admin.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	forged := map[string]any{"status": map[string]any{"failover": map[string]any{"from": "h1", "fencedAt": now, "machine": "x"}}}
	if _, err := h1.Patch(ctx, "VirtualMachine", "a", "web", forged, true); !api.IsForbidden(err) || !strings.Contains(err.Error(), "status.failover") {
		t.Errorf("host h1 writing status.failover: %v, want 403 naming status.failover", err)
	}
	if _, err := env.Admin.Patch(ctx, "VirtualMachine", "a", "web", forged, true); err != nil {
		t.Fatalf("a cluster admin writing status: %v", err)
	}
	_, err := env.Admin.Patch(ctx, "VirtualMachine", "a", "web", map[string]any{"spec": map[string]any{"host": ""}}, false)
	if err == nil || !strings.Contains(err.Error(), "spec.host") {
		t.Errorf("a cluster admin unbinding a VM with a forged failover: %v, want a 422 on spec.host", err)
	}
	if got := getVM(t, env, "a", "web"); got.Spec.Host != "h1" {
		t.Errorf("VM bound to %q, want h1", got.Spec.Host)
	}
}

// TestFailoverAtStorage: a highly available VM whose disks are all RBD
// volumes, on a host no power driver can switch off, is Protected by
// Ceph; when the host is lost it is unbound with the fence handed to
// the storage (status.failover.storage, for the next host's agent to
// do before it starts the VM), and never marked fenced by the server.
func TestFailoverAtStorage(t *testing.T) {
	env := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env.Tenant("a")
	if _, err := env.Admin.Create(ctx, storagePool("ceph", api.StoragePoolSpec{Driver: api.PoolDriverRBD,
		RBD: &api.RBDPoolSpec{Monitors: []string{"192.0.2.1"}, Pool: "vms"}})); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Admin.Create(ctx, poolVolume("root", "a", "ceph")); err != nil {
		t.Fatal(err)
	}
	h1ctx, stopH1 := context.WithCancel(ctx)
	readyHost(t, h1ctx, env, "h1", 5)
	readyHost(t, ctx, env, "h2", 30)
	if _, err := env.Admin.Create(ctx, haVM("db", "a", "h1", api.VMDisk{Volume: "root"})); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 20*time.Second, func() error {
		c := getVM(t, env, "a", "db").Status.Condition(api.ConditionHighAvailability)
		if c == nil || c.Reason != api.ReasonHAProtected || !strings.Contains(c.Message, "Ceph") {
			return fmt.Errorf("HighAvailability %+v, want Protected by Ceph", c)
		}
		return nil
	})
	stopH1()
	servertest.Eventually(t, time.Minute, func() error {
		vm := getVM(t, env, "a", "db")
		fo := vm.Status.Failover
		if vm.Spec.Host != "h2" || fo == nil || !fo.Storage || fo.FencedAt != nil || fo.From != "h1" {
			return fmt.Errorf("VM bound to %q, failover %+v; want it on h2, the fence handed to the storage", vm.Spec.Host, fo)
		}
		return nil
	})
	var steps []string
	for _, r := range vmEvents(t, env, "a", "db") {
		switch r {
		case api.ReasonHostLost, api.ReasonFencing, api.ReasonFenced, api.ReasonRestarting:
			steps = append(steps, r)
		}
	}
	if want := "HostLost,Fencing,Restarting"; strings.Join(steps, ",") != want {
		t.Errorf("events %v, want %s (Fenced is the new host's agent's)", steps, want)
	}
}
