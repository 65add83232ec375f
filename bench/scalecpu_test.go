package bench

import (
	"testing"
	"time"
)

// TestServerCPUSince: the servers' CPU between two samples counts only
// the servers alive at both, so a leader killed in between does not
// take its CPU so far out of the figure (which came out negative).
func TestServerCPUSince(t *testing.T) {
	a := sample{serverCPU: map[string]time.Duration{"s1": 10 * time.Second, "s2": 40 * time.Second, "s3": 5 * time.Second}}
	b := sample{serverCPU: map[string]time.Duration{"s1": 12 * time.Second, "s3": 8 * time.Second}} // s2 killed
	if got, want := serverCPUSince(a, b), 5*time.Second; got != want {
		t.Errorf("serverCPUSince = %s, want %s", got, want)
	}
	if got := serverCPUSince(sample{}, b); got != 0 {
		t.Errorf("serverCPUSince from an empty sample = %s, want 0", got)
	}
}
