package v1alpha1

import (
	"fmt"
	"slices"
	"strings"
)

// Selector is a label query as clients send it in ?labelSelector= and
// `hearth get -l`, in the syntax kubectl users know:
// "app=web,tier!=db,env in (prod,staging),canary,!legacy".
type Selector []requirement

type requirement struct {
	key    string
	op     string // "=", "!=", "in", "notin", "exists", "!exists"
	values []string
}

// ParseSelector parses a label query; the empty string matches everything.
func ParseSelector(s string) (Selector, error) {
	var sel Selector
	s = strings.TrimSpace(s)
	for len(s) > 0 {
		// A comma inside "in (a,b)" does not end the term.
		depth, end := 0, len(s)
		for i, c := range s {
			if c == '(' {
				depth++
			} else if c == ')' {
				depth--
			} else if c == ',' && depth == 0 {
				end = i
				break
			}
		}
		term := strings.TrimSpace(s[:end])
		s = strings.TrimSpace(strings.TrimPrefix(s[end:], ","))
		r, err := parseRequirement(term)
		if err != nil {
			return nil, err
		}
		sel = append(sel, r)
	}
	return sel, nil
}

func parseRequirement(t string) (requirement, error) {
	bad := func() (requirement, error) {
		return requirement{}, fmt.Errorf("label selector term %q is not valid (want key=value, key!=value, key in (a,b), key notin (a,b), key or !key)", t)
	}
	cut := func(sep, op string) (requirement, error) {
		k, v, _ := strings.Cut(t, sep)
		if strings.TrimSpace(k) == "" {
			return bad()
		}
		return requirement{strings.TrimSpace(k), op, []string{strings.TrimSpace(v)}}, nil
	}
	switch {
	case t == "":
		return bad()
	case strings.Contains(t, "!="):
		return cut("!=", "!=")
	case strings.Contains(t, "=="):
		return cut("==", "=")
	case strings.Contains(t, "="):
		return cut("=", "=")
	case strings.HasSuffix(t, ")"):
		open := strings.Index(t, "(")
		if open < 0 {
			return bad()
		}
		head := strings.Fields(t[:open])
		if len(head) != 2 || (head[1] != "in" && head[1] != "notin") {
			return bad()
		}
		var vals []string
		for _, v := range strings.Split(t[open+1:len(t)-1], ",") {
			vals = append(vals, strings.TrimSpace(v))
		}
		return requirement{head[0], head[1], vals}, nil
	case strings.HasPrefix(t, "!"):
		return requirement{strings.TrimSpace(t[1:]), "!exists", nil}, nil
	case !strings.ContainsAny(t, " ()"):
		return requirement{t, "exists", nil}, nil
	}
	return bad()
}

// Matches reports whether labels satisfy every term of the query.
func (sel Selector) Matches(labels map[string]string) bool {
	for _, r := range sel {
		v, ok := labels[r.key]
		switch r.op {
		case "=":
			if !ok || v != r.values[0] {
				return false
			}
		case "!=":
			if ok && v == r.values[0] {
				return false
			}
		case "in":
			if !ok || !slices.Contains(r.values, v) {
				return false
			}
		case "notin":
			if ok && slices.Contains(r.values, v) {
				return false
			}
		case "exists":
			if !ok {
				return false
			}
		case "!exists":
			if ok {
				return false
			}
		}
	}
	return true
}
