package store

import "context"

// A dry run goes through a write exactly as far as the write itself: the
// object is prepared, checked and admitted, and the transaction's
// comparisons (the name is free, the object is at the revision read, the
// guards of the admission checks still hold, an allocation is still free)
// are evaluated by etcd, but none of its writes are sent. etcd serves a
// transaction without writes as a read, so a dry run changes nothing, not
// even the revision, and fails where the real write would.

type dryRunKey struct{}

// WithDryRun returns a context in which Create, Update and Delete write
// nothing.
func WithDryRun(ctx context.Context) context.Context {
	return context.WithValue(ctx, dryRunKey{}, true)
}

// IsDryRun reports whether writes in ctx are dry runs.
func IsDryRun(ctx context.Context) bool {
	d, _ := ctx.Value(dryRunKey{}).(bool)
	return d
}
