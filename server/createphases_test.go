package server_test

import (
	"context"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// TestCreatePhases: a VM's create is timed once in each phase, a
// refused one only up to where it was refused, and other kinds not at
// all.
func TestCreatePhases(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := context.Background()
	c := env.Admin
	for _, o := range []api.Object{network("lab", "lan", ""), subnet("lab", "sub", "lan", "10.6.0.0/16")} {
		if _, err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Create(ctx, nicVM("lab", "web", api.VMNIC{Network: "lan"})); err != nil {
		t.Fatal(err)
	}
	// Refused by IPAM, in the write.
	if _, err := c.Create(ctx, nicVM("lab", "lost", api.VMNIC{Network: "nowhere"})); err == nil {
		t.Fatal("a VM on a network that does not exist was created")
	}
	text, err := c.GetRaw(ctx, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(string(text), "\n") {
		if rest, ok := strings.CutPrefix(line, `hearth_api_vm_create_phase_seconds_count{phase="`); ok {
			phase, n, _ := strings.Cut(rest, `"} `)
			got[phase] = n
		}
	}
	want := map[string]string{"read": "2", "admit": "2", "write": "1", "answer": "1"}
	for phase, n := range want {
		if got[phase] != n {
			t.Errorf("phase %s timed %q times, want %s (all: %v)", phase, got[phase], n, got)
		}
	}
}
