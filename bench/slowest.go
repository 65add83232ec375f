package bench

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// slowestShown is how many of the slowest create→Running VMs the report
// names: the percentiles say how long the tail is, these say what its
// VMs waited for.
const slowestShown = 5

// vmState is a state the bench's informer saw a VM in (its phase, and
// its Ready condition's reason when it has one) and when it first saw it.
type vmState struct {
	state string
	at    time.Time
}

// stateOf is the state vmSeen records for a VM's status.
func stateOf(phase, readyReason string) string {
	if readyReason == "" || readyReason == phase {
		return phase
	}
	return phase + "/" + readyReason
}

// seenState appends state to tr's states if it is new: the last one
// differs. Called with r.mu held.
func (tr *vmTrack) seenState(state string, at time.Time) {
	if n := len(tr.states); n > 0 && tr.states[n-1].state == state {
		return
	}
	tr.states = append(tr.states, vmState{state, at})
}

// slowPath is one VM's way from its create to Running, as the bench saw
// it, for the report's slowest VMs.
type slowPath struct {
	name  string
	total time.Duration
	line  string
}

// slowest describes the n VMs named prefix-… that took longest from
// sending their create to their guest's first output, each on one line:
// every moment the bench knows of, as seconds after the create was sent
// (the create answered; the Scheduled condition's time, the server's;
// the agent's first look at it, its driver's Lookup; each state the
// bench's informer saw, when it saw it; the start QEMU was told of,
// status.startedAt; status.firstOutputAt), and how many times the
// create was retried and the agent looked the VM up (a reconcile each).
// Called with r.mu held.
func (r *scaleRun) slowest(prefix string, n int) []string {
	var paths []slowPath
	for name, tr := range r.vms {
		if !strings.HasPrefix(name, prefix+"-") || tr.sent.IsZero() || tr.running.IsZero() {
			continue
		}
		at := func(t time.Time) string {
			if t.IsZero() {
				return "-"
			}
			return fmt.Sprintf("%+.3fs", t.Sub(tr.sent).Seconds())
		}
		var states []string
		for _, s := range tr.states {
			state := s.state
			if state == "" {
				state = "no phase"
			}
			states = append(states, state+" "+at(s.at))
		}
		line := fmt.Sprintf("%s %.3fs on %s, sent %s: answered %s, bound %s, agent's first look %s, seen %s, started %s, first output %s; create retried %d, agent looked %d times",
			name, tr.running.Sub(tr.sent).Seconds(), strings.Join(tr.hosts, ","), tr.sent.UTC().Format("15:04:05.000"), at(tr.created), at(tr.bound), at(r.lookups[tr.uid]),
			strings.Join(states, " → "), at(tr.started), at(tr.running), tr.retries, r.lookupCount[tr.uid])
		paths = append(paths, slowPath{name, tr.running.Sub(tr.sent), line})
	}
	sort.Slice(paths, func(i, j int) bool { return paths[i].total > paths[j].total })
	var out []string
	for _, p := range paths[:min(n, len(paths))] {
		out = append(out, p.line)
	}
	return out
}

// runSteps splits create→Running of the VMs named prefix-… into its
// steps and gives each step's p50, p95 and max: sent → answered (the
// create), answered → bound (the scheduler), bound → the agent's first
// look (the watch to the agent), that look → first output (the agent's
// start and the guest). A VM with a moment missing counts in no step.
// Called with r.mu held.
func (r *scaleRun) runSteps(prefix string) string {
	steps := []string{"create", "bind", "to the agent", "start"}
	d := make([][]time.Duration, len(steps))
	for name, tr := range r.vms {
		look := r.lookups[tr.uid]
		if !strings.HasPrefix(name, prefix+"-") || tr.created.IsZero() || tr.bound.IsZero() || look.IsZero() || tr.running.IsZero() {
			continue
		}
		for i, step := range []time.Duration{tr.created.Sub(tr.sent), tr.bound.Sub(tr.created), look.Sub(tr.bound), tr.running.Sub(look)} {
			d[i] = append(d[i], step)
		}
	}
	var out []string
	for i, step := range steps {
		out = append(out, fmt.Sprintf("%s %s/%s/%s", step, secs(pct(d[i], 50)), secs(pct(d[i], 95)), secs(pct(d[i], 100))))
	}
	return strings.Join(out, "; ") + fmt.Sprintf(" (p50/p95/max of %d VMs)", len(d[0]))
}
