package profile

import (
	"fmt"
	"sort"
	"strings"

	api "hearth.dev/hearth/api/v1alpha1"
)

// Reasons a match fails. They are also the reasons of the machine's
// ProfileMatched=False condition.
const (
	// ReasonNoMatch: no profile selects the machine.
	ReasonNoMatch = "NoMatch"
	// ReasonConflict: several profiles select it equally.
	ReasonConflict = "ProfileConflict"
	// ReasonProfileNotFound: spec.profile names a profile that does not exist.
	ReasonProfileNotFound = "ProfileNotFound"
)

// MatchError says why a machine has no profile.
type MatchError struct {
	// Reason is ReasonNoMatch, ReasonConflict or ReasonProfileNotFound.
	Reason string
	// Profiles are the tied profiles (ReasonConflict), the missing one
	// (ReasonProfileNotFound), or those whose selector picks the machine
	// but that cannot boot its architecture (ReasonNoMatch).
	Profiles []string
	// Specificity and Priority of the tied profiles (ReasonConflict).
	Specificity, Priority int
	Message               string
}

func (e *MatchError) Error() string { return e.Message }

// Specificity says how narrowly a selector picks machines; see the
// package documentation for the rule.
func Specificity(sel api.MachineSelector) int {
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

// Match returns the profile machine m boots: the one spec.profile names,
// else the most specific matching profile, then the one of highest
// priority. It fails with a *MatchError when the named profile does not
// exist, when nothing matches, or when the best candidates tie.
func Match(m *api.Machine, profiles []*api.MachineProfile) (*api.MachineProfile, error) {
	name := m.Metadata.Name
	if want := m.Spec.Profile; want != "" {
		for _, p := range profiles {
			if p.Metadata.Name == want {
				return p, nil
			}
		}
		return nil, &MatchError{Reason: ReasonProfileNotFound, Profiles: []string{want},
			Message: fmt.Sprintf("machine %s names profile %s (spec.profile), which does not exist: create it or clear spec.profile", name, want)}
	}
	type candidate struct {
		p           *api.MachineProfile
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
		cands = append(cands, candidate{p, Specificity(p.Spec.Selector)})
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
		return nil, &MatchError{Reason: ReasonNoMatch, Profiles: cannotBoot, Message: msg}
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
		return nil, &MatchError{Reason: ReasonConflict, Profiles: tied, Specificity: best.specificity, Priority: best.p.Spec.Priority,
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
