package cli

import (
	"context"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

// follow watches kind from resourceVersion rv and calls show for every
// change until ctx ends (then it returns nil). A broken watch resumes from
// the last resourceVersion it saw; when the server answers that the
// version is gone (compacted), relist reads the current state, shows what
// it needs to, and returns the version to continue from.
func follow(ctx context.Context, c *client.Client, kind, tenant string, o client.ListOptions, rv string,
	show func(client.Event), relist func(context.Context) (string, error)) error {
	backoff := 100 * time.Millisecond
	retry := func(err error) error {
		if permanent(err) {
			return err
		}
		pause(ctx, backoff)
		backoff = min(backoff*2, 5*time.Second)
		return nil
	}
	for ctx.Err() == nil {
		if rv == "" {
			next, err := relist(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if err := retry(err); err != nil {
					return err
				}
				continue
			}
			rv = next
		}
		o.ResourceVersion = rv
		events, werr, err := c.WatchOnce(ctx, kind, tenant, o)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if api.IsGone(err) {
				rv = ""
				continue
			}
			if err := retry(err); err != nil {
				return err
			}
			continue
		}
		backoff = 100 * time.Millisecond
		for ev := range events {
			if ev.ResourceVersion != "" {
				rv = ev.ResourceVersion
			}
			if ev.Object != nil {
				show(ev)
			}
		}
		if err := werr(); err != nil && ctx.Err() == nil {
			if api.IsGone(err) {
				rv = ""
				continue
			}
			if err := retry(err); err != nil {
				return err
			}
		}
	}
	return nil
}

// permanent reports errors that retrying a watch will not fix.
func permanent(err error) bool {
	switch api.ReasonOf(err) {
	case api.ReasonUnauthorized, api.ReasonForbidden, api.ReasonBadRequest, api.ReasonNotFound, api.ReasonInvalid:
		return true
	}
	return false
}

// pause sleeps for d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
