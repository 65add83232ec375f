package server

import (
	"context"

	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/controllers"
)

// DefaultDiscoveredMachineTTL is the default of
// Config.DiscoveredMachineTTL.
const DefaultDiscoveredMachineTTL = controllers.DefaultDiscoveredTTL

// defaultControllers are the controllers every control plane runs.
func defaultControllers(cfg Config) []ControllerFunc {
	return []ControllerFunc{
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.HostLiveness{Client: c, Recorder: rec}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.GarbageCollector{Client: c, Recorder: rec}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.Scheduler{Client: c, Recorder: rec}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.VMSets{Client: c, Recorder: rec}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.Machines{Client: c, Recorder: rec, DiscoveredTTL: cfg.DiscoveredMachineTTL}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.VolumePlacement{Client: c, Recorder: rec}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.References{Client: c, Recorder: rec}).Run(ctx)
		},
		func(ctx context.Context, c *client.Client, rec *client.Recorder) error {
			return (&controllers.Networks{Client: c, Recorder: rec}).Run(ctx)
		},
	}
}
