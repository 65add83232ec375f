package bench

import (
	"strconv"
	"testing"
	"time"
)

// TestBucketQuantile: the quantiles of what a histogram counted between
// two readings of a Prometheus page, as the upper bound of the bucket
// each falls in; other histograms and other label values are not read.
func TestBucketQuantile(t *testing.T) {
	page := func(a, b, c, inf int) string {
		return `# HELP x
hearth_watch_delivery_seconds_bucket{watcher="other",le="0.001"} 999
hearth_watch_delivery_seconds_bucket{watcher="host",le="0.001"} ` + strconv.Itoa(a) + `
hearth_watch_delivery_seconds_bucket{watcher="host",le="0.01"} ` + strconv.Itoa(b) + `
hearth_watch_delivery_seconds_bucket{watcher="host",le="0.1"} ` + strconv.Itoa(c) + `
hearth_watch_delivery_seconds_bucket{watcher="host",le="+Inf"} ` + strconv.Itoa(inf) + `
hearth_api_request_duration_seconds_bucket{method="GET",le="0.001"} 5
`
	}
	buckets := func(page string) map[float64]float64 {
		hs, err := parseHistos(page, deliveryHisto)
		if err != nil || hs[deliveryHisto] == nil {
			t.Fatalf("%s not read (%v)", deliveryHisto, err)
		}
		return hs[deliveryHisto].buckets
	}
	before := buckets(page(10, 10, 10, 10))
	// 100 more: 50 under 1 ms, 45 more under 10 ms, 4 under 100 ms, 1 over.
	after := buckets(page(60, 105, 109, 110))
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, time.Millisecond}, {0.9, 10 * time.Millisecond}, {0.99, 100 * time.Millisecond}, {1, -1}} {
		got, n := bucketQuantile(before, after, c.q)
		if got != c.want || n != 100 {
			t.Errorf("q%v = %v of %v counted, want %v of 100", c.q, got, n, c.want)
		}
	}
	if got, n := bucketQuantile(after, after, 0.5); got != 0 || n != 0 {
		t.Errorf("nothing counted: q50 = %v of %v, want 0 of 0", got, n)
	}
}
