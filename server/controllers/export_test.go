package controllers

import (
	"context"
	"time"

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
