package controllers

import (
	"context"
	"slices"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

func host(name, phase string, cpus int, mem api.Bytes, mod func(*api.Host)) *api.Host {
	h := &api.Host{Metadata: api.ObjectMeta{Name: name}, Status: api.HostStatus{CPUs: cpus, Memory: mem}}
	h.Status.Phase = phase
	h.Spec.Default()
	if mod != nil {
		mod(h)
	}
	return h
}

func vm(tenant, name string, cpus int, mem api.Bytes, hostName string, labels map[string]string) *api.VirtualMachine {
	return &api.VirtualMachine{Metadata: api.ObjectMeta{Name: name, Tenant: tenant, UID: tenant + "/" + name, Labels: labels},
		Spec: api.VirtualMachineSpec{CPUs: cpus, Memory: mem, Host: hostName}}
}

func place(hosts []*api.Host, vms ...*api.VirtualMachine) *cluster {
	c := newCluster()
	for _, h := range hosts {
		c.setHost(h.Metadata.Name, h)
	}
	for _, v := range vms {
		c.setVM(v.Metadata.Tenant+"/"+v.Metadata.Name, v)
	}
	return c
}

// TestSchedule covers the choice and the summary of why nothing fits.
func TestSchedule(t *testing.T) {
	const gi = api.Bytes(1 << 30)
	ready := func(name string, cpus int, mem api.Bytes) *api.Host { return host(name, api.HostReady, cpus, mem, nil) }
	labelled := func(h *api.Host, labels map[string]string) *api.Host { h.Metadata.Labels = labels; return h }
	cordoned := host("c1", api.HostReady, 64, 64*gi, func(h *api.Host) { h.Spec.Unschedulable = true })
	antiDB := func(v *api.VirtualMachine) *api.VirtualMachine {
		v.Spec.AntiAffinity = []api.LabelSelector{{"app": "db"}}
		return v
	}
	withAffinity := func(v *api.VirtualMachine, sel api.LabelSelector) *api.VirtualMachine {
		v.Spec.Affinity = []api.LabelSelector{sel}
		return v
	}
	withSelector := func(v *api.VirtualMachine, sel api.LabelSelector) *api.VirtualMachine {
		v.Spec.NodeSelector = sel
		return v
	}
	tests := []struct {
		name     string
		vm       *api.VirtualMachine
		p        *cluster
		wantHost string
		wantWhy  string
	}{
		{"most free memory", vm("lab", "a", 1, gi, "", nil),
			place([]*api.Host{ready("h1", 4, 4*gi), ready("h2", 4, 8*gi)}), "h2", ""},
		{"tie broken by name", vm("lab", "a", 1, gi, "", nil),
			place([]*api.Host{ready("h2", 4, 8*gi), ready("h1", 4, 8*gi)}), "h1", ""},
		{"placed VMs take room", vm("lab", "a", 1, 4*gi, "", nil),
			place([]*api.Host{ready("h1", 4, 8*gi), ready("h2", 4, 8*gi)}, vm("x", "b", 1, 6*gi, "h2", nil)), "h1", ""},
		{"spread before free memory", vm("lab", "w2", 1, gi, "", map[string]string{VMSetLabel: "w"}),
			place([]*api.Host{ready("h1", 4, 16*gi), ready("h2", 4, 4*gi)}, vm("lab", "w1", 1, gi, "h1", map[string]string{VMSetLabel: "w"})), "h2", ""},
		{"reserve and overcommit", vm("lab", "a", 6, gi, "", nil),
			place([]*api.Host{host("h1", api.HostReady, 4, 8*gi, func(h *api.Host) { h.Spec.ReservedCPUs = 2; h.Spec.CPUOvercommit = 3 })}), "h1", ""},
		{"memory and NotReady", vm("lab", "a", 1, 4*gi, "", nil),
			place([]*api.Host{ready("h1", 4, 2*gi), ready("h2", 4, 3*gi), host("h3", api.HostNotReady, 4, 64*gi, nil)}, vm("lab", "b", 1, gi, "h2", nil)),
			"", "0/3 hosts: 2 lack memory (need 4Gi, largest free 2Gi), 1 NotReady"},
		{"reserved memory", vm("lab", "a", 1, 4*gi, "", nil),
			place([]*api.Host{host("h1", api.HostReady, 4, 4*gi, func(h *api.Host) { h.Spec.ReservedMemory = 512 << 20 })}),
			"", "0/1 hosts: 1 lack memory (need 4Gi, largest free 3584Mi)"},
		{"CPU", vm("lab", "a", 8, gi, "", nil),
			place([]*api.Host{host("h1", api.HostReady, 4, 8*gi, func(h *api.Host) { h.Spec.CPUOvercommit = 1.5 })}, vm("lab", "b", 1, gi, "h1", nil)),
			"", "0/1 hosts: 1 lack CPU (need 8, largest free 5)"},
		{"cordoned and selector", withSelector(vm("lab", "a", 1, gi, "", nil), api.LabelSelector{"disk": "ssd"}),
			place([]*api.Host{cordoned, labelled(ready("h1", 4, 8*gi), map[string]string{"disk": "hdd"})}),
			"", "0/2 hosts: 1 unschedulable (cordoned), 1 do not match nodeSelector"},
		{"anti-affinity both ways", vm("lab", "db2", 1, gi, "", map[string]string{"app": "db"}),
			place([]*api.Host{ready("h1", 4, 8*gi)}, antiDB(vm("lab", "db1", 1, gi, "h1", map[string]string{"app": "db"}))),
			"", "0/1 hosts: 1 violate anti-affinity"},
		{"anti-affinity is per tenant", antiDB(vm("lab", "db2", 1, gi, "", map[string]string{"app": "db"})),
			place([]*api.Host{ready("h1", 4, 8*gi)}, vm("other", "db1", 1, gi, "h1", map[string]string{"app": "db"})), "h1", ""},
		{"affinity", withAffinity(vm("lab", "app", 1, gi, "", nil), api.LabelSelector{"app": "db"}),
			place([]*api.Host{ready("h1", 4, 8*gi), ready("h2", 4, 4*gi)}, vm("lab", "db", 1, gi, "h2", map[string]string{"app": "db"})), "h2", ""},
		{"affinity unmet", withAffinity(vm("lab", "app", 1, gi, "", nil), api.LabelSelector{"app": "db"}),
			place([]*api.Host{ready("h1", 4, 8*gi)}), "", "0/1 hosts: 1 do not satisfy affinity"},
		{"first of an affinity group", withAffinity(vm("lab", "db", 1, gi, "", map[string]string{"app": "db"}), api.LabelSelector{"app": "db"}),
			place([]*api.Host{ready("h1", 4, 8*gi)}), "h1", ""},
		{"no hosts", vm("lab", "a", 1, gi, "", nil), place(nil), "", "0/0 hosts: no host has registered (run `hearth agent` on one)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotHost, gotWhy := tt.p.schedule(tt.vm, nil)
			if gotHost != tt.wantHost || gotWhy != tt.wantWhy {
				t.Errorf("schedule = %q, %q; want %q, %q", gotHost, gotWhy, tt.wantHost, tt.wantWhy)
			}
		})
	}
}

// TestScaleDownVictims: unscheduled first, then the fullest host (so the
// rest stays spread), then the newest.
func TestScaleDownVictims(t *testing.T) {
	at := func(v *api.VirtualMachine, sec int) *api.VirtualMachine {
		ts := time.Unix(int64(sec), 0)
		v.Metadata.CreationTimestamp = &ts
		return v
	}
	vms := []*api.VirtualMachine{
		at(vm("lab", "a", 1, 1, "h1", nil), 1),
		at(vm("lab", "b", 1, 1, "h1", nil), 2),
		at(vm("lab", "c", 1, 1, "h1", nil), 3),
		at(vm("lab", "d", 1, 1, "h2", nil), 4),
		at(vm("lab", "e", 1, 1, "h2", nil), 5),
		at(vm("lab", "p", 1, 1, "", nil), 0),
	}
	var got []string
	for _, v := range scaleDownVictims(vms, 4) {
		got = append(got, v.Metadata.Name)
	}
	want := []string{"p", "c", "e", "b"}
	if len(got) != len(want) {
		t.Fatalf("victims %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("victims %v, want %v", got, want)
		}
	}
}

// TestScheduledRecorded: markScheduled skips a VM exactly when
// SetScheduled would change nothing in its status.
func TestScheduledRecorded(t *testing.T) {
	now := time.Now().UTC()
	scheduled := api.Condition{Type: ConditionScheduled, Status: api.ConditionTrue, Reason: api.ReasonScheduled, Message: "placed on h1"}
	unschedulable := api.Condition{Type: ConditionScheduled, Status: api.ConditionFalse, Reason: api.ReasonUnschedulable, Message: "0/1 hosts"}
	for _, phase := range []string{"", api.VMPending, api.VMScheduled, api.VMStarting, api.VMRunning, api.VMFailed} {
		for _, conds := range [][]api.Condition{nil, {scheduled}, {unschedulable}} {
			var st api.VirtualMachineStatus
			st.Phase, st.Conditions = phase, slices.Clone(conds)
			got := scheduledRecorded(&st)
			changed := st.SetScheduled("h1", 1, now)
			if got == changed {
				t.Errorf("phase %q, conditions %v: scheduledRecorded %v, but SetScheduled changed it: %v", phase, conds, got, changed)
			}
		}
	}
}

// BenchmarkMarkScheduledPlaced is what the scheduler does at every write
// of a placed VM (its agent's, as it starts): find its status says so
// already.
//
//	go test ./server/controllers -run '^$' -bench MarkScheduledPlaced -benchmem
func BenchmarkMarkScheduledPlaced(b *testing.B) {
	s := &Scheduler{Now: time.Now}
	vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
		Metadata: api.ObjectMeta{Name: "web", Tenant: "lab", UID: "u1", ResourceVersion: "7", Generation: 1},
		Spec:     api.VirtualMachineSpec{Host: "h1", CPUs: 1, Memory: 64 << 20, Boot: api.VMBoot{From: api.BootFromNetwork}}}
	vm.Status.SetScheduled("h1", 1, time.Now().UTC())
	vm.Status.Phase = api.VMRunning
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.markScheduled(ctx, vm); err != nil {
			b.Fatal(err)
		}
	}
}
