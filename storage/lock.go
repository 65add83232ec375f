package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// lockPoll is how often lockFile tries again for a lock another process
// holds. flock cannot wait and watch a context at once, so it polls.
const lockPoll = 100 * time.Millisecond

// lockFile takes an exclusive flock on path, creating the file if need be,
// waiting while another process (or another open of the file in this one)
// holds it. Lock files are never deleted: deleting one that another
// process has opened and is waiting on would let two processes think they
// hold the lock.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	for {
		unlock, err := tryLockFile(path)
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return unlock, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for lock %s, held by another fetch of the image: %w", path, ctx.Err())
		case <-time.After(lockPoll):
		}
	}
}

// tryLockFile is lockFile without the waiting: it fails with
// syscall.EWOULDBLOCK if the lock is held.
func tryLockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, err
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Closing the file releases the lock.
	return func() { f.Close() }, nil
}
