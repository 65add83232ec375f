package dataplane_test

import (
	"context"
	"os"
	"testing"

	"hearth.dev/hearth/dataplane/dataplanetest"
)

// go test -run XXX -bench SecurityGroups -benchtime 1x ./dataplane/
// (docs/BENCHMARKS.md): throughput with 1,000 rules on each end against
// none (goal at least 0.9×), and the time from Apply of a rule change to
// its first connection (goal p95 under a second).
func BenchmarkSecurityGroups(b *testing.B) {
	requireRoot(b)
	for range b.N {
		res, err := dataplanetest.RunSecurityGroups(context.Background(), dataplanetest.SecurityGroupsConfig{}, os.Stdout)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(res.Ratio, "rules/none")
		b.ReportMetric(float64(res.ChangeP95.Microseconds()), "change-p95-µs")
	}
}
