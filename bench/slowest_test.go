package bench

import (
	"strings"
	"testing"
	"time"
)

func TestSlowest(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	r := &scaleRun{vms: map[string]*vmTrack{}, lookups: map[string]time.Time{}, lookupCount: map[string]int{}}
	track := func(name, uid string, running int) *vmTrack {
		tr := &vmTrack{uid: uid, sent: t0, created: at(10), hosts: []string{"sim-00001"}, bound: at(running - 20), started: at(running - 1), running: at(running)}
		tr.seenState("", at(12))
		tr.seenState("", at(13)) // the same state again: not a new one
		tr.seenState(stateOf("Scheduled", ""), at(running-15))
		tr.seenState(stateOf("Running", "Running"), at(running+5))
		r.vms[name] = tr
		r.lookups[uid] = at(running - 10)
		r.lookupCount[uid] = 1
		return tr
	}
	track("run-00001", "u1", 100)
	track("run-00002", "u2", 8779).retries = 2
	track("run-00003", "u3", 300)
	track("bl-00001", "u4", 99999)                     // another phase's VM
	r.vms["run-00004"] = &vmTrack{uid: "u5", sent: t0} // never ran

	got := r.slowest("run", 2)
	if len(got) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(got), strings.Join(got, "\n"))
	}
	want := "run-00002 8.779s on sim-00001, sent 05:00:00.000: answered +0.010s, bound +8.759s, agent's first look +8.769s, " +
		"seen no phase +0.012s → Scheduled +8.764s → Running +8.784s, started +8.778s, first output +8.779s; create retried 2, agent looked 1 times"
	if got[0] != want {
		t.Errorf("slowest:\n got %s\nwant %s", got[0], want)
	}
	if !strings.HasPrefix(got[1], "run-00003 0.300s ") {
		t.Errorf("second slowest: got %s, want run-00003's", got[1])
	}

	steps := r.runSteps("run")
	if want := "create 0.01s/0.01s/0.01s; bind 0.27s/8.75s/8.75s; to the agent 0.01s/0.01s/0.01s; start 0.01s/0.01s/0.01s (p50/p95/max of 3 VMs)"; steps != want {
		t.Errorf("steps:\n got %s\nwant %s", steps, want)
	}
}
