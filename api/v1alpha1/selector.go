package v1alpha1

import (
	"sort"
	"strings"
)

// LabelSelector selects objects whose labels include every key and value
// it lists. An empty selector selects everything, so kinds that must not
// select everything by accident check for it in their validation.
type LabelSelector map[string]string

// Matches reports whether labels has every key and value of the selector.
func (s LabelSelector) Matches(labels map[string]string) bool {
	for k, v := range s {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// String writes the selector as k=v pairs sorted by key, the way tables and
// messages show it.
func (s LabelSelector) String() string {
	parts := make([]string, 0, len(s))
	for k, v := range s {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
