package servertest

import (
	"context"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/controllers"
)

// PlaceAll starts a scheduler against a server started without
// controllers, as its leader would run one, waits until every VM of
// tenant names a host (listing every poll), stops the scheduler and
// returns how long placing took from the scheduler's start. For
// benchmarks of placement alone.
func (e *Env) PlaceAll(ctx context.Context, tenant string, poll time.Duration) time.Duration {
	e.T.Helper()
	start := time.Now()
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- (&controllers.Scheduler{Client: e.Admin, Recorder: client.NewRecorder(e.Admin, "bench").Background(sctx)}).Run(sctx)
	}()
	defer func() { stop(); <-done }()
	for {
		objs, _, err := e.Admin.List(ctx, "VirtualMachine", tenant, client.ListOptions{})
		if err != nil {
			e.T.Fatal(err)
		}
		bound := 0
		for _, o := range objs {
			if o.(*api.VirtualMachine).Spec.Host != "" {
				bound++
			}
		}
		if bound == len(objs) {
			return time.Since(start)
		}
		time.Sleep(poll)
	}
}
