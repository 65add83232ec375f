// Package flock serialises processes on a directory or a file with
// flock(2): the lock goes with the process, however it ends. A lock
// belongs to the open file, so two goroutines of one process that each
// take it exclude each other as two processes do. The compute driver
// locks a VM's directory to start it; the sandbox locks its directory
// while it changes sandbox.json; the image cache locks a file per image
// while it fetches it; the test guest's builder a file per build.
//
// flock cannot wait and watch a context at once, so Lock polls.
package flock

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"
)

// ErrBusy is wrapped by the error Lock returns when ctx ended while
// another holder kept the lock, and by TryLock's when the lock is held.
var ErrBusy = errors.New("held by another process")

// Lock takes an exclusive lock on path, polling every poll until it is
// free or ctx ends. path is a directory, or a file, made if it does not
// exist. Lock files are never deleted: deleting one that another process
// has opened and waits on would let two processes think they hold the
// lock. unlock releases it.
func Lock(ctx context.Context, path string, poll time.Duration) (unlock func(), err error) {
	for {
		unlock, err := TryLock(path)
		if !errors.Is(err, ErrBusy) {
			return unlock, err
		}
		select {
		case <-ctx.Done():
			return nil, errors.Join(ErrBusy, ctx.Err())
		case <-time.After(poll):
		}
	}
}

// TryLock is Lock without the waiting: it fails with an error wrapping
// ErrBusy if the lock is held.
func TryLock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
	if errors.Is(err, syscall.EISDIR) {
		f, err = os.Open(path)
	}
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
			return nil, ErrBusy
		}
		return nil, &os.PathError{Op: "flock", Path: path, Err: err}
	}
	// Closing the file releases the lock.
	return func() { f.Close() }, nil
}
