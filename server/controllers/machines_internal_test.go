package controllers

import (
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TestMachineStatus covers the phase and conditions for each state,
// including those the end-to-end tests do not reach.
func TestMachineStatus(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { x := t0.Add(d); return &x }
	install := &api.MachineProfile{Metadata: api.ObjectMeta{Name: "debian"}, Spec: api.MachineProfileSpec{Install: true}}
	stateless := &api.MachineProfile{Metadata: api.ObjectMeta{Name: "ram"}, Spec: api.MachineProfileSpec{AutoApprove: true}}
	approvedAt := func(d time.Duration) []api.Condition {
		return []api.Condition{{Type: ConditionApproved, Status: api.ConditionTrue, Reason: "Approved", LastTransitionTime: at(d)}}
	}
	tests := []struct {
		name      string
		m         func(*api.Machine)
		p         *api.MachineProfile
		phase     string
		installed string // reason of the Installed condition; "" for none
		reported  string // reason of the Reported condition; "" for none
	}{
		{"no profile", func(m *api.Machine) { m.Spec.Approved = true }, nil, api.MachineDiscovered, "", ""},
		{"not approved", func(m *api.Machine) {}, install, api.MachineDiscovered, "NotInstalled", ""},
		{"approved, not booted", func(m *api.Machine) { m.Spec.Approved = true }, install, api.MachineApproved, "NotInstalled", ""},
		{"a boot before approval does not count", func(m *api.Machine) {
			m.Spec.Approved = true
			m.Status.Conditions = approvedAt(time.Hour)
			m.Status.LastBoot = at(time.Minute)
		}, install, api.MachineApproved, "NotInstalled", ""},
		{"booted after approval", func(m *api.Machine) {
			m.Spec.Approved = true
			m.Status.Conditions = approvedAt(time.Minute)
			m.Status.LastBoot = at(time.Hour)
		}, install, api.MachineProvisioning, "NotInstalled", ReasonWaitingForReport},
		{"installed", func(m *api.Machine) {
			m.Spec.Approved = true
			m.Status.InstalledAt = at(time.Hour)
		}, install, api.MachineInstalled, "Installed", "Reported"},
		{"installed but no longer approved", func(m *api.Machine) { m.Status.InstalledAt = at(time.Hour) }, install, api.MachineDiscovered, "Installed", ""},
		{"reinstall requested", func(m *api.Machine) {
			m.Spec.Approved = true
			m.Status.Conditions = approvedAt(0)
			m.Status.InstalledAt, m.Status.LastBoot = at(time.Hour), at(time.Hour)
			m.Spec.ReinstallRequested = at(2 * time.Hour)
		}, install, api.MachineApproved, "ReinstallRequested", ""},
		{"reinstalling", func(m *api.Machine) {
			m.Spec.Approved = true
			m.Status.Conditions = approvedAt(0)
			m.Status.InstalledAt = at(time.Hour)
			m.Spec.ReinstallRequested, m.Status.LastBoot = at(2*time.Hour), at(3*time.Hour)
		}, install, api.MachineProvisioning, "ReinstallRequested", ReasonWaitingForReport},
		{"reinstalled", func(m *api.Machine) {
			m.Spec.Approved = true
			m.Spec.ReinstallRequested = at(2 * time.Hour)
			m.Status.InstalledAt = at(4 * time.Hour)
		}, install, api.MachineInstalled, "Installed", "Reported"},
		{"stateless, auto-approved, not booted", func(m *api.Machine) {}, stateless, api.MachineApproved, "", ""},
		{"stateless booting", func(m *api.Machine) { m.Status.LastBoot = at(time.Hour) }, stateless, api.MachineProvisioning, "", ReasonWaitingForReport},
		{"stateless ready", func(m *api.Machine) {
			m.Status.LastBoot = at(time.Hour)
			m.Status.SSHHostKeys = []string{"ssh-ed25519 AAAA"}
		}, stateless, api.MachineReady, "", "Reported"},
		{"stateless, keys but no boot since approval", func(m *api.Machine) { m.Status.SSHHostKeys = []string{"ssh-ed25519 AAAA"} }, stateless, api.MachineApproved, "", ""},
		{"a stateless profile drops the Installed condition", func(m *api.Machine) {
			m.Status.Conditions = []api.Condition{{Type: ConditionInstalled, Status: api.ConditionTrue}}
		}, stateless, api.MachineApproved, "", ""},
		{"a machine that stops booting its profile drops the Reported condition", func(m *api.Machine) {
			m.Status.Conditions = []api.Condition{{Type: ConditionReported, Status: api.ConditionTrue, Reason: "Reported"}}
			m.Status.SSHHostKeys = []string{"ssh-ed25519 AAAA"}
		}, stateless, api.MachineApproved, "", ""},
	}
	for _, tt := range tests {
		m := &api.Machine{Metadata: api.ObjectMeta{Name: "node1", Generation: 3}, Spec: api.MachineSpec{MAC: "52:54:00:aa:bb:01"}}
		tt.m(m)
		var matchErr error
		if tt.p == nil {
			matchErr = &api.ProfileMatchError{Reason: api.ReasonNoMatch, Message: "machine node1 matches no profile"}
		}
		now := t0.Add(5 * time.Hour)
		if m.Status.Condition(ConditionApproved) == nil {
			now = t0 // approved "now", before any boot in the case
		}
		st := machineStatus(m, tt.p, matchErr, now)
		if st.Phase != tt.phase {
			t.Errorf("%s: phase %s, want %s", tt.name, st.Phase, tt.phase)
		}
		c := st.Condition(ConditionInstalled)
		if (c == nil) != (tt.installed == "") || (c != nil && c.Reason != tt.installed) {
			t.Errorf("%s: Installed condition %+v, want reason %q", tt.name, c, tt.installed)
		}
		r := st.Condition(ConditionReported)
		if (r == nil) != (tt.reported == "") || (r != nil && r.Reason != tt.reported) {
			t.Errorf("%s: Reported condition %+v, want reason %q", tt.name, r, tt.reported)
		}
		if r != nil && r.Reason == ReasonWaitingForReport {
			// It says when the machine booted, and how to report.
			for _, want := range []string{m.Status.LastBoot.UTC().Format(time.RFC3339), ".URLs.Report", ".Token", "docs/BOOT-TEMPLATES.md"} {
				if !strings.Contains(r.Message, want) {
					t.Errorf("%s: Reported message %q lacks %q", tt.name, r.Message, want)
				}
			}
		}
		if st.ObservedGeneration != 3 {
			t.Errorf("%s: observedGeneration %d", tt.name, st.ObservedGeneration)
		}
		if tt.p == nil {
			if pm := st.Condition(ConditionProfileMatched); pm == nil || pm.Status != api.ConditionFalse || pm.Reason != api.ReasonNoMatch || st.MatchedProfile != "" {
				t.Errorf("%s: ProfileMatched %+v, matched %q", tt.name, pm, st.MatchedProfile)
			}
		} else if st.MatchedProfile != tt.p.Metadata.Name {
			t.Errorf("%s: matched %q", tt.name, st.MatchedProfile)
		}
		// Level-triggered: what it computes from its own result is the same.
		m.Status = st
		if again := machineStatus(m, tt.p, matchErr, now.Add(time.Hour)); machineStatusChanged(st, again) {
			t.Errorf("%s: not idempotent:\n%+v\n%+v", tt.name, st, again)
		}
	}
}
