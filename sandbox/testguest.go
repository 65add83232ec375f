package sandbox

import (
	"context"

	"hearth.dev/hearth/testguest"
)

// buildTestGuest builds the test guest, or finds it in the build cache
// (hearth/testguest under root's cache directory, or
// $HEARTH_TESTGUEST_DIR), and returns its kernel and initrd.
func buildTestGuest(ctx context.Context) (kernel, initrd string, err error) {
	g, err := testguest.Build(ctx, "")
	return g.Kernel, g.Initrd, err
}
