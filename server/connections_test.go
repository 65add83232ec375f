package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/serving"
)

// TestWatchesShareConnection: one client's watches are streams of one
// HTTP/2 connection, and every one of them gets every event; with more
// watches than a connection may carry (MaxStreams, here 100), the client
// opens a second connection rather than leaving the rest waiting, and
// requests go on beside them. The test fails if a watch misses an event,
// if the watches stall on the stream limit, or if they take more
// connections than they need.
func TestWatchesShareConnection(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers(), servertest.WithLimits(serving.Limits{MaxStreams: 100}))
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	c := env.User("watcher", "lab", api.RoleTenantAdmin)
	// The user is made through the admin's connection; c has none yet.
	before := env.Server.Connections()

	const watches, keys = 150, 5
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	type result struct {
		seen int
		err  error
	}
	results := make(chan result, watches)
	var started sync.WaitGroup
	for range watches {
		started.Add(1)
		go func() {
			events, werr, err := c.WatchOnce(wctx, "SSHKey", "lab", client.ListOptions{})
			started.Done()
			if err != nil {
				results <- result{err: err}
				return
			}
			seen := map[string]bool{}
			for ev := range events {
				if ev.Type == "ADDED" {
					seen[ev.Object.GetMetadata().Name] = true
				}
				if len(seen) == keys {
					break
				}
			}
			if len(seen) < keys {
				err = fmt.Errorf("the watch ended after %d of %d keys: %v", len(seen), keys, werr())
			}
			results <- result{seen: len(seen), err: err}
		}()
	}
	started.Wait()
	// Requests beside the watches, on the same client.
	for i := range keys {
		key := servertest.Example("SSHKey", "lab")
		key.GetMetadata().Name = fmt.Sprintf("k%d", i)
		if _, err := c.Create(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := c.List(ctx, "SSHKey", "lab", client.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(20 * time.Second)
	for i := range watches {
		select {
		case r := <-results:
			if r.err != nil {
				t.Errorf("watch: %v", r.err)
			}
		case <-deadline:
			t.Fatalf("%d of %d watches did not see all %d keys in 20s", watches-i, watches, keys)
		}
	}
	after := env.Server.Connections()
	if n := after.Accepted - before.Accepted; n != 2 {
		t.Errorf("%d watches (100 streams allowed per connection) and the requests beside them took %d connections, want 2", watches, n)
	}
}
