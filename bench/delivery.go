package bench

import (
	"context"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// deliveryBuckets reads the servers' hearth_watch_delivery_seconds of
// agents' watches (from the server reading a change from etcd to the
// agent's connection flushed with it), summed over the live servers:
// the cumulative count at each bucket's upper bound, in seconds.
func (r *scaleRun) deliveryBuckets(ctx context.Context) map[float64]float64 {
	out := map[float64]float64{}
	for _, p := range r.servers {
		if !p.alive() {
			continue
		}
		c, err := p.client()
		if err != nil {
			continue
		}
		page, err := c.GetRaw(ctx, "/metrics")
		c.Close()
		if err != nil {
			r.logf("reading %s's metrics: %v", p.name, err)
			continue
		}
		for le, n := range parseBuckets(string(page), "hearth_watch_delivery_seconds_bucket", `watcher="host"`) {
			out[le] += n
		}
	}
	return out
}

// parseBuckets reads a Prometheus text page's buckets of one histogram
// whose labels include label: cumulative count by upper bound.
func parseBuckets(page, name, label string) map[float64]float64 {
	out := map[float64]float64{}
	for _, line := range strings.Split(page, "\n") {
		if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, label) {
			continue
		}
		_, rest, _ := strings.Cut(line, `le="`)
		leS, rest, ok := strings.Cut(rest, `"`)
		if !ok {
			continue
		}
		le, err := strconv.ParseFloat(leS, 64)
		if leS == "+Inf" {
			le, err = math.Inf(1), nil
		}
		f := strings.Fields(rest)
		if err != nil || len(f) == 0 {
			continue
		}
		n, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		out[le] += n
	}
	return out
}

// bucketQuantile is the upper bound of the bucket holding quantile q of
// what was counted between two readings (before, after): the figure is
// at most that. Zero when nothing was counted; -1 when past the last
// bound.
func bucketQuantile(before, after map[float64]float64, q float64) (time.Duration, float64) {
	var les []float64
	for le := range after {
		les = append(les, le)
	}
	sort.Float64s(les)
	if len(les) == 0 {
		return 0, 0
	}
	total := after[les[len(les)-1]] - before[les[len(les)-1]]
	if total <= 0 {
		return 0, 0
	}
	for _, le := range les {
		if after[le]-before[le] >= q*total {
			if math.IsInf(le, 1) {
				return -1, total
			}
			return time.Duration(le * float64(time.Second)), total
		}
	}
	return -1, total
}
