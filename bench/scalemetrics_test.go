package bench

import (
	"testing"
	"time"
)

// TestHistoDelta: the histograms of two scrapes give what was observed
// between them.
func TestHistoDelta(t *testing.T) {
	names := []string{"etcd_disk_wal_fsync_duration_seconds", `hearth_api_request_duration_seconds{method="PUT"}`}
	before, err := parseHistos(`# HELP etcd_disk_wal_fsync_duration_seconds x
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 10
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"} 10
etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 10
etcd_disk_wal_fsync_duration_seconds_sum 0.005
etcd_disk_wal_fsync_duration_seconds_count 10
hearth_api_request_duration_seconds_bucket{method="PUT",le="0.001"} 1
hearth_api_request_duration_seconds_bucket{method="PUT",le="+Inf"} 1
hearth_api_request_duration_seconds_sum{method="PUT"} 0.0005
hearth_api_request_duration_seconds_count{method="PUT"} 1
hearth_api_request_duration_seconds_count{method="GET"} 7
`, names...)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := parseHistos(`etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 10
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"} 109
etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 110
etcd_disk_wal_fsync_duration_seconds_sum 0.205
etcd_disk_wal_fsync_duration_seconds_count 110
`, names...)
	d := deltaOf(before[names[0]], after[names[0]])
	if d.n != 100 || d.mean != 2*time.Millisecond || d.p99 != 2*time.Millisecond {
		t.Errorf("fsyncs: %+v, want 100, mean 2ms, p99 2ms", d)
	}
	if h := before[names[1]]; h == nil || h.count != 1 || h.buckets[0.001] != 1 {
		t.Errorf("PUT latencies: %+v", h)
	}
	if d := deltaOf(before[names[1]], after[names[1]]); d.n != 0 || d.String() != "none" {
		t.Errorf("a histogram missing from the second scrape: %+v", d)
	}
}
