package agent

import (
	"maps"
	"slices"
	"testing"
)

// TestForgetFailedSends: the failed sends of a VM are forgotten (and only
// its own: a uid that begins with another is another VM's) once it is not
// moving away, so the record does not grow with every failed move.
func TestForgetFailedSends(t *testing.T) {
	v := &vmController{failedSends: map[string]string{
		"uid-a tcp:10.0.0.2:4000 2026-12-06 21:00:00 +0000 UTC": "not moved",
		"uid-a tcp:10.0.0.3:4001 2026-12-06 21:05:00 +0000 UTC": "not moved",
		"uid-ab tcp:10.0.0.2:4002":                              "not moved",
		"uid-b tcp:10.0.0.2:4003":                               "not moved",
	}}
	v.forgetFailedSends("uid-a")
	got := slices.Sorted(maps.Keys(v.failedSends))
	want := []string{"uid-ab tcp:10.0.0.2:4002", "uid-b tcp:10.0.0.2:4003"}
	if !slices.Equal(got, want) {
		t.Errorf("after forgetting uid-a: %q, want %q", got, want)
	}
}
