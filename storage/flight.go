package storage

import (
	"context"
	"sync"
)

// flight is one fetch of an image that every concurrent Ensure of that
// image waits for, instead of starting its own.
type flight struct {
	done      chan struct{}
	path, sum string // set before done is closed
	err       error
	cancel    context.CancelFunc
	waiters   int // guarded by ImageCache.mu

	mu     sync.Mutex // held while progress is reported
	nextID int
	subs   map[int]Progress
}

// report tells every waiter's Progress how the fetch goes.
func (f *flight) report(done, total int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.subs {
		p(done, total)
	}
}

// join runs fn for key unless it is already running, and waits for its
// result. fn runs on a context of its own, cancelled only when every
// caller waiting for it has given up: one caller's timeout must not fail
// the download others wait for.
func (c *ImageCache) join(ctx context.Context, key string, progress Progress,
	fn func(context.Context, Progress) (path, sum string, err error)) (string, string, error) {
	c.mu.Lock()
	f := c.flights[key]
	start := f == nil
	var fctx context.Context
	if start {
		var cancel context.CancelFunc
		fctx, cancel = context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{done: make(chan struct{}), cancel: cancel, subs: make(map[int]Progress)}
		if c.flights == nil {
			c.flights = make(map[string]*flight)
		}
		c.flights[key] = f
	}
	f.waiters++
	// Subscribe before the fetch starts, so the first caller hears it
	// start.
	f.mu.Lock()
	id := f.nextID
	f.nextID++
	f.subs[id] = progress
	f.mu.Unlock()
	c.mu.Unlock()

	if start {
		go func() {
			defer f.cancel()
			path, sum, err := fn(fctx, f.report)
			c.mu.Lock()
			if c.flights[key] == f {
				delete(c.flights, key)
			}
			f.path, f.sum, f.err = path, sum, err
			c.mu.Unlock()
			close(f.done)
		}()
	}

	select {
	case <-f.done:
		return f.path, f.sum, f.err
	case <-ctx.Done():
	}
	f.mu.Lock()
	delete(f.subs, id)
	f.mu.Unlock()
	c.mu.Lock()
	f.waiters--
	if f.waiters == 0 {
		// Nobody wants it any more. Stop, and let the next caller start
		// afresh (resuming what this one downloaded).
		f.cancel()
		if c.flights[key] == f {
			delete(c.flights, key)
		}
	}
	c.mu.Unlock()
	return "", "", ctx.Err()
}
