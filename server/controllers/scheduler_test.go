package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/controllers"
	"hearth.dev/hearth/server/servertest"
)

// addHost joins a host as its agent would and reports it with the given
// phase and capacity. The long lease keeps host-liveness from turning it
// NotReady during the test.
func addHost(t testing.TB, env *servertest.Env, name, phase string, cpus int, mem api.Bytes, labels map[string]string) {
	t.Helper()
	ctx := servertest.Ctx(t)
	jt := env.JoinToken(api.TokenRequest{Labels: labels})
	jr, err := env.Join(jt.Token, api.JoinRequest{Host: name})
	if err != nil {
		t.Fatalf("joining host %s: %v", name, err)
	}
	h := env.ClientWithToken(jr.Token, "")
	// The lease is the administrator's to set, not the host's.
	if _, err := env.Admin.Patch(ctx, "Host", "", name, map[string]any{"spec": map[string]any{"leaseSeconds": 3600}}, false); err != nil {
		t.Fatalf("setting host %s's lease: %v", name, err)
	}
	st := map[string]any{"phase": phase, "cpus": cpus, "memory": mem, "lastHeartbeat": time.Now().UTC()}
	if _, err := h.Patch(ctx, "Host", "", name, map[string]any{"status": st}, true); err != nil {
		t.Fatalf("reporting host %s: %v", name, err)
	}
}

// newVM is a VM that needs nothing but a host: it boots a kernel.
func newVM(tenant, name string, cpus int, mem api.Bytes, labels map[string]string) *api.VirtualMachine {
	return &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
		Metadata: api.ObjectMeta{Name: name, Tenant: tenant, Labels: labels},
		Spec: api.VirtualMachineSpec{CPUs: cpus, Memory: mem,
			Boot: api.VMBoot{From: api.BootFromKernel, Kernel: &api.BootFile{Image: "vmlinuz"}}}}
}

func getVM(ctx context.Context, env *servertest.Env, tenant, name string) (*api.VirtualMachine, error) {
	o, err := env.Admin.Get(ctx, "VirtualMachine", tenant, name)
	if err != nil {
		return nil, err
	}
	return o.(*api.VirtualMachine), nil
}

// waitPlaced waits until the VM is bound and its status says so, and
// returns its host.
func waitPlaced(t *testing.T, env *servertest.Env, tenant, name string) string {
	t.Helper()
	ctx := servertest.Ctx(t)
	var host string
	servertest.Eventually(t, 10*time.Second, func() error {
		vm, err := getVM(ctx, env, tenant, name)
		if err != nil {
			return err
		}
		c := vm.Status.Condition(controllers.ConditionScheduled)
		if vm.Spec.Host == "" || c == nil || c.Status != api.ConditionTrue {
			return fmt.Errorf("VM %s: host %q, phase %q, Scheduled %+v", name, vm.Spec.Host, vm.Status.Phase, c)
		}
		if want := "placed on " + vm.Spec.Host; c.Message != want || vm.Status.Phase != api.VMScheduled {
			return fmt.Errorf("VM %s: Scheduled message %q, want %q; phase %q", name, c.Message, want, vm.Status.Phase)
		}
		host = vm.Spec.Host
		return nil
	})
	return host
}

// waitUnschedulable waits for the VM's Scheduled=False condition with
// exactly the message want, and a FailedScheduling event saying the same.
func waitUnschedulable(t *testing.T, env *servertest.Env, tenant, name, want string) {
	t.Helper()
	ctx := servertest.Ctx(t)
	servertest.Eventually(t, 10*time.Second, func() error {
		vm, err := getVM(ctx, env, tenant, name)
		if err != nil {
			return err
		}
		c := vm.Status.Condition(controllers.ConditionScheduled)
		if c == nil || c.Status != api.ConditionFalse || c.Reason != "Unschedulable" || c.Message != want {
			return fmt.Errorf("Scheduled condition %+v, want False/Unschedulable %q", c, want)
		}
		if vm.Spec.Host != "" || vm.Status.Phase != api.VMPending {
			return fmt.Errorf("host %q, phase %q; want none, Pending", vm.Spec.Host, vm.Status.Phase)
		}
		return hasEvent(ctx, env, tenant, name, api.EventWarning, "FailedScheduling", want)
	})
}

func hasEvent(ctx context.Context, env *servertest.Env, tenant, name, typ, reason, msg string) error {
	evs, _, err := env.Admin.List(ctx, "Event", tenant, client.ListOptions{FieldSelector: "involvedObject.kind=VirtualMachine,involvedObject.name=" + name})
	if err != nil {
		return err
	}
	for _, o := range evs {
		e := o.(*api.Event).Spec
		if e.Type == typ && e.Reason == reason && e.Message == msg {
			return nil
		}
	}
	return fmt.Errorf("no %s %s event %q about %s among %d", typ, reason, msg, name, len(evs))
}

func hostAllocation(ctx context.Context, env *servertest.Env, name string) (int, api.Bytes, error) {
	o, err := env.Admin.Get(ctx, "Host", "", name)
	if err != nil {
		return 0, 0, err
	}
	h := o.(*api.Host)
	return h.Status.AllocatedCPUs, h.Status.AllocatedMemory, nil
}

// TestSchedulerPlacesVM: a VM goes to the Ready host with the most free
// memory (a NotReady host, however big, is skipped), gets a Scheduled
// condition and event, and the host's allocation follows its VMs.
func TestSchedulerPlacesVM(t *testing.T) {
	env := servertest.Start(t)
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	addHost(t, env, "h1", api.HostReady, 4, 4<<30, nil)
	addHost(t, env, "h2", api.HostReady, 4, 8<<30, nil)
	addHost(t, env, "h3", api.HostNotReady, 64, 256<<30, nil)
	if _, err := env.Admin.Create(ctx, newVM("lab", "web", 2, 1<<30, nil)); err != nil {
		t.Fatal(err)
	}
	if host := waitPlaced(t, env, "lab", "web"); host != "h2" {
		t.Fatalf("placed on %s, want h2 (Ready, most free memory)", host)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		return hasEvent(ctx, env, "lab", "web", api.EventNormal, "Scheduled", "placed on h2")
	})
	servertest.Eventually(t, 10*time.Second, func() error {
		cpus, mem, err := hostAllocation(ctx, env, "h2")
		if err != nil {
			return err
		}
		if cpus != 2 || mem != 1<<30 {
			return fmt.Errorf("h2 allocated %d CPUs, %s; want 2, 1Gi", cpus, mem)
		}
		return nil
	})
	// The agent's own status fields survive the allocation patch.
	o, _ := env.Admin.Get(ctx, "Host", "", "h2")
	if h := o.(*api.Host); h.Status.Phase != api.HostReady || h.Status.CPUs != 4 || h.Status.Memory != 8<<30 {
		t.Fatalf("host status clobbered: %s", servertest.JSON(h.Status))
	}

	if _, err := env.Admin.Delete(ctx, "VirtualMachine", "lab", "web"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		cpus, mem, err := hostAllocation(ctx, env, "h2")
		if err != nil {
			return err
		}
		if cpus != 0 || mem != 0 {
			return fmt.Errorf("h2 still allocated %d CPUs, %s after its VM was deleted", cpus, mem)
		}
		return nil
	})
}

// TestSchedulerUnschedulable: a VM no host can take stays Pending with a
// host-by-host summary, and is placed as soon as a host that fits joins.
func TestSchedulerUnschedulable(t *testing.T) {
	env := servertest.Start(t)
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	addHost(t, env, "h1", api.HostReady, 4, 2<<30, nil)
	addHost(t, env, "h2", api.HostReady, 4, 1<<30, nil)
	addHost(t, env, "h3", api.HostNotReady, 4, 16<<30, nil)
	if _, err := env.Admin.Create(ctx, newVM("lab", "big", 1, 4<<30, nil)); err != nil {
		t.Fatal(err)
	}
	waitUnschedulable(t, env, "lab", "big", "0/3 hosts: 2 lack memory (need 4Gi, largest free 2Gi), 1 NotReady")
	// The counts change: the message follows (not at once: see
	// unschedulableRefresh), and is exact.
	addHost(t, env, "h5", api.HostReady, 4, 3<<30, nil)
	waitUnschedulable(t, env, "lab", "big", "0/4 hosts: 3 lack memory (need 4Gi, largest free 3Gi), 1 NotReady")

	addHost(t, env, "h4", api.HostReady, 4, 8<<30, nil)
	if host := waitPlaced(t, env, "lab", "big"); host != "h4" {
		t.Fatalf("placed on %s, want h4", host)
	}
}

// TestSchedulerNodeSelector: a VM goes only to hosts carrying its
// nodeSelector's labels, even when another host has more room.
func TestSchedulerNodeSelector(t *testing.T) {
	env := servertest.Start(t)
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	addHost(t, env, "h1", api.HostReady, 8, 32<<30, map[string]string{"disk": "hdd"})
	addHost(t, env, "h2", api.HostReady, 2, 4<<30, map[string]string{"disk": "ssd"})
	vm := newVM("lab", "db", 1, 1<<30, nil)
	vm.Spec.NodeSelector = api.LabelSelector{"disk": "ssd"}
	if _, err := env.Admin.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	if host := waitPlaced(t, env, "lab", "db"); host != "h2" {
		t.Fatalf("placed on %s, want h2 (disk=ssd)", host)
	}
	nvme := newVM("lab", "fast", 1, 1<<30, nil)
	nvme.Spec.NodeSelector = api.LabelSelector{"disk": "nvme"}
	if _, err := env.Admin.Create(ctx, nvme); err != nil {
		t.Fatal(err)
	}
	waitUnschedulable(t, env, "lab", "fast", "0/2 hosts: 2 do not match nodeSelector")
}

// TestSchedulerAntiAffinity: VMs that must not share a host are placed on
// different hosts even though one host has room for all, and one more
// than there are hosts stays Pending.
func TestSchedulerAntiAffinity(t *testing.T) {
	env := servertest.Start(t)
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	addHost(t, env, "h1", api.HostReady, 16, 64<<30, nil)
	addHost(t, env, "h2", api.HostReady, 4, 4<<30, nil)
	hosts := map[string]bool{}
	for _, name := range []string{"db-1", "db-2", "db-3"} {
		vm := newVM("lab", name, 1, 1<<30, map[string]string{"app": "db"})
		vm.Spec.AntiAffinity = []api.LabelSelector{{"app": "db"}}
		if _, err := env.Admin.Create(ctx, vm); err != nil {
			t.Fatal(err)
		}
		if name == "db-3" {
			waitUnschedulable(t, env, "lab", name, "0/2 hosts: 2 violate anti-affinity")
			continue
		}
		hosts[waitPlaced(t, env, "lab", name)] = true
	}
	if len(hosts) != 2 {
		t.Fatalf("db-1 and db-2 share a host: %v", hosts)
	}
	// Another tenant's VMs are not affected by lab's rule.
	env.Tenant("other")
	o := newVM("other", "db-1", 1, 1<<30, map[string]string{"app": "db"})
	if _, err := env.Admin.Create(ctx, o); err != nil {
		t.Fatal(err)
	}
	waitPlaced(t, env, "other", "db-1")
}

// TestSchedulerRacingCreates: VMs created all at once never push a host
// past its overcommit, and VMs that must not share a host never do, even
// though bindings are written by several workers at once; the ones left
// over say why.
func TestSchedulerRacingCreates(t *testing.T) {
	env := servertest.Start(t)
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	for _, h := range []string{"h1", "h2", "h3"} {
		addHost(t, env, h, api.HostReady, 4, 64<<30, nil)
		// Four VMs of one CPU each fit, no more.
		if _, err := env.Admin.Patch(ctx, "Host", "", h, map[string]any{"spec": map[string]any{"cpuOvercommit": 1}}, false); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 30 {
		wg.Go(func() {
			_, err := env.Admin.Create(ctx, newVM("lab", fmt.Sprintf("w%02d", i), 1, 1<<30, nil))
			errs <- err
		})
	}
	for i := range 6 {
		wg.Go(func() {
			vm := newVM("lab", fmt.Sprintf("db%d", i), 1, 1<<30, map[string]string{"app": "db"})
			vm.Spec.AntiAffinity = []api.LabelSelector{{"app": "db"}}
			_, err := env.Admin.Create(ctx, vm)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Twelve slots for 36 VMs: wait until every VM is either placed or
	// says why not, then count.
	var placed map[string][]string
	servertest.Eventually(t, 30*time.Second, func() error {
		objs, _, err := env.Admin.List(ctx, "VirtualMachine", "lab", client.ListOptions{})
		if err != nil {
			return err
		}
		placed = map[string][]string{}
		for _, o := range objs {
			vm := o.(*api.VirtualMachine)
			c := vm.Status.Condition(controllers.ConditionScheduled)
			if c == nil {
				return fmt.Errorf("VM %s not decided yet", vm.Metadata.Name)
			}
			if vm.Spec.Host == "" {
				if c.Status != api.ConditionFalse || !strings.HasPrefix(c.Message, "0/3 hosts: ") {
					return fmt.Errorf("VM %s pending with %+v", vm.Metadata.Name, c)
				}
				continue
			}
			placed[vm.Spec.Host] = append(placed[vm.Spec.Host], vm.Metadata.Name)
		}
		n := 0
		for _, vms := range placed {
			n += len(vms)
		}
		if n != 12 {
			return fmt.Errorf("%d VMs placed, want 12 (three hosts of four CPUs)", n)
		}
		return nil
	})
	for h, vms := range placed {
		if len(vms) > 4 {
			t.Errorf("host %s holds %d one-CPU VMs past its 4 CPUs: %v", h, len(vms), vms)
		}
		dbs := 0
		for _, name := range vms {
			if strings.HasPrefix(name, "db") {
				dbs++
			}
		}
		if dbs > 1 {
			t.Errorf("host %s holds %d VMs that must not share a host: %v", h, dbs, vms)
		}
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		for h, vms := range placed {
			cpus, _, err := hostAllocation(ctx, env, h)
			if err != nil {
				return err
			}
			if cpus != len(vms) {
				return fmt.Errorf("host %s allocated %d CPUs, holds %d VMs", h, cpus, len(vms))
			}
		}
		return nil
	})
}

// TestSchedulerBatchMembersStandAlone: of a batch of bindings the
// scheduler writes, one whose VM changed after the decision fails alone,
// as a Conflict (so it is decided again on the VM as it is now), without
// clobbering the change; one whose VM is gone is NotFound; the others
// are bound.
func TestSchedulerBatchMembersStandAlone(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	var items []api.BindingItem
	for _, name := range []string{"a", "b", "c", "d"} {
		o, err := env.Admin.Create(ctx, newVM("lab", name, 1, 1<<30, nil))
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, api.BindingItem{Tenant: "lab", Name: name, ResourceVersion: o.GetMetadata().ResourceVersion, Host: "h1"})
	}
	// Between the decision and the batch: b grows past what the host
	// was chosen for, d is deleted.
	if _, err := env.Admin.Patch(ctx, "VirtualMachine", "lab", "b", map[string]any{"spec": map[string]any{"cpus": 64}}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Admin.Delete(ctx, "VirtualMachine", "lab", "d"); err != nil {
		t.Fatal(err)
	}
	errs := controllers.WriteBindings(ctx, env.Admin, items)
	if errs[0] != nil || errs[2] != nil {
		t.Errorf("a and c: %v, %v; want bound", errs[0], errs[2])
	}
	if !api.IsConflict(errs[1]) {
		t.Errorf("b, changed after the decision: %v, want a Conflict", errs[1])
	}
	if !api.IsNotFound(errs[3]) {
		t.Errorf("d, deleted: %v, want NotFound", errs[3])
	}
	for name, want := range map[string]string{"a": "h1", "b": "", "c": "h1"} {
		vm, err := getVM(ctx, env, "lab", name)
		if err != nil {
			t.Fatal(err)
		}
		if vm.Spec.Host != want {
			t.Errorf("VM %s on %q, want %q", name, vm.Spec.Host, want)
		}
		if name == "b" && vm.Spec.CPUs != 64 {
			t.Errorf("VM b has %d CPUs: its change was clobbered", vm.Spec.CPUs)
		}
	}
}
