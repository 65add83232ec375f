package agent

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/doctor"
)

// hostCheckEvery is how often the agent checks its host again, so a fix
// (a package installed, a module loaded) shows without a restart.
const hostCheckEvery = 10 * time.Minute

// hostChecks runs `hearth doctor --role agent` inside the agent, at start
// and every hostCheckEvery, and turns what it finds into the Host's
// conditions: one per kind of check (doctor's Finding.Condition), True
// when every check of that kind passed, False with reason Failed or
// Warning and, in the message, what was found and what to do. A failure
// means this host cannot run VMs: Ready goes False (HostChecksFailed) and
// the phase NotReady, so the scheduler places nothing here and `hearth
// get hosts` says which checks failed.
type hostChecks struct {
	opts doctor.Options

	mu    sync.Mutex
	conds []api.Condition // without Ready
	fatal string          // why the host cannot run VMs; "" if it can
	// changed is set when a run's conditions differ from the last, so
	// the next heartbeat writes them.
	changed bool
	// others are conditions other parts of the agent own (the network
	// controller's NetworkReady), by type, written with the checks'.
	others map[string]api.Condition
}

func newHostChecks(cfg Config) *hostChecks {
	return &hostChecks{opts: doctor.Options{
		Roles:    []doctor.Role{doctor.Agent},
		DataDirs: map[doctor.Role]string{doctor.Agent: cfg.DataDir},
		// No ports: the agent holds its own. No server: it has
		// reached it already.
		Ports: map[doctor.Role][]string{},
		Skip:  []string{"server", "clock-skew"},
	}}
}

// run checks the host once.
func (h *hostChecks) run(ctx context.Context) {
	rep := doctor.Run(ctx, h.opts)
	if ctx.Err() != nil {
		return
	}
	conds, fatal := hostConditions(rep.Findings[doctor.Agent], time.Now().UTC())
	for _, f := range rep.Findings[doctor.Agent] {
		if f.Status == doctor.Fail || f.Status == doctor.Warn {
			slog.Warn("host check", "check", f.Check, "status", f.Status.String(), "found", f.Message, "fix", f.Fix)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if fatal != h.fatal || !sameConditions(conds, h.conds) {
		h.changed = true
		// Keep when each condition last changed status.
		for i := range conds {
			for _, old := range h.conds {
				if old.Type == conds[i].Type && old.Status == conds[i].Status {
					conds[i].LastTransitionTime = old.LastTransitionTime
				}
			}
		}
		h.conds, h.fatal = conds, fatal
	}
}

// loop checks the host again every hostCheckEvery until ctx ends.
func (h *hostChecks) loop(ctx context.Context) {
	t := time.NewTicker(hostCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.run(ctx)
		}
	}
}

// status returns the phase, the Ready condition and the checks'
// conditions for a full heartbeat, and clears changed.
func (h *hostChecks) status(now time.Time) (phase string, conds []api.Condition) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.changed = false
	ready := api.Condition{Type: api.ConditionReady, Status: api.ConditionTrue, Reason: api.ReasonAgentHeartbeat,
		Message: "the agent is renewing its lease", LastTransitionTime: &now}
	phase = api.HostReady
	if h.fatal != "" {
		phase = api.HostNotReady
		ready.Status, ready.Reason = api.ConditionFalse, api.HostChecksFailed
		ready.Message = "this host cannot run VMs: " + h.fatal
	}
	conds = append([]api.Condition{ready}, h.conds...)
	for _, t := range slices.Sorted(maps.Keys(h.others)) {
		conds = append(conds, h.others[t])
	}
	return phase, conds
}

// setCondition sets a condition another part of the agent owns; the next
// heartbeat writes it if it changed (its transition time aside).
func (h *hostChecks) setCondition(c api.Condition) {
	h.mu.Lock()
	defer h.mu.Unlock()
	old, ok := h.others[c.Type]
	if ok && old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message {
		return
	}
	if ok && old.Status == c.Status {
		c.LastTransitionTime = old.LastTransitionTime
	}
	if h.others == nil {
		h.others = map[string]api.Condition{}
	}
	h.others[c.Type] = c
	h.changed = true
}

// phase is the phase the checks allow, and whether they changed since
// the last full heartbeat.
func (h *hostChecks) phase() (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fatal != "" {
		return api.HostNotReady, h.changed
	}
	return api.HostReady, h.changed
}

// hostConditions folds findings into one condition per kind of check,
// in the order doctor reports them, and says why the host cannot run VMs
// when a check failed.
func hostConditions(findings []doctor.Finding, now time.Time) ([]api.Condition, string) {
	type acc struct {
		worst doctor.Status
		found []string
	}
	var order []string
	byType := map[string]*acc{}
	var fatal []string
	for _, f := range findings {
		a := byType[f.Condition]
		if a == nil {
			a = &acc{}
			byType[f.Condition] = a
			order = append(order, f.Condition)
		}
		if f.Status > a.worst {
			a.worst, a.found = f.Status, nil
		}
		if f.Status == a.worst {
			line := f.Check + ": " + f.Message
			if f.Fix != "" && f.Status != doctor.OK {
				line += " (fix: " + f.Fix + ")"
			}
			a.found = append(a.found, line)
		}
		if f.Status == doctor.Fail {
			fatal = append(fatal, fmt.Sprintf("%s: %s (fix: %s)", f.Check, f.Message, f.Fix))
		}
	}
	conds := make([]api.Condition, 0, len(order))
	for _, t := range order {
		a := byType[t]
		c := api.Condition{Type: t, Status: api.ConditionFalse, Message: strings.Join(a.found, "; "), LastTransitionTime: &now}
		switch a.worst {
		case doctor.OK:
			c.Status, c.Reason = api.ConditionTrue, api.HostCheckPassed
		case doctor.Skipped:
			c.Status, c.Reason = api.ConditionUnknown, api.HostCheckSkipped
		case doctor.Warn:
			c.Reason = api.HostCheckWarning
		case doctor.Fail:
			c.Reason = api.HostCheckFailed
		}
		conds = append(conds, c)
	}
	return conds, strings.Join(fatal, "; ")
}

func sameConditions(a, b []api.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Type != b[i].Type || a[i].Status != b[i].Status || a[i].Reason != b[i].Reason || a[i].Message != b[i].Message {
			return false
		}
	}
	return true
}
