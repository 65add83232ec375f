package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Result says when to look at a key again even without a change.
type Result struct {
	// RequeueAfter, if positive, reconciles the key again after this long,
	// for state Hearth cannot watch (a VM's guest agent, a lease expiring).
	// It is ignored when Reconcile returns an error: the error's backoff
	// decides instead.
	RequeueAfter time.Duration
}

// Reconciler brings one key's actual state to its desired state.
//
// Reconcile is level-based: it is given only a key, not the event that
// caused it, and must read what is and what should be each time. It may be
// called any number of times for a key, including when nothing changed and
// after the object was deleted (then it cleans up), so it must be
// idempotent. It is never called for the same key by two workers at once.
// A non-nil error retries the key with backoff unless wrapped with Terminal.
type Reconciler interface {
	Reconcile(ctx context.Context, key string) (Result, error)
}

// ReconcilerFunc adapts a function to a Reconciler.
type ReconcilerFunc func(ctx context.Context, key string) (Result, error)

// Reconcile calls f(ctx, key).
func (f ReconcilerFunc) Reconcile(ctx context.Context, key string) (Result, error) {
	return f(ctx, key)
}

// TerminalError wraps an error that retrying will not fix, such as a spec
// that asks for something impossible: it is logged and not retried until
// the key is enqueued again (by a change or a resync).
type TerminalError struct {
	Err error
}

func (e *TerminalError) Error() string { return e.Err.Error() }
func (e *TerminalError) Unwrap() error { return e.Err }

// Terminal marks err as not worth retrying. Terminal(nil) is nil.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return &TerminalError{Err: err}
}

// IsTerminal reports whether err or any error it wraps was marked with
// Terminal.
func IsTerminal(err error) bool {
	var te *TerminalError
	return errors.As(err, &te)
}

// Controller runs a Reconciler over a Queue of keys.
//
// Watches call Enqueue when something a key depends on changed; List, if
// set, is called when Run starts and then every Resync to enqueue every key,
// which repairs drift that no watch saw (a hand-deleted bridge, a missed
// event) and re-adopts what a previous run left behind.
//
// Set the fields before calling Enqueue, EnqueueAfter, Stats or Run, and do
// not change them afterwards. A Controller runs once.
type Controller struct {
	// Name appears in logs as "controller".
	Name string
	// Reconciler is required.
	Reconciler Reconciler
	// Workers is how many keys are reconciled at once; less than 1 means 1.
	Workers int
	// Resync is how often List is called; zero calls it only at start.
	Resync time.Duration
	// List returns every key that should be reconciled. Optional, but
	// required when Resync is set.
	List func(ctx context.Context) ([]string, error)
	// SpreadResync spreads each resync's keys evenly over the Resync
	// period instead of queueing them all at once, so a controller of
	// many objects repairs drift as a trickle rather than a burst. The
	// first listing, at Run, is never spread.
	SpreadResync bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Clock defaults to RealClock.
	Clock Clock

	initOnce       sync.Once
	queue          *Queue
	clock          Clock
	log            *slog.Logger
	ran            atomic.Bool
	reconcileCount atomic.Int64
	errorCount     atomic.Int64
	latency        latency
}

// Stats is a snapshot of a Controller's counters, for metrics and status
// pages.
type Stats struct {
	// Reconciles counts calls of Reconcile.
	Reconciles int64
	// Errors counts calls that returned an error (terminal ones included)
	// or panicked, except errors returned while Run was shutting down.
	Errors int64
	// QueueDepth is how many keys are waiting for a worker now.
	QueueDepth int
}

func (c *Controller) init() {
	c.initOnce.Do(func() {
		c.clock = c.Clock
		if c.clock == nil {
			c.clock = RealClock{}
		}
		c.log = c.Logger
		if c.log == nil {
			c.log = slog.Default()
		}
		c.log = c.log.With("controller", c.Name)
		c.queue = NewQueue(QueueOptions{Clock: c.clock})
	})
}

// Enqueue asks for key to be reconciled: something it depends on may
// have changed. A key backing off after a failure waits for its retry,
// so a controller's own writes, seen by its own watches, never cut its
// backoff short. It may be called before Run; after Run has returned it
// does nothing.
func (c *Controller) Enqueue(key string) {
	c.init()
	c.queue.Add(key)
}

// EnqueueNow asks for key to be reconciled at once, even while it backs
// off: what it asks for changed (its spec or metadata, an object it names
// appeared or changed). Its failure count is kept until a reconcile
// succeeds. Call it for changes others make, never for the echo of the
// controller's own status write (client.Change.StatusOnly tells them
// apart).
func (c *Controller) EnqueueNow(key string) {
	c.init()
	c.queue.AddNow(key)
}

// EnqueueAfter asks for key to be reconciled once d has passed.
func (c *Controller) EnqueueAfter(key string, d time.Duration) {
	c.init()
	c.queue.AddAfter(key, d)
}

// Stats returns the controller's counters.
func (c *Controller) Stats() Stats {
	c.init()
	return Stats{
		Reconciles: c.reconcileCount.Load(),
		Errors:     c.errorCount.Load(),
		QueueDepth: c.queue.Len(),
	}
}

// Run starts the workers and the resync, and blocks until ctx is done. It
// then shuts the queue down, drops keys still waiting, and returns once
// every worker has finished its current Reconcile (which sees ctx done). It
// returns an error only if the Controller is misconfigured or already ran.
func (c *Controller) Run(ctx context.Context) error {
	if c.Reconciler == nil {
		return fmt.Errorf("controller %q: Reconciler is nil; set it before calling Run", c.Name)
	}
	if c.Resync > 0 && c.List == nil {
		return fmt.Errorf("controller %q: Resync is %v but List is nil; set List or leave Resync zero", c.Name, c.Resync)
	}
	if !c.ran.CompareAndSwap(false, true) {
		return fmt.Errorf("controller %q: Run was already called; a Controller runs once", c.Name)
	}
	c.init()
	if m := metricsFrom(ctx); m != nil {
		m.add(c)
		defer m.remove(c)
	}

	workers := max(c.Workers, 1)
	c.log.Info("controller starting", "workers", workers, "resync", c.Resync)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() { c.work(ctx) })
	}
	if c.List != nil {
		wg.Go(func() { c.resyncLoop(ctx) })
	}

	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	c.log.Info("controller stopped")
	return nil
}

func (c *Controller) work(ctx context.Context) {
	for {
		key, shutdown := c.queue.Get()
		if shutdown {
			return
		}
		if ctx.Err() != nil {
			// Run is about to shut the queue down; do not start
			// another reconcile only for it to see ctx done.
			c.queue.Done(key)
			return
		}
		c.process(ctx, key)
		c.queue.Done(key)
	}
}

// process reconciles key once and decides when it is seen again.
func (c *Controller) process(ctx context.Context, key string) {
	c.reconcileCount.Add(1)
	start := c.clock.Now()
	res, err := c.reconcile(ctx, key)
	c.latency.observe(c.clock.Now().Sub(start))
	switch {
	case err == nil:
		c.queue.Forget(key)
		if res.RequeueAfter > 0 {
			c.queue.AddAfter(key, res.RequeueAfter)
		}
	case IsTerminal(err):
		c.errorCount.Add(1)
		c.queue.Forget(key)
		c.log.Error("reconcile failed with a terminal error; not retrying until the key changes or the next resync", "key", key, "err", err)
	case ctx.Err() != nil:
		// Shutting down: the error is most likely the cancellation itself,
		// and the next start lists every key anyway. Not counted as an
		// error, so restarts do not look like failures.
		c.log.Debug("reconcile interrupted by shutdown", "key", key, "err", err)
	default:
		c.errorCount.Add(1)
		retryIn := c.queue.AddRateLimited(key)
		c.log.Error("reconcile failed; will retry", "key", key, "err", err, "failures", c.queue.Failures(key), "retry_in", retryIn)
	}
}

// reconcile calls the Reconciler and turns a panic into an error, so one
// bad key cannot take the whole agent down; it is retried with backoff like
// any other error.
func (c *Controller) reconcile(ctx context.Context, key string) (res Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("reconcile panicked", "key", key, "panic", r, "stack", string(debug.Stack()))
			res, err = Result{}, fmt.Errorf("reconcile of %q panicked: %v", key, r)
		}
	}()
	return c.Reconciler.Reconcile(ctx, key)
}

// resyncLoop enqueues every listed key now and then every Resync until ctx
// is done.
func (c *Controller) resyncLoop(ctx context.Context) {
	c.resync(ctx, false)
	if c.Resync <= 0 {
		return
	}
	tick := make(chan struct{}, 1)
	for {
		t := c.clock.AfterFunc(c.Resync, func() {
			select {
			case tick <- struct{}{}:
			default:
			}
		})
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-tick:
		}
		c.resync(ctx, c.SpreadResync)
	}
}

func (c *Controller) resync(ctx context.Context, spread bool) {
	keys, err := c.List(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Error("resync: listing keys failed; trying again at the next resync", "err", err, "resync", c.Resync)
		}
		return
	}
	for i, key := range keys {
		if spread {
			// Key i of n after i/n of the period; a key already waiting
			// keeps its earlier turn.
			c.queue.AddAfter(key, c.Resync*time.Duration(i)/time.Duration(len(keys)))
			continue
		}
		c.queue.Add(key)
	}
}
