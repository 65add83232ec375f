package admission

import (
	"context"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/store"
)

// Pools checks the StoragePool a Volume names and fills in what the pool
// decides: the volume's backend (the pool's driver) and, when it was left
// out, its format (raw on rbd, qcow2 elsewhere). A tenant names a pool
// only by its name, and pools are cluster infrastructure that only
// cluster admins write, so naming one reaches nothing but the pool the
// administrator made: a volume's place in the pool is its uid, never a
// name or path the tenant gives.
type Pools struct {
	store *store.Store
}

// NewPools returns the pool check over a store.
func NewPools(st *store.Store) *Pools { return &Pools{store: st} }

// Admit refuses a volume whose pool does not exist or does not fit, with
// a 422 on spec.pool, spec.backend or spec.format. A new volume in a
// shared pool gets api.FinalizerPoolVolume, so its data is deleted from
// the pool even if its host is gone by then; and only the server's own
// controllers move such a volume to another host, once it is deleted
// (controllers.PoolVolumeSweep).
func (c *Pools) Admit(ctx context.Context, p *auth.Principal, obj, old api.Object) error {
	vol, ok := obj.(*api.Volume)
	if !ok || vol.Spec.Pool == "" {
		return nil
	}
	o, isUpdate := old.(*api.Volume)
	if isUpdate && o.Spec.Host != "" && vol.Spec.Host != o.Spec.Host &&
		(p == nil || !p.Internal || o.Metadata.DeletionTimestamp == nil || !o.Spec.Shared()) {
		var es api.FieldErrors
		es.Add("spec.host", "cannot change (was %q): the volume's host manages it; the server moves a deleted volume off a lost host itself", o.Spec.Host)
		return api.NewInvalid("Volume", vol.Metadata.Name, es)
	}
	if vol.Metadata.DeletionTimestamp != nil {
		return nil
	}
	s := &vol.Spec
	if isUpdate && o.Spec.Pool == s.Pool {
		// The pool was checked when the volume was made and cannot
		// change; a write that left backend or format out keeps them.
		if s.Backend == "" {
			s.Backend = o.Spec.Backend
		}
		if s.Format == "" {
			s.Format = o.Spec.Format
		}
		return nil
	}
	refuse := func(field, format string, args ...any) error {
		var es api.FieldErrors
		es.Add(field, format, args...)
		return api.NewInvalid("Volume", vol.Metadata.Name, es)
	}
	pk, _ := api.KindByName("StoragePool")
	po, err := c.store.Get(ctx, pk, "", s.Pool)
	if api.IsNotFound(err) {
		return refuse("spec.pool", "storage pool %q does not exist (a cluster admin makes pools; hearth get storagepools lists them)", s.Pool)
	}
	if err != nil {
		return err
	}
	pool := po.(*api.StoragePool)
	if pool.Metadata.DeletionTimestamp != nil {
		return refuse("spec.pool", "storage pool %q is being deleted", s.Pool)
	}
	driver := pool.Spec.Driver
	if s.Backend != "" && s.Backend != driver {
		return refuse("spec.backend", "is %q but pool %q is a %s pool: leave backend out, the pool decides it", s.Backend, s.Pool, driver)
	}
	s.Backend = driver
	if !isUpdate && s.Shared() && !vol.Metadata.HasFinalizer(api.FinalizerPoolVolume) {
		vol.Metadata.Finalizers = append(vol.Metadata.Finalizers, api.FinalizerPoolVolume)
	}
	want := api.FormatQCOW2
	if driver == api.PoolDriverRBD {
		want = api.FormatRaw
	}
	switch {
	case s.Format == "":
		s.Format = want
	case driver != api.PoolDriverLocal && s.Format != want:
		return refuse("spec.format", "%s volumes are %s (pool %q)", driver, want, s.Pool)
	}
	return nil
}
