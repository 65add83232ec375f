package bench

import (
	"context"
	"fmt"
	"strings"
)

// createPhaseNames are the phases the server times a VM create in
// (hearth_api_vm_create_phase_seconds; server/createphases.go).
var createPhaseNames = []string{"read", "admit", "write", "answer"}

func createPhaseSeries(phase string) string {
	return fmt.Sprintf(`hearth_api_vm_create_phase_seconds{phase=%q}`, phase)
}

// createPhases reads the server's VM-create phase histograms from the
// server the bench creates through.
func (r *scaleRun) createPhases(ctx context.Context) map[string]*histo {
	names := make([]string, len(createPhaseNames))
	for i, p := range createPhaseNames {
		names[i] = createPhaseSeries(p)
	}
	hs, err := scrapeHistos(ctx, r.adminP, names...)
	if err != nil {
		r.logf("reading %s's metrics: %v", r.adminP.name, err)
		return nil
	}
	return hs
}

// createPhasesDelta says what the creates between two readings spent in
// each phase in the server: the mean, and the bucket bounds of the
// median and p99.
func createPhasesDelta(before, after map[string]*histo) string {
	var out []string
	for _, p := range createPhaseNames {
		a, b := before[createPhaseSeries(p)], after[createPhaseSeries(p)]
		d := deltaOf(a, b)
		if d.n == 0 {
			continue
		}
		p50, _ := bucketQuantile(a.buckets, b.buckets, 0.5)
		out = append(out, fmt.Sprintf("%s mean %s, p50 ≤ %s, p99 ≤ %s", p, ms(d.mean), ms(p50), ms(d.p99)))
	}
	if len(out) == 0 {
		return "not measured"
	}
	return strings.Join(out, "; ")
}
