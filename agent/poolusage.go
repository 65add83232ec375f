package agent

import (
	"context"
	"log/slog"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// poolUsageEvery is how often a host reads the size and use of the shared
// pools it reaches.
const poolUsageEvery = time.Minute

// reportUsage writes the capacity, use and free space of every shared
// StoragePool (rbd, nfs) this host uses into its status
// (api.StoragePoolUsage) when it changed by a hundredth of the pool's
// size or more: the server does not reach the storage, the hosts do.
// Every host that uses a pool reads the same figures, so the writes are
// few however many hosts there are. Local pools are a directory on each
// host: they have no one size.
func (p *poolDrivers) reportUsage(ctx context.Context) {
	p.a.cache.pools.OnChange(func(string, api.Object) { p.kickUsage() })
	if p.a.cache.pools.WaitSynced(ctx) != nil {
		return
	}
	t := time.NewTicker(poolUsageEvery)
	defer t.Stop()
	for {
		for _, o := range p.a.cache.pools.List() {
			p.reportPoolUsage(ctx, o.(*api.StoragePool))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.usageKick:
		}
	}
}

func (p *poolDrivers) reportPoolUsage(ctx context.Context, pool *api.StoragePool) {
	if pool.Spec.Driver == api.PoolDriverLocal || pool.Metadata.DeletionTimestamp != nil {
		return
	}
	name := pool.Metadata.Name
	p.mu.Lock()
	_, used := p.drivers[name]
	p.mu.Unlock()
	if !used {
		// Only the pools this host uses: a host reads an rbd pool's key,
		// and writes it to its disk, only for a pool one of its volumes
		// or VMs is in, not for every pool of the cluster.
		return
	}
	d, err := p.driver(ctx, pool)
	if err != nil {
		slog.Debug("pool usage: no driver", "pool", name, "err", err)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := d.Capacity(cctx)
	if err != nil {
		slog.Debug("pool usage: reading it", "pool", name, "err", err)
		return
	}
	st := pool.Status
	if !usageChanged(st, c.Total, c.Used, c.Available) {
		return
	}
	u := api.StoragePoolUsage{Capacity: api.Bytes(c.Total), Used: api.Bytes(c.Used), Available: api.Bytes(c.Available)}
	if _, err := p.a.c.PatchStatus(ctx, "StoragePool", "", name, u); err != nil && !api.IsNotFound(err) {
		slog.Warn("writing the usage of a storage pool", "pool", name, "err", err)
	}
}

// usageChanged reports whether a pool's figures moved enough to write:
// any change of its size, or of its use or free space by a hundredth of
// its size.
func usageChanged(st api.StoragePoolStatus, total, used, avail int64) bool {
	if int64(st.Capacity) != total {
		return true
	}
	step := total / 100
	diff := func(a, b int64) int64 {
		if a > b {
			return a - b
		}
		return b - a
	}
	return diff(int64(st.Used), used) > step || diff(int64(st.Available), avail) > step
}

// kickUsage asks reportUsage to read the pools now.
func (p *poolDrivers) kickUsage() {
	select {
	case p.usageKick <- struct{}{}:
	default:
	}
}
