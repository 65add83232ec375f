package client_test

import (
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// TestText: Text returns a non-JSON answer as it is (the server's
// metrics), and an error answer as the server's Status.
func TestText(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	// The second read counts the first.
	var text string
	for range 2 {
		var err error
		if text, err = env.Admin.Text(ctx, "/metrics"); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(text, "hearth_api_request_duration_seconds_bucket") {
		t.Errorf("/metrics as text has no request latencies:\n%.500s", text)
	}
	if _, err := env.Admin.Text(ctx, "/api/v1alpha1/nothing-here"); !api.IsNotFound(err) {
		t.Errorf("a missing path: %v, want NotFound", err)
	}
}
