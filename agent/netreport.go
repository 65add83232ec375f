package agent

import (
	"fmt"
	"strings"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// netIssue is one thing wrong with the host's tenant networks: a reason
// of the Host's NetworkReady condition (api.Network*) and what is wrong.
type netIssue struct {
	Reason, Message string
}

// netReport turns what the network controller found at each Apply into
// the Host's NetworkReady condition and the events that say each problem
// once: a problem that lasts is not said again at every Apply, one that
// is fixed clears the condition (and says so once), and one that comes
// back later is said again.
type netReport struct {
	said  map[netIssue]bool // the problems of the last update
	ready bool              // the condition was True last time
	first bool              // no update yet
}

func newNetReport() *netReport { return &netReport{said: map[netIssue]bool{}, first: true} }

// netReportShown is how many problems the condition's message spells
// out; the events name every one.
const netReportShown = 3

// update takes the problems of an Apply and returns the condition to
// publish, the problems to say (new since the last update) and whether
// to say that all problems are gone.
func (r *netReport) update(issues []netIssue, now time.Time) (cond api.Condition, fresh []netIssue, resolved bool) {
	seen := map[netIssue]bool{}
	var uniq []netIssue
	for _, i := range issues {
		if !seen[i] {
			seen[i] = true
			uniq = append(uniq, i)
		}
	}
	for _, i := range uniq {
		if !r.said[i] {
			fresh = append(fresh, i)
		}
	}
	cond = api.Condition{Type: api.ConditionNetworkReady, LastTransitionTime: &now}
	if len(uniq) == 0 {
		cond.Status, cond.Reason = api.ConditionTrue, api.NetworkApplied
		cond.Message = "the host carries its tenant networks as the API says"
		resolved = !r.first && !r.ready
	} else {
		cond.Status = api.ConditionFalse
		cond.Reason = worstReason(uniq)
		var msgs []string
		for _, i := range uniq[:min(len(uniq), netReportShown)] {
			msgs = append(msgs, i.Message)
		}
		cond.Message = strings.Join(msgs, "; ")
		if len(uniq) > netReportShown {
			cond.Message += fmt.Sprintf("; and %d more (the Host's events name each)", len(uniq)-netReportShown)
		}
	}
	r.said, r.ready, r.first = seen, len(uniq) == 0, false
	return cond, fresh, resolved
}

// worstReason is the condition's reason: what keeps most from working
// first (a failed Apply leaves whole networks out).
func worstReason(issues []netIssue) string {
	for _, want := range []string{api.NetworkApplyFailed, api.NetworkDHCPFailed, api.NetworkDNSFailed} {
		for _, i := range issues {
			if i.Reason == want {
				return want
			}
		}
	}
	return issues[0].Reason
}

// netBackoff is how long the network controller waits before it tries a
// failed Apply again on its own (a change in the API tries at once): it
// doubles from netBackoffMin with every failure in a row, up to
// netResync.
func netBackoff(failures int) time.Duration {
	d := netBackoffMin
	for i := 1; i < failures && d < netResync; i++ {
		d *= 2
	}
	return min(d, netResync)
}

const netBackoffMin = 500 * time.Millisecond
