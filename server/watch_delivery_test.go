package server_test

import (
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

// TestWatchDeliveryMetric: each change a watcher is sent is counted in
// hearth_watch_delivery_seconds once its connection is flushed with it,
// under the watcher's kind (an administrator's watch is "other"), with
// the time from the server reading it from etcd: three changes, three
// deliveries, none slower than the test waited for them.
func TestWatchDeliveryMetric(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	count := func() (n float64, sum float64) {
		page, err := env.Admin.GetRaw(ctx, "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`(?m)^hearth_watch_delivery_seconds_(count|sum)\{watcher="other"\} (\S+)$`).FindAllStringSubmatch(string(page), -1) {
			v, _ := strconv.ParseFloat(m[2], 64)
			if m[1] == "count" {
				n = v
			} else {
				sum = v
			}
		}
		return n, sum
	}
	n0, sum0 := count()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, rv, err := env.Admin.List(ctx, "Network", "lab", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	events, _, err := env.Admin.WatchOnce(wctx, "Network", "lab", client.ListOptions{ResourceVersion: rv})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, name := range []string{"a", "b", "c"} {
		n := &api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"}, Metadata: api.ObjectMeta{Name: name, Tenant: "lab"}}
		if _, err := env.Admin.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
		select {
		case <-events:
		case <-time.After(10 * time.Second):
			t.Fatalf("the watch brought no event for network %s", name)
		}
	}
	waited := time.Since(start).Seconds()
	n1, sum1 := count()
	if got := n1 - n0; got != 3 {
		t.Errorf("hearth_watch_delivery_seconds counted %v deliveries to the watch, want 3", got)
	}
	if got := sum1 - sum0; got <= 0 || got > 3*waited {
		t.Errorf("the three deliveries took %.4fs in all by the metric; the test waited %.4fs for them", got, waited)
	}
}
