package controllers_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/controllers"
	"hearth.dev/hearth/server/servertest"
)

func newVolume(tenant, name, host string, src api.VolumeSource) *api.Volume {
	v := &api.Volume{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Volume"},
		Metadata: api.ObjectMeta{Name: name, Tenant: tenant}, Spec: api.VolumeSpec{Host: host, Source: src}}
	if src == (api.VolumeSource{}) {
		v.Spec.Size = 1 << 30
	}
	return v
}

func withVolumes(vm *api.VirtualMachine, vols ...string) *api.VirtualMachine {
	for _, v := range vols {
		vm.Spec.Disks = append(vm.Spec.Disks, api.VMDisk{Volume: v})
	}
	return vm
}

// waitHost waits until a Volume or Snapshot is bound, and returns its host.
func waitHost(t *testing.T, env *servertest.Env, kind, tenant, name string) string {
	t.Helper()
	var host string
	servertest.Eventually(t, 10*time.Second, func() error {
		o, err := env.Admin.Get(servertest.Ctx(t), kind, tenant, name)
		if err != nil {
			return err
		}
		switch x := o.(type) {
		case *api.Volume:
			host = x.Spec.Host
		case *api.Snapshot:
			host = x.Spec.Host
		}
		if host == "" {
			return fmt.Errorf("%s %s has no host yet (status %+v)", kind, name, o.CommonStatus())
		}
		return nil
	})
	return host
}

// TestVolumePlacement: a local volume waits for the VM that uses it and is
// made on that VM's host; its snapshots and the volumes made from them
// follow it there; and the scheduler sends every later VM that uses it to
// that host, or says why it cannot.
func TestVolumePlacement(t *testing.T) {
	env := servertest.Start(t)
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	addHost(t, env, "h1", api.HostReady, 4, 8<<30, nil)
	addHost(t, env, "h2", api.HostReady, 4, 2<<30, map[string]string{"disk": "fast"})

	if _, err := env.Admin.Create(ctx, newVolume("lab", "data", "", api.VolumeSource{})); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		o, err := env.Admin.Get(ctx, "Volume", "lab", "data")
		if err != nil {
			return err
		}
		c := o.CommonStatus().Condition(controllers.ConditionBound)
		if o.CommonStatus().Phase != api.VolumePending || c == nil || !strings.Contains(c.Message, "waiting for a VM that uses it") {
			return fmt.Errorf("unused volume: phase %q, Bound %+v", o.CommonStatus().Phase, c)
		}
		return nil
	})

	// The first VM goes to h2 by its node selector; the volume follows.
	first := withVolumes(newVM("lab", "first", 1, 1<<30, nil), "data")
	first.Spec.NodeSelector = api.LabelSelector{"disk": "fast"}
	if _, err := env.Admin.Create(ctx, first); err != nil {
		t.Fatal(err)
	}
	if host := waitPlaced(t, env, "lab", "first"); host != "h2" {
		t.Fatalf("first VM on %s, want h2", host)
	}
	if host := waitHost(t, env, "Volume", "lab", "data"); host != "h2" {
		t.Fatalf("volume bound to %s, want h2 (its VM's host)", host)
	}

	// A snapshot goes where its volume is, and so does a volume made from it.
	snap := &api.Snapshot{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Snapshot"},
		Metadata: api.ObjectMeta{Name: "s1", Tenant: "lab"}, Spec: api.SnapshotSpec{Volume: "data"}}
	if _, err := env.Admin.Create(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if host := waitHost(t, env, "Snapshot", "lab", "s1"); host != "h2" {
		t.Fatalf("snapshot on %s, want h2", host)
	}
	if _, err := env.Admin.Create(ctx, newVolume("lab", "copy", "", api.VolumeSource{Snapshot: "s1"})); err != nil {
		t.Fatal(err)
	}
	if host := waitHost(t, env, "Volume", "lab", "copy"); host != "h2" {
		t.Fatalf("volume from the snapshot on %s, want h2", host)
	}

	// A second VM using the volume lands on h2, though h1 has more room.
	if _, err := env.Admin.Create(ctx, withVolumes(newVM("lab", "second", 1, 512<<20, nil), "data")); err != nil {
		t.Fatal(err)
	}
	if host := waitPlaced(t, env, "lab", "second"); host != "h2" {
		t.Fatalf("second VM on %s, want h2, where its volume is", host)
	}

	// Too big for h2: the reason names where the data is.
	if _, err := env.Admin.Create(ctx, withVolumes(newVM("lab", "big", 1, 4<<30, nil), "data")); err != nil {
		t.Fatal(err)
	}
	waitUnschedulable(t, env, "lab", "big",
		"0/2 hosts: 1 do not hold its volumes (volume data lives on h2), 1 lack memory (need 4Gi, largest free 512Mi)")

	// Volumes bound to two hosts cannot serve one VM.
	if _, err := env.Admin.Create(ctx, newVolume("lab", "logs", "h1", api.VolumeSource{})); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Admin.Create(ctx, withVolumes(newVM("lab", "both", 1, 256<<20, nil), "data", "logs")); err != nil {
		t.Fatal(err)
	}
	waitUnschedulable(t, env, "lab", "both",
		"its volumes live on different hosts: volume data lives on h2 (volume data) and on h1 (volume logs); a VM can use local volumes of one host only")
}
