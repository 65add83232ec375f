package agent

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// TestPreparingOnlyWhenSlow: a start that prepares quickly writes its
// VM's status once (Starting or Running), not Preparing first and then
// that: at a thousand starts a second, the Preparing write was a third
// of the agents' writes and was replaced before anyone read it. A start
// whose kernel takes seconds to download still says Preparing while it
// does, and Running after.
func TestPreparingOnlyWhenSlow(t *testing.T) {
	// The kernel below comes from this test's web server, on loopback.
	l := newFakeLab(t, func(c *Config) { c.AllowFetchFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	ctx := servertest.Ctx(t)
	quick := l.recordVersions(t, "quick")
	if _, err := l.env.Admin.Create(ctx, l.vm("quick")); err != nil {
		t.Fatal(err)
	}
	l.wait(t, "quick", phase(api.VMRunning))
	if got := preparingWrites(quick.all()); got != 0 {
		t.Errorf("a quick start wrote Preparing %d times, want 0 (versions: %v)", got, phases(quick.all()))
	}

	release := make(chan struct{})
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Write([]byte("a kernel"))
	}))
	defer web.Close()
	defer close(release)
	slow := l.recordVersions(t, "slow")
	vm := l.vm("slow")
	vm.Spec.Boot = api.VMBoot{From: api.BootFromKernel, Kernel: &api.BootFile{URL: web.URL + "/vmlinuz"}}
	vm.Spec.NICs = nil
	// Straight into etcd: the API refuses a loopback URL, which is all a
	// test's web server has.
	if d, ok := vm.SpecAny().(api.Defaulter); ok {
		d.Default()
	}
	if _, err := l.env.Server.Store().Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	l.wait(t, "slow", func(vm *api.VirtualMachine) error {
		if c := vm.Status.Condition(api.ConditionReady); c == nil || c.Reason != api.ReasonPreparing {
			return errors.New("not Preparing yet")
		}
		return nil
	})
	release <- struct{}{}
	l.wait(t, "slow", phase(api.VMRunning))
	if got := preparingWrites(slow.all()); got != 1 {
		t.Errorf("a slow start wrote Preparing %d times, want 1 (versions: %v)", got, phases(slow.all()))
	}
	slow.checkAll(t)
	quick.checkAll(t)
}

// preparingWrites counts the versions whose Ready condition says
// Preparing.
func preparingWrites(vms []*api.VirtualMachine) int {
	n := 0
	for _, vm := range vms {
		if c := vm.Status.Condition(api.ConditionReady); c != nil && c.Reason == api.ReasonPreparing {
			n++
		}
	}
	return n
}
