package v1alpha1

import (
	"fmt"
	"sort"
	"strings"
)

// A Machine's lifecycle, as the machines controller (which writes its
// phase and conditions) and the boot service (which decides what its next
// network boot does) both read it: which profile it boots, whether it may
// boot it yet, and whether its installer has finished. Pure functions of
// the objects, so the two always agree.

// Reasons a profile match fails; they are also the reasons of the
// machine's ProfileMatched=False condition.
const (
	// ReasonNoMatch: no profile selects the machine.
	ReasonNoMatch = "NoMatch"
	// ReasonProfileConflict: several profiles select it equally.
	ReasonProfileConflict = "ProfileConflict"
	// ReasonProfileNotFound: spec.profile names a profile that does not exist.
	ReasonProfileNotFound = "ProfileNotFound"
)

// ProfileMatchError says why a machine has no profile.
type ProfileMatchError struct {
	// Reason is ReasonNoMatch, ReasonProfileConflict or
	// ReasonProfileNotFound.
	Reason string
	// Profiles are the tied profiles (ReasonProfileConflict), the missing
	// one (ReasonProfileNotFound), or those whose selector picks the
	// machine but that cannot boot its architecture (ReasonNoMatch).
	Profiles []string
	// Specificity and Priority of the tied profiles
	// (ReasonProfileConflict).
	Specificity, Priority int
	Message               string
}

func (e *ProfileMatchError) Error() string { return e.Message }

// Specificity says how narrowly a selector picks machines:
//
//	specificity = 100 if the selector lists MACs
//	            + 10 × the number of label requirements (counted up to 9)
//	            + 1 if it lists architectures
//	            + 1 if it lists sites
//
// Read it as digits: hundreds say the machine is named by MAC, tens how
// many labels it must carry, units whether architecture and site narrow
// it further. So a MAC beats any labels, one more label beats any
// architecture and site, and an empty selector (a catch-all) has 0.
func (sel MachineSelector) Specificity() int {
	s := 10 * min(len(sel.Labels), 9)
	if len(sel.MACs) > 0 {
		s += 100
	}
	if len(sel.Architectures) > 0 {
		s++
	}
	if len(sel.Sites) > 0 {
		s++
	}
	return s
}

// MatchProfile returns the profile machine m boots. A machine that names
// a profile in spec.profile gets that one, whatever the selectors say; it
// is an error if the profile does not exist. Otherwise every profile whose
// selector matches the machine (MachineSelector.Matches), that is not
// being deleted, and that can boot the machine's architecture (a variant
// for it or a default boot; not checked while the architecture is
// unknown) is a candidate, and the most specific candidate wins
// (MachineSelector.Specificity). Between equally specific candidates the
// higher spec.priority wins. Two or more candidates equal in both are a
// conflict, never settled by name:
//
//	machine node1 matches profiles a and b equally (specificity 2, priority 0): make one more specific or set priority
//
// It fails with a *ProfileMatchError when the named profile does not
// exist, when nothing matches, or when the best candidates tie.
func MatchProfile(m *Machine, profiles []*MachineProfile) (*MachineProfile, error) {
	name := m.Metadata.Name
	if want := m.Spec.Profile; want != "" {
		for _, p := range profiles {
			if p.Metadata.Name == want {
				return p, nil
			}
		}
		return nil, &ProfileMatchError{Reason: ReasonProfileNotFound, Profiles: []string{want},
			Message: fmt.Sprintf("machine %s names profile %s (spec.profile), which does not exist: create it or clear spec.profile", name, want)}
	}
	type candidate struct {
		p           *MachineProfile
		specificity int
	}
	var cands []candidate
	var cannotBoot []string
	for _, p := range profiles {
		if p.Metadata.DeletionTimestamp != nil || !p.Spec.Selector.Matches(m) {
			continue
		}
		if m.Spec.Architecture != "" {
			if _, ok := p.Spec.BootFor(m.Spec.Architecture); !ok {
				cannotBoot = append(cannotBoot, p.Metadata.Name)
				continue
			}
		}
		cands = append(cands, candidate{p, p.Spec.Selector.Specificity()})
	}
	if len(cands) == 0 {
		msg := fmt.Sprintf("machine %s matches no profile", name)
		if len(cannotBoot) > 0 {
			sort.Strings(cannotBoot)
			one := len(cannotBoot) == 1
			msg += fmt.Sprintf(" (%s %s %s it but %s no boot for %s)", pick(one, "profile", "profiles"),
				andList(cannotBoot), pick(one, "selects", "select"), pick(one, "has", "have"), m.Spec.Architecture)
		}
		msg += ": give it labels a profile selects, name one in spec.profile, or add a profile that selects it"
		return nil, &ProfileMatchError{Reason: ReasonNoMatch, Profiles: cannotBoot, Message: msg}
	}
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if a.specificity != b.specificity {
			return a.specificity > b.specificity
		}
		if a.p.Spec.Priority != b.p.Spec.Priority {
			return a.p.Spec.Priority > b.p.Spec.Priority
		}
		return a.p.Metadata.Name < b.p.Metadata.Name
	})
	best := cands[0]
	tied := []string{best.p.Metadata.Name}
	for _, c := range cands[1:] {
		if c.specificity != best.specificity || c.p.Spec.Priority != best.p.Spec.Priority {
			break
		}
		tied = append(tied, c.p.Metadata.Name)
	}
	if len(tied) > 1 {
		return nil, &ProfileMatchError{Reason: ReasonProfileConflict, Profiles: tied, Specificity: best.specificity, Priority: best.p.Spec.Priority,
			Message: fmt.Sprintf("machine %s matches profiles %s equally (specificity %d, priority %d): make one more specific or set priority",
				name, andList(tied), best.specificity, best.p.Spec.Priority)}
	}
	return best.p, nil
}

// andList writes "a", "a and b", "a, b and c".
func andList(xs []string) string {
	if len(xs) <= 1 {
		return strings.Join(xs, "")
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " and " + xs[len(xs)-1]
}

func pick(one bool, singular, plural string) string {
	if one {
		return singular
	}
	return plural
}

// The predicates below are functions rather than methods of Machine:
// Machine is an alias of an instance of the generic Resource, which
// takes no methods of its own.

// MachineMayBoot reports whether m may boot profile p: approved by hand
// (spec.approved) or by the profile's autoApprove.
func MachineMayBoot(m *Machine, p *MachineProfile) bool {
	return m.Spec.Approved || (p != nil && p.Spec.AutoApprove)
}

// MachineReinstallPending reports whether a reinstall was asked for after
// the machine was last installed (spec.reinstallRequested after
// status.installedAt).
func MachineReinstallPending(m *Machine) bool {
	r, at := m.Spec.ReinstallRequested, m.Status.InstalledAt
	return r != nil && at != nil && r.After(*at)
}

// MachineInstallDone reports whether m's installer has reported success and
// no reinstall was asked for since.
func MachineInstallDone(m *Machine) bool {
	return m.Status.InstalledAt != nil && !MachineReinstallPending(m)
}
