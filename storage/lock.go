package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"hearth.dev/hearth/flock"
)

// lockPoll is how often lockFile tries again for a lock another process
// holds.
const lockPoll = 100 * time.Millisecond

// lockFile takes an exclusive lock on path (see flock), waiting while
// another fetch (in this process or another) holds it.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	unlock, err = flock.Lock(ctx, path, lockPoll)
	if errors.Is(err, flock.ErrBusy) {
		return nil, fmt.Errorf("waiting for lock %s, held by another fetch of the image: %w", path, ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return unlock, nil
}
