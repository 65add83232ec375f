// Package flock serialises processes on a directory with flock(2): the
// lock leaves no file behind and goes with the process, however it ends.
// The compute driver locks a VM's directory to start it; the sandbox locks
// its directory while it changes sandbox.json.
package flock

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"
)

// ErrBusy is wrapped by the error Lock returns when ctx ended while
// another holder kept the lock.
var ErrBusy = errors.New("held by another process")

// Lock takes an exclusive lock on dir, polling every poll until it is
// free or ctx ends. unlock releases it.
func Lock(ctx context.Context, dir string, poll time.Duration) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, errors.Join(ErrBusy, ctx.Err())
		case <-time.After(poll):
		}
	}
}
