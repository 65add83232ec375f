package reconcile

import (
	"container/heap"
	"math/rand/v2"
	"sync"
	"time"
)

// Default backoff for keys that keep failing. The base is short so a
// transient error (a lost race with another writer) is retried almost at
// once; the cap keeps a key that is broken for hours from being forgotten
// while not hammering the host or the API with it.
const (
	DefaultBaseDelay = 50 * time.Millisecond
	DefaultMaxDelay  = 5 * time.Minute
)

// QueueOptions configures a Queue. The zero value is ready to use.
type QueueOptions struct {
	// Clock schedules AddAfter and backoff. Nil means RealClock.
	Clock Clock
	// BaseDelay is the wait after a key's first failure; it doubles with
	// every further failure up to MaxDelay. Zero means DefaultBaseDelay and
	// DefaultMaxDelay.
	BaseDelay time.Duration
	MaxDelay  time.Duration
	// Jitter spreads each backoff uniformly over [delay/2, delay], so keys
	// that failed together (say, while etcd restarted) do not all retry in
	// the same instant.
	Jitter bool
}

// Queue is a work queue of keys for level-triggered controllers.
//
// A key is either waiting, being processed (between Get and Done), or both:
// Add deduplicates a waiting key, and a key that is Added while being
// processed waits until Done so that no two workers ever hold the same key.
// Keys carry no payload because a reconcile reads the current state itself;
// adding a key twice therefore loses nothing.
//
// A key that failed backs off until its retry, whatever else adds it: Add
// of a key whose retry is pending does nothing (the retry brings it), so
// the writes a failing reconcile makes — which its controller's own
// watches see — cannot cut its backoff short and make it spin. Only
// AddNow, for a change to what the key asks for (its spec, an object it
// names appearing), hands it out before its retry; its failure count is
// kept until Forget, so a key that keeps failing waits ever longer.
//
// Queue is safe for concurrent use.
type Queue struct {
	clock     Clock
	baseDelay time.Duration
	maxDelay  time.Duration
	jitter    bool

	mu           sync.Mutex
	cond         *sync.Cond             // signalled when ready grows or on shut down
	ready        []string               // keys Get may hand out, oldest first
	dirty        map[string]struct{}    // keys that need processing: in ready, or processing and added again
	processing   map[string]struct{}    // keys between Get and Done
	urgent       map[string]struct{}    // processing keys AddNow added again: Done hands them out even while backing off
	delayed      map[string]*delayedKey // keys waiting for their time (in soon too)
	failures     map[string]int         // consecutive AddRateLimited calls since Forget
	shuttingDown bool

	// soon orders the delayed keys by time, the first soonest; one timer,
	// for the first, brings them. A timer each cost about 200 bytes per
	// key, and a resync spread over a period (the garbage collector's,
	// over every object of every kind) delays every key at once.
	soon  delayedHeap
	timer Timer
	// timerAt is when the timer fires (zero: none set).
	timerAt time.Time
}

// delayedKey is a key's pending AddAfter: its time, and its place in the
// queue's heap.
type delayedKey struct {
	key   string
	at    time.Time
	index int
}

// delayedHeap is a container/heap of delayed keys, the soonest first.
type delayedHeap []*delayedKey

func (h delayedHeap) Len() int           { return len(h) }
func (h delayedHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h delayedHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *delayedHeap) Push(x any) {
	dk := x.(*delayedKey)
	dk.index = len(*h)
	*h = append(*h, dk)
}
func (h *delayedHeap) Pop() any {
	old := *h
	dk := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return dk
}

// undelayLocked drops key's pending AddAfter.
func (q *Queue) undelayLocked(key string) {
	if dk, ok := q.delayed[key]; ok {
		heap.Remove(&q.soon, dk.index)
		delete(q.delayed, key)
	}
	if len(q.soon) == 0 && q.timer != nil {
		// Nothing left for it to bring.
		q.timer.Stop()
		q.timer, q.timerAt = nil, time.Time{}
	}
}

// armLocked sets the timer for the soonest delayed key, unless it is set
// for then already.
func (q *Queue) armLocked() {
	if len(q.soon) == 0 || q.shuttingDown {
		return
	}
	at := q.soon[0].at
	if !q.timerAt.IsZero() && !at.Before(q.timerAt) {
		return // it fires no later, and arms again for what is left
	}
	if q.timer != nil {
		q.timer.Stop()
	}
	q.timerAt = at
	q.timer = q.clock.AfterFunc(at.Sub(q.clock.Now()), q.fire)
}

// NewQueue returns an empty Queue.
func NewQueue(opts QueueOptions) *Queue {
	q := &Queue{
		clock:      opts.Clock,
		baseDelay:  opts.BaseDelay,
		maxDelay:   opts.MaxDelay,
		jitter:     opts.Jitter,
		dirty:      make(map[string]struct{}),
		processing: make(map[string]struct{}),
		urgent:     make(map[string]struct{}),
		delayed:    make(map[string]*delayedKey),
		failures:   make(map[string]int),
	}
	if q.clock == nil {
		q.clock = RealClock{}
	}
	if q.baseDelay <= 0 {
		q.baseDelay = DefaultBaseDelay
	}
	if q.maxDelay <= 0 {
		q.maxDelay = DefaultMaxDelay
	}
	q.maxDelay = max(q.maxDelay, q.baseDelay)
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add makes key wait for processing. It does nothing if key is already
// waiting, is backing off (its retry brings it), or the queue is shut
// down. If key is being processed, it waits until Done and is then handed
// out once more, unless that processing failed: then its retry brings it.
func (q *Queue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key, false)
}

// AddNow is Add for a change to what key asks for: it hands key out
// without waiting for a pending retry. Its failure count stays until
// Forget, so should it fail again it backs off longer than before.
func (q *Queue) AddNow(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key, true)
}

// backingOffLocked reports whether key failed and waits for its retry.
// Callers hold mu.
func (q *Queue) backingOffLocked(key string) bool {
	if q.failures[key] == 0 {
		return false
	}
	_, pending := q.delayed[key]
	return pending
}

func (q *Queue) addLocked(key string, now bool) {
	if q.shuttingDown {
		return
	}
	_, processing := q.processing[key]
	if now && processing {
		q.urgent[key] = struct{}{}
	}
	if _, ok := q.dirty[key]; ok {
		return
	}
	if processing {
		q.dirty[key] = struct{}{}
		return // Done puts it in ready.
	}
	if q.backingOffLocked(key) {
		if !now {
			return // its retry brings it
		}
		q.undelayLocked(key)
	}
	q.dirty[key] = struct{}{}
	q.ready = append(q.ready, key)
	q.cond.Signal()
}

// AddAfter adds key once d has passed; d <= 0 adds it now. A key has at
// most one pending AddAfter: the sooner of the pending and the new time
// wins, so a retry scheduled in a second is not pushed back by a later
// RequeueAfter of an hour, nor the other way round. A key backing off
// after a failure keeps its retry, as with Add.
func (q *Queue) AddAfter(key string, d time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.backingOffLocked(key) {
		return // its retry brings it, not sooner
	}
	q.addAfterLocked(key, d)
}

func (q *Queue) addAfterLocked(key string, d time.Duration) {
	if q.shuttingDown {
		return
	}
	if d <= 0 {
		q.addLocked(key, false)
		return
	}
	at := q.clock.Now().Add(d)
	if old, ok := q.delayed[key]; ok {
		if !at.Before(old.at) {
			return
		}
		old.at = at
		heap.Fix(&q.soon, old.index)
	} else {
		dk := &delayedKey{key: key, at: at}
		heap.Push(&q.soon, dk)
		q.delayed[key] = dk
	}
	q.armLocked()
}

// fire is the timer's callback: every delayed key whose time has come is
// added, and the timer set for the next.
func (q *Queue) fire() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.timerAt, q.timer = time.Time{}, nil
	now := q.clock.Now()
	for len(q.soon) > 0 && !q.soon[0].at.After(now) {
		dk := heap.Pop(&q.soon).(*delayedKey)
		delete(q.delayed, dk.key)
		q.addLocked(dk.key, false)
	}
	q.armLocked()
}

// AddRateLimited adds key after its backoff: BaseDelay after the first
// failure, doubling with each further one up to MaxDelay, until Forget. It
// returns the delay it chose, for logs.
func (q *Queue) AddRateLimited(key string) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	d := q.backoffLocked(key)
	q.addAfterLocked(key, d)
	return d
}

// backoffLocked returns key's next delay and counts the failure.
func (q *Queue) backoffLocked(key string) time.Duration {
	n := q.failures[key]
	q.failures[key] = n + 1
	d := q.baseDelay
	for range n {
		if d > q.maxDelay/2 {
			d = q.maxDelay
			break
		}
		d *= 2
	}
	d = min(d, q.maxDelay)
	if q.jitter {
		d = d/2 + rand.N(d/2+1)
	}
	return d
}

// Forget resets key's backoff, typically after it was processed without
// error. It does not remove key from the queue.
func (q *Queue) Forget(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.failures, key)
}

// Failures reports how many times key was AddRateLimited since it was last
// forgotten.
func (q *Queue) Failures(key string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failures[key]
}

// Get blocks until a key is waiting and hands it out; the caller must call
// Done with it when finished. After ShutDown, Get returns shutdown true at
// once, also if keys were still waiting: a level-triggered controller loses
// nothing by dropping them because its next start lists every key again.
func (q *Queue) Get() (key string, shutdown bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.ready) == 0 && !q.shuttingDown {
		q.cond.Wait()
	}
	if q.shuttingDown {
		return "", true
	}
	key = q.ready[0]
	q.ready[0] = ""
	q.ready = q.ready[1:]
	delete(q.dirty, key)
	q.processing[key] = struct{}{}
	return key, false
}

// Done marks key as processed. If it was added while being processed, it
// waits again now; but if the processing failed (AddRateLimited before
// Done), only an AddNow meanwhile does: an Add waits for the retry.
func (q *Queue) Done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.processing[key]; !ok {
		return
	}
	delete(q.processing, key)
	_, urgent := q.urgent[key]
	delete(q.urgent, key)
	if _, ok := q.dirty[key]; !ok || q.shuttingDown {
		return
	}
	if q.backingOffLocked(key) {
		if !urgent {
			delete(q.dirty, key) // the retry brings it
			return
		}
		q.undelayLocked(key)
	}
	q.ready = append(q.ready, key)
	q.cond.Signal()
}

// Len reports how many keys are waiting to be handed out by Get, not
// counting keys whose AddAfter or backoff has not yet passed.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ready)
}

// ShutDown stops the queue: blocked and future Gets return shutdown true,
// pending AddAfter timers are stopped, and later Adds are ignored. Keys
// being processed may still be passed to Done.
func (q *Queue) ShutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shuttingDown = true
	if q.timer != nil {
		q.timer.Stop()
		q.timer, q.timerAt = nil, time.Time{}
	}
	clear(q.delayed)
	q.soon = nil
	q.ready = nil
	clear(q.dirty)
	clear(q.urgent)
	q.cond.Broadcast()
}

// ShuttingDown reports whether ShutDown has been called.
func (q *Queue) ShuttingDown() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.shuttingDown
}
