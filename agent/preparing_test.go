package agent

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// TestPreparingOnlyWhenSlow: a start that prepares quickly writes its
// VM's status once (Starting or Running), not Preparing first and then
// that: at a thousand starts a second, the Preparing write was a third
// of the agents' writes and was replaced before anyone read it. A start
// whose kernel takes seconds to download still says Preparing while it
// does, and Running after; one whose download then fails says Failed
// last.
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

	// A kernel that downloads until released: /vmlinuz then serves it,
	// /missing answers 404 (from then on, at once).
	release, fail := make(chan struct{}), make(chan struct{})
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wait := release
		if r.URL.Path == "/missing" {
			wait = fail
		}
		select {
		case <-wait:
		case <-r.Context().Done():
			return
		}
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("a kernel"))
	}))
	defer web.Close()
	store := func(name, path string) *versions {
		v := l.recordVersions(t, name)
		vm := l.vm(name)
		vm.Spec.Boot = api.VMBoot{From: api.BootFromKernel, Kernel: &api.BootFile{URL: web.URL + path}}
		vm.Spec.NICs = nil
		// Straight into etcd: the API refuses a loopback URL, which is
		// all a test's web server has.
		if d, ok := vm.SpecAny().(api.Defaulter); ok {
			d.Default()
		}
		if _, err := l.env.Server.Store().Create(ctx, vm); err != nil {
			t.Fatal(err)
		}
		l.wait(t, name, func(vm *api.VirtualMachine) error {
			if c := vm.Status.Condition(api.ConditionReady); c == nil || c.Reason != api.ReasonPreparing {
				return errors.New("not Preparing yet")
			}
			return nil
		})
		return v
	}
	slow, broken := store("slow", "/vmlinuz"), store("broken", "/missing")
	close(release)
	l.wait(t, "slow", phase(api.VMRunning))
	if got := preparingWrites(slow.all()); got != 1 {
		t.Errorf("a slow start wrote Preparing %d times, want 1 (versions: %v)", got, phases(slow.all()))
	}

	// A slow start that fails says Preparing, then why it failed, and
	// nothing after: no late Preparing over the failure.
	close(fail)
	l.wait(t, "broken", phase(api.VMFailed))
	time.Sleep(2 * preparingDelay)
	vs := broken.all()
	if got := preparingWrites(vs); got != 1 {
		t.Errorf("a failing slow start wrote Preparing %d times, want 1 (versions: %v)", got, phases(vs))
	}
	if last := vs[len(vs)-1]; last.Status.Phase != api.VMFailed {
		t.Errorf("the failing start's last write says %v, want Failed (versions: %v)", phases(vs[len(vs)-1:]), phases(vs))
	}
	for _, v := range []*versions{quick, slow, broken} {
		v.checkAll(t)
	}
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
