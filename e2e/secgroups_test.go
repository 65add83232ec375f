package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/server/servertest"
)

// TestSandboxSecurityGroups applies e2e/testdata/secgroups.yaml to a
// sandbox of two hosts and checks in real guests that a server whose
// group allows TCP 80 is reached on 80 and not on 8081, from a VM on its
// own host and from one on the other; that a rule for 8081 added later
// opens it for both; and that describe vm shows the server's effective
// rules.
func TestSandboxSecurityGroups(t *testing.T) {
	s := upSandbox(t, 2)
	manifest, err := os.ReadFile("testdata/secgroups.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s.must(string(manifest), "apply", "-f", "-")

	// last is the latest NETTEST line of a client's console after line
	// number after, as "p80=… p8081=…".
	last := func(vm string, after int) (int, string) {
		out, _ := s.hearth("", "logs", "vm/"+vm, "--tenant", "sg")
		n, got := 0, ""
		// Whole lines only: the guest may be writing the last one.
		lines := strings.Split(out, "\n")
		for _, line := range lines[:len(lines)-1] {
			var i int
			var a, b string
			if k, _ := fmt.Sscanf(strings.TrimSpace(line), "NETTEST %d %s %s", &i, &a, &b); k == 3 && i > after {
				n, got = i, a+" "+b
			}
		}
		return n, got
	}
	expect := func(want string, within time.Duration) {
		t.Helper()
		for _, vm := range []string{"near", "far"} {
			servertest.Eventually(t, within, func() error {
				if _, got := last(vm, 0); got != want {
					out, _ := s.hearth("", "logs", "vm/"+vm, "--tenant", "sg")
					return fmt.Errorf("%s's latest check: %q, want %q:\n%s", vm, got, want, tail(out))
				}
				return nil
			})
		}
	}
	// Three TCG guests boot at once.
	expect("p80=server-80 p8081=none", 8*time.Minute)

	out := s.must("", "describe", "vm", "server", "--tenant", "sg")
	for _, w := range []string{"Security Rules:", "web", "ingress", "tcp", "80", "denied unless allowed above"} {
		if !strings.Contains(out, w) {
			t.Errorf("describe vm server lacks %q:\n%s", w, out)
		}
	}

	open := strings.Replace(string(manifest), `  - {direction: ingress, protocol: tcp, ports: "80"}`,
		`  - {direction: ingress, protocol: tcp, ports: "80"}`+"\n"+`  - {direction: ingress, protocol: tcp, ports: "8081"}`, 1)
	s.must(open, "apply", "-f", "-")
	// The host applies it within a second (the data plane's tests and
	// benchmarks time it); the guests' loops are slower under TCG.
	expect("p80=server-80 p8081=server-8081", 2*time.Minute)
	if out := s.must("", "describe", "vm", "server", "--tenant", "sg"); !strings.Contains(out, "8081") {
		t.Errorf("describe vm server does not show the new rule:\n%s", out)
	}
}
