package bench

import (
	"context"
	"math"
	"sort"
	"time"
)

// deliveryHisto is the servers' histogram of agents' watch events, from
// the server reading a change from etcd to the agent's connection
// flushed with it.
const deliveryHisto = `hearth_watch_delivery_seconds{watcher="host"}`

// deliveryBuckets reads deliveryHisto summed over the live servers: the
// cumulative count at each bucket's upper bound, in seconds.
func (r *scaleRun) deliveryBuckets(ctx context.Context) map[float64]float64 {
	out := map[float64]float64{}
	for _, p := range r.servers {
		if !p.alive() {
			continue
		}
		hs, err := scrapeHistos(ctx, p, deliveryHisto)
		if err != nil {
			r.logf("reading %s's metrics: %v", p.name, err)
			continue
		}
		if h := hs[deliveryHisto]; h != nil {
			for le, n := range h.buckets {
				out[le] += n
			}
		}
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
