package sandbox

import (
	"context"
	"errors"
)

// buildTestGuest builds the test guest and returns its kernel and initrd.
//
// TODO(testguest): call testguest.Build(ctx, "") from
// hearth.dev/hearth/testguest once that package exists:
//
//	g, err := testguest.Build(ctx, "")
//	return g.Kernel, g.Initrd, err
func buildTestGuest(ctx context.Context) (kernel, initrd string, err error) {
	return "", "", errors.New("this build of hearth cannot build the test guest yet (package testguest is missing); run up with --test-guest=false")
}
