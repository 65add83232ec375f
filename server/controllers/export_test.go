package controllers

import (
	"context"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/reconcile"
)

// ExpectFor is expectFor, for the tests outside the package.
const ExpectFor = expectFor

// NewVMSetsWithCache returns a VMSets whose VM cache is vms, which the
// caller may leave unstarted (a cache that never catches up), reconciled
// by hand with Reconcile.
func NewVMSetsWithCache(ctx context.Context, c *client.Client, vms *client.Informer, now func() time.Time) (reconcile.Reconciler, error) {
	s := &VMSets{Client: c, Recorder: client.NewRecorder(c, "test"), Now: now, setOf: map[string]string{}, expect: map[string]*expectations{}}
	s.sets = client.NewInformer(c, "VirtualMachineSet", "", client.ListOptions{AllTenants: true})
	go s.sets.Run(ctx)
	s.vms = vms
	return s, s.sets.WaitSynced(ctx)
}

// WriteBindings writes items as the scheduler's binder writes a batch
// (one request) and returns what became of each: nil, or the error the
// scheduler acts on.
func WriteBindings(ctx context.Context, c *client.Client, items []api.BindingItem) []error {
	batch := make([]*pendingBinding, len(items))
	for i, it := range items {
		batch[i] = &pendingBinding{item: it}
	}
	return (&Scheduler{Client: c}).sendBindings(ctx, batch)
}
