package server

import (
	"context"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/power"
	"hearth.dev/hearth/server/controllers"
)

// DefaultDiscoveredMachineTTL is the default of
// Config.DiscoveredMachineTTL.
const DefaultDiscoveredMachineTTL = controllers.DefaultDiscoveredTTL

// defaultControllers are the controllers every control plane runs.
// They share one informer per kind (shared), so each object is decoded
// and kept once.
// Host liveness reads the hosts' leases (leases) beside their status;
// the scheduler records what its bindings wait on in bm.
func defaultControllers(cfg Config, shared *controllers.Informers, leases controllers.HostLeases, bm *controllers.BindingMetrics) []ControllerFunc {
	return []ControllerFunc{
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.HostLiveness{Client: c, Recorder: rec, Informers: shared, Leases: leases}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.GarbageCollector{Client: c, Recorder: rec, Informers: shared}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.Scheduler{Client: c, Recorder: rec, Informers: shared, Metrics: bm}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.VMSets{Client: c, Recorder: rec, Informers: shared}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.Machines{Client: c, Recorder: rec, DiscoveredTTL: cfg.DiscoveredMachineTTL, Informers: shared}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.VolumePlacement{Client: c, Recorder: rec, Informers: shared}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.PoolVolumeSweep{Client: c, Recorder: rec, Informers: shared, Leases: leases}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.References{Client: c, Recorder: rec, Informers: shared}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.Networks{Client: c, Recorder: rec, Informers: shared}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.Failover{Client: c, Recorder: rec, Informers: shared, Leases: leases,
				Power: func(ctx context.Context, m *api.Machine) (power.Driver, error) {
					return machinePowerDriver(ctx, c, m, cfg)
				}}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.MigrationRollback{Client: c, Recorder: rec, Informers: shared}).Run(ctx)
		},
	}
}

// machinePowerDriver is the power driver of machine m, its Secrets read
// with c (the controllers' own cluster-admin client): what fences a lost
// host.
func machinePowerDriver(ctx context.Context, c *client.Client, m *api.Machine, cfg Config) (power.Driver, error) {
	resolved, err := power.ResolveSecrets(ctx, m, func(ctx context.Context, name string) (*api.Secret, error) {
		o, err := c.Get(ctx, "Secret", "", name)
		if err != nil {
			return nil, err
		}
		return o.(*api.Secret), nil
	})
	if err != nil {
		return nil, err
	}
	return power.For(resolved, power.Options{IPMITool: cfg.Sensors.IPMITool})
}
