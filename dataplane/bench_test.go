package dataplane_test

import (
	"context"
	"os"
	"testing"
	"time"

	"hearth.dev/hearth/dataplane/dataplanetest"
)

// A one-NIC change to a host with many networks costs what one NIC costs,
// not what the host has.
func TestOneChangeCostsOneChange(t *testing.T) {
	requireRoot(t)
	res, err := dataplanetest.RunScale(context.Background(), dataplanetest.ScaleConfig{Networks: 20, PortsPerNetwork: 5}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scratch %s (%d notifications), same %s, one port %s (%d notifications), full read %s",
		res.Scratch, res.ScratchEvent, res.Same, res.OnePort, res.OnePortEvents, res.FullRead)
	// The port's anti-spoofing chain is a rule per check (about twenty,
	// each a notification): still one port's worth, not the host's.
	if res.OnePortEvents == 0 || res.OnePortEvents > 50 {
		t.Errorf("adding one port made %d netlink notifications in the host namespace; want a few (the tap, its bridge port, its anti-spoofing chain)", res.OnePortEvents)
	}
	if res.Same > 20*time.Millisecond {
		t.Errorf("applying the same state again took %s; it should read nothing", res.Same)
	}
}

// go test -run XXX -bench Dataplane -benchtime 1x ./dataplane/
func BenchmarkDataplaneScale(b *testing.B) {
	requireRoot(b)
	for range b.N {
		res, err := dataplanetest.RunScale(context.Background(), dataplanetest.ScaleConfig{}, os.Stdout)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(res.Scratch.Seconds(), "scratch-s")
		b.ReportMetric(float64(res.OnePort.Microseconds()), "oneport-µs")
		b.ReportMetric(float64(res.OnePortEvents), "oneport-notifications")
	}
}

func BenchmarkDataplanePath(b *testing.B) {
	requireRoot(b)
	for range b.N {
		res, err := dataplanetest.RunThroughput(context.Background(), dataplanetest.ThroughputConfig{}, os.Stdout)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(res[0].MedianGbps/res[1].MedianGbps, "vxlan/plain")
	}
}
