package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"hearth.dev/hearth/doctor"
)

// TestDoctorCommand: a boot service machine without iPXE fails with the
// package to install and a verdict, exits with an error, and says the
// same in JSON; flags that make no sense are refused.
func TestDoctorCommand(t *testing.T) {
	ctx := context.Background()
	empty := t.TempDir()
	out, _, err := runCLI(ctx, t, "", "doctor", "--role", "boot", "--ipxe-dir", empty, "--data-dir", t.TempDir())
	if err == nil {
		t.Fatalf("doctor passed without iPXE:\n%s", out)
	}
	for _, want := range []string{"boot:\n", "FAIL  ipxe", "→ apt-get install ipxe", "not ready for boot"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = runCLI(ctx, t, "", "doctor", "--role", "boot", "--ipxe-dir", empty, "--data-dir", t.TempDir(), "-o", "json")
	var rep doctor.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	if rep.Worst() != doctor.Fail || len(rep.Findings[doctor.Boot]) == 0 {
		t.Errorf("-o json: worst %s, findings %+v", rep.Worst(), rep.Findings)
	}
	for _, args := range [][]string{
		{"doctor", "--data-dir", "/x"},
		{"doctor", "--role", "router"},
		{"doctor", "-o", "yaml"},
	} {
		if _, _, err := runCLI(ctx, t, "", args...); err == nil {
			t.Errorf("%v was accepted", args)
		}
	}
}
