package compute

import (
	"context"
	"sync"
	"testing"
	"time"

	"hearth.dev/hearth/testguest"
)

// Markers the test guest prints on its serial console.
const (
	guestBooted   = testguest.Marker + " booted"
	guestReady    = testguest.Marker + " ready"
	guestPowerOff = testguest.Marker + " poweroff"
	// The guest prints its seed= line after it started acpid, so from
	// then on it honours the power button.
	guestSeed = testguest.Marker + " seed="
)

var (
	guestOnce sync.Once
	guest     testguest.Guest
	guestErr  error
)

// buildGuest builds (or finds in the cache) the test guest, once per test
// binary.
func buildGuest(t *testing.T) testguest.Guest {
	t.Helper()
	guestOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		guest, guestErr = testguest.Build(ctx, "")
	})
	if guestErr != nil {
		t.Fatalf("%v", guestErr)
	}
	return guest
}
