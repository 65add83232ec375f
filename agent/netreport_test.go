package agent

import (
	"reflect"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TestNetReport follows the Host's NetworkReady condition and the events
// through a series of Applies: each problem is said once while it lasts,
// the condition names the worst, and a fix clears it and says so once.
func TestNetReport(t *testing.T) {
	applyErr := netIssue{api.NetworkApplyFailed, "applying the host's network state: network red/net (VNI 4096): external device eth9: not found"}
	noVNI := netIssue{api.NetworkInvalid, "Network red/other: has no VNI yet"}
	dhcp := netIssue{api.NetworkDHCPFailed, "subnet red/one: its DHCP server cannot start: address in use"}
	steps := []struct {
		name         string
		issues       []netIssue
		wantStatus   api.ConditionStatus
		wantReason   string
		wantFresh    []netIssue
		wantResolved bool
	}{
		{"first apply, all well", nil, api.ConditionTrue, api.NetworkApplied, nil, false},
		{"a network without a VNI", []netIssue{noVNI}, api.ConditionFalse, api.NetworkInvalid, []netIssue{noVNI}, false},
		{"the same again says nothing new", []netIssue{noVNI, noVNI}, api.ConditionFalse, api.NetworkInvalid, nil, false},
		{"an apply failure is the worst", []netIssue{noVNI, dhcp, applyErr}, api.ConditionFalse, api.NetworkApplyFailed, []netIssue{dhcp, applyErr}, false},
		{"the apply is fixed", []netIssue{noVNI, dhcp}, api.ConditionFalse, api.NetworkDHCPFailed, nil, false},
		{"all fixed", nil, api.ConditionTrue, api.NetworkApplied, nil, true},
		{"still fixed says nothing", nil, api.ConditionTrue, api.NetworkApplied, nil, false},
		{"a problem that comes back is said again", []netIssue{applyErr}, api.ConditionFalse, api.NetworkApplyFailed, []netIssue{applyErr}, false},
	}
	r := newNetReport()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for _, s := range steps {
		cond, fresh, resolved := r.update(s.issues, now)
		if cond.Type != api.ConditionNetworkReady || cond.Status != s.wantStatus || cond.Reason != s.wantReason {
			t.Errorf("%s: condition %s=%s (%s), want NetworkReady=%s (%s)", s.name, cond.Type, cond.Status, cond.Reason, s.wantStatus, s.wantReason)
		}
		for _, i := range s.issues {
			if !strings.Contains(cond.Message, i.Message) {
				t.Errorf("%s: message %q lacks %q", s.name, cond.Message, i.Message)
			}
		}
		if !reflect.DeepEqual(fresh, s.wantFresh) {
			t.Errorf("%s: said %v, want %v", s.name, fresh, s.wantFresh)
		}
		if resolved != s.wantResolved {
			t.Errorf("%s: resolved %v, want %v", s.name, resolved, s.wantResolved)
		}
	}
}

// TestNetReportMessageBounded: many problems make a message of the first
// few and a count, not a wall of text.
func TestNetReportMessageBounded(t *testing.T) {
	var issues []netIssue
	for i := range 10 {
		issues = append(issues, netIssue{api.NetworkInvalid, "Network red/n" + string(rune('a'+i)) + ": has no VNI yet"})
	}
	cond, fresh, _ := newNetReport().update(issues, time.Now())
	if len(fresh) != 10 {
		t.Errorf("said %d problems, want all 10 (one event each)", len(fresh))
	}
	if !strings.Contains(cond.Message, "and 7 more") || strings.Contains(cond.Message, "red/nd") {
		t.Errorf("message %q: want the first %d problems and \"and 7 more\"", cond.Message, netReportShown)
	}
}

func TestNetBackoff(t *testing.T) {
	for _, c := range []struct {
		failures int
		want     time.Duration
	}{{1, 500 * time.Millisecond}, {2, time.Second}, {3, 2 * time.Second}, {5, 8 * time.Second}, {6, netResync}, {50, netResync}} {
		if got := netBackoff(c.failures); got != c.want {
			t.Errorf("netBackoff(%d) = %s, want %s", c.failures, got, c.want)
		}
	}
}

// TestHostConditionsCarryNetworkReady: the network controller's condition
// goes out with the host checks' at the next heartbeat, and only a real
// change marks it to be written.
func TestHostConditionsCarryNetworkReady(t *testing.T) {
	h := &hostChecks{}
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	c := api.Condition{Type: api.ConditionNetworkReady, Status: api.ConditionFalse, Reason: api.NetworkApplyFailed, Message: "x", LastTransitionTime: &t0}
	h.setCondition(c)
	if _, changed := h.phase(); !changed {
		t.Fatal("a new condition did not mark the status to be written")
	}
	_, conds := h.status(t0)
	if got := conds[len(conds)-1]; got.Type != api.ConditionNetworkReady || got.Reason != api.NetworkApplyFailed {
		t.Fatalf("heartbeat conditions %+v lack NetworkReady", conds)
	}
	t1 := t0.Add(time.Minute)
	c.LastTransitionTime = &t1
	h.setCondition(c)
	if _, changed := h.phase(); changed {
		t.Error("the same condition again marked the status to be written")
	}
	c.Message = "y"
	h.setCondition(c)
	_, conds = h.status(t1)
	if got := conds[len(conds)-1]; got.Message != "y" || !got.LastTransitionTime.Equal(t0) {
		t.Errorf("changed message: got %q since %v, want \"y\" since %v (same status keeps its transition time)", got.Message, got.LastTransitionTime, t0)
	}
}
