package controllers

import (
	"context"
	"fmt"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/reconcile"
)

// MigrationRollback puts a VM whose live migration failed back where it
// runs. A VM moves live when its spec.host changes (agent/migrate.go);
// when the move does not happen (the destination could not start its
// QEMU, the stream broke, the source cancelled it), the destination's
// agent, which owns the VM's status, says so in the Migrated condition
// (api.ReasonMigrationFailed, at the generation that asked for the move)
// and the VM runs on at status.host. This controller then sets spec.host
// back to status.host, conditional on the version it read, so that spec
// and status agree on where the VM is and the move is not tried again
// until someone asks anew. The condition stays, saying why.
type MigrationRollback struct {
	Client   *client.Client
	Recorder *client.Recorder
	// Informers, when set, are shared with the term's other controllers.
	Informers *Informers

	vms *client.Informer
	ctl *reconcile.Controller
}

// Run runs the controller until ctx ends.
func (m *MigrationRollback) Run(ctx context.Context) error {
	m.vms = m.Informers.informer(ctx, m.Client, "VirtualMachine")
	m.ctl = &reconcile.Controller{Name: "migration-rollback", Reconciler: m, Workers: 2, Resync: time.Minute, SpreadResync: true,
		List: func(context.Context) ([]string, error) {
			var keys []string
			for _, o := range m.vms.List() {
				if api.MigrationFailed(o.(*api.VirtualMachine)) {
					keys = append(keys, client.Key(o))
				}
			}
			return keys, nil
		}}
	m.vms.OnUpdateUntil(ctx, func(ch client.Change) {
		if vm, ok := ch.New.(*api.VirtualMachine); ok && api.MigrationFailed(vm) {
			m.ctl.EnqueueNow(ch.Key)
		}
	})
	if m.vms.WaitSynced(ctx) != nil {
		return nil
	}
	return m.ctl.Run(ctx)
}

// Reconcile puts one VM back on the host it runs on if its move failed.
func (m *MigrationRollback) Reconcile(ctx context.Context, key string) (reconcile.Result, error) {
	o, ok := m.vms.Get(key)
	if !ok {
		return reconcile.Result{}, nil
	}
	vm := o.(*api.VirtualMachine)
	if !api.MigrationFailed(vm) || vm.Metadata.DeletionTimestamp != nil || vm.Status.Migration != nil {
		return reconcile.Result{}, nil
	}
	to, back := vm.Spec.Host, vm.Status.Host
	_, err := m.Client.Patch(ctx, "VirtualMachine", vm.Metadata.Tenant, vm.Metadata.Name, api.BindTo(vm.Metadata.ResourceVersion, back), false)
	switch {
	case api.IsConflict(err):
		return reconcile.Result{}, nil // changed since: the change is enqueued
	case api.IsNotFound(err):
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("putting VirtualMachine %s back on %s after its move to %s failed: %w", key, back, to, err)
	}
	msg := fmt.Sprintf("spec.host set back from %s to %s, where the VM runs: its move failed", to, back)
	if c := vm.Status.Condition(api.ConditionMigrated); c != nil {
		msg += " (" + c.Message + ")"
	}
	m.Recorder.Eventf(ctx, vm, api.EventNormal, "MigrationRolledBack", "%s", msg)
	return reconcile.Result{}, nil
}
