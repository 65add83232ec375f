package e2e

import (
	"bytes"
	"context"
	"testing"
	"time"

	"hearth.dev/hearth/bench"
)

// TestScaleKillLeader places a backlog of VMs on simulated hosts (the
// real agent on compute/computetest) with a three-member control plane,
// and kills the leading server (SIGKILL: its etcd member dies with it)
// once placement has begun: placement resumes within the leader lease on another
// server, and every VM ends up started by exactly one host, bound once,
// none lost. The same run as `hearth bench scale --servers 3
// --kill-leader`, at a size CI takes in about a minute (67 s with the
// machine's load average at 30).
func TestScaleKillLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers and 20 simulated hosts; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var out bytes.Buffer
	res, err := bench.RunScale(ctx, bench.ScaleConfig{Hosts: 24, VMs: 2200, RunningVMs: 100, Rate: 100,
		Servers: 3, KillLeader: true, HeartbeatWindow: 2 * time.Second, Binary: hearthBin, Dir: t.TempDir(),
		Logf: func(format string, args ...any) { t.Logf(format, args...) }}, &out)
	t.Logf("report:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.LeaderKilled == "" {
		t.Fatal("no leader was killed")
	}
	if len(res.BoundTwice) > 0 || len(res.Lost) > 0 {
		t.Fatalf("bound or started twice: %v; lost: %v", res.BoundTwice, res.Lost)
	}
	// The election's lease is 10 s; a new leader lists everything and
	// places again within a few more.
	// The backlog is larger than the batches the old leader may have in
	// flight (8 × 256), so some VMs are left for the new one to bind; 24
	// hosts have room for it (128 vCPUs each at the bench's overcommit).
	if res.Gap <= 0 || res.Gap > 25*time.Second {
		t.Fatalf("placement resumed %s after the leader was killed; want within the 10 s leader lease and a start", res.Gap)
	}
	// create→Running waited for the new leader: the lease, renewed once
	// more if the killed member led etcd's raft.
	if res.NewLeader == "" || res.NewLeader == res.LeaderKilled || res.NewLeaderAfter > 25*time.Second {
		t.Fatalf("after killing %s, server %q led %s later; want another server within the 10 s leader lease, renewed once", res.LeaderKilled, res.NewLeader, res.NewLeaderAfter)
	}
}
