package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/compute/computetest"
	"hearth.dev/hearth/server/servertest"
)

// silentDriver is computetest's driver as a Migrator whose Lookup of
// chosen VMs fails the way a QEMU 7.2 waiting for a vanished source's
// TLS handshake does: its QMP answers nothing.
type silentDriver struct {
	*computetest.Driver
	mu     sync.Mutex
	silent map[string]bool
}

var _ compute.Migrator = (*silentDriver)(nil)

func (d *silentDriver) Lookup(ctx context.Context, id, dir string) (compute.Info, bool, error) {
	d.mu.Lock()
	s := d.silent[id]
	d.mu.Unlock()
	if s {
		return compute.Info{}, false, errors.New("qmp_capabilities: read unix qmp.sock: i/o timeout")
	}
	return d.Driver.Lookup(ctx, id, dir)
}

func (d *silentDriver) Migrate(ctx context.Context, id, dir, uri string, tls *compute.MigrationTLS) (compute.Migration, error) {
	return compute.Migration{}, errors.New("this test moves nothing out")
}

func (d *silentDriver) Announce(ctx context.Context, id, dir string) error { return nil }

// TestIncomingSilentGivesUp: a VM moving here from a host that vanished
// mid-handshake, whose incoming QEMU answers no QMP, is given up once
// the move is older than migrateTimeout: its QEMU is killed (by its
// process) and the move recorded failed, once. Before, every look at
// the QEMU failed and the VM's reconcile failed for ever.
func TestIncomingSilentGivesUp(t *testing.T) {
	drv := &silentDriver{Driver: &computetest.Driver{}, silent: map[string]bool{}}
	l := newFakeLab(t, func(c *Config) { c.Driver = drv })
	ctx := servertest.Ctx(t)

	// The VM, as the server shows one moving from h0 to h1: h0 ran it,
	// h1 (this agent) started waiting for it six minutes ago.
	vm := l.vm("arriving")
	vm.Spec.Host = "h0"
	o, err := l.env.Admin.Create(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	vm = o.(*api.VirtualMachine)
	drv.mu.Lock()
	drv.silent[vm.Metadata.UID] = true
	drv.mu.Unlock()
	vm.Status.Host, vm.Status.Phase = "h0", api.VMRunning
	if _, err := l.env.Admin.UpdateStatus(ctx, vm); err != nil {
		t.Fatal(err)
	}
	l.patchSpec(t, "arriving", map[string]any{"host": "h1"})
	began := time.Now().Add(-migrateTimeout - time.Minute)
	servertest.Eventually(t, 30*time.Second, func() error {
		vm := l.get(t, "arriving")
		vm.Status.Phase = api.VMMigrating
		vm.Status.Migration = &api.VMMigration{From: "h0", Incoming: "tcp:127.0.0.1:1", StartedAt: &began}
		_, err := l.env.Admin.UpdateStatus(ctx, vm)
		return err
	})

	got := l.wait(t, "arriving", func(vm *api.VirtualMachine) error {
		c := vm.Status.Condition(api.ConditionMigrated)
		if c == nil || c.Status != api.ConditionFalse {
			return fmt.Errorf("Migrated is %+v", c)
		}
		return nil
	})
	c := got.Status.Condition(api.ConditionMigrated)
	if !strings.Contains(c.Message, "could not read the state of its QEMU") || !strings.Contains(c.Message, "from h0") {
		t.Errorf("Migrated False says %q; want why h1 gave up", c.Message)
	}
	killed := false
	for _, call := range drv.Calls() {
		if call.Op == computetest.OpKill && call.ID == got.Metadata.UID {
			killed = true
		}
	}
	if !killed {
		t.Error("the silent incoming QEMU was not killed")
	}
}
