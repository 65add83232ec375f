package server

import (
	"context"
	"sync"
)

// eventQueue is one watcher's changes waiting to be written. It holds
// what is waiting and, between bursts, nothing: a buffered channel of
// the same limit holds its whole buffer for as long as the watch lasts,
// and an idle host keeps several watches open for hours (8 KiB each at
// feedQueue, 2 KiB at feedQueueIndexed, for a thousand hosts tens of
// MiB that hold no change at all).
type eventQueue struct {
	mu     sync.Mutex
	events []*feedEvent // waiting, from head on
	head   int
	limit  int
	// ready has a token while something waits: a reader selects on it,
	// then pops one change (pop puts the token back while more wait).
	ready chan struct{}
	// space has a token when a pop made room in a full queue; made only
	// for a queue whose writer waits for room (pushWait).
	space chan struct{}
}

func newEventQueue(limit int) *eventQueue {
	return &eventQueue{limit: limit, ready: make(chan struct{}, 1)}
}

// newWaitingEventQueue is a queue whose writer waits for room (pushWait)
// rather than being refused.
func newWaitingEventQueue(limit int) *eventQueue {
	q := newEventQueue(limit)
	q.space = make(chan struct{}, 1)
	return q
}

// eventQueueKeep is the capacity a drained queue keeps for the next
// burst; a larger one (a burst's) is let go.
const eventQueueKeep = 16

// push adds e, or says the queue is full.
func (q *eventQueue) push(e *feedEvent) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.events)-q.head >= q.limit {
		return false
	}
	if len(q.events) == cap(q.events) && q.head > 0 {
		// Full to its end with room at its start: move down rather
		// than grow (a queue never drained would grow without end).
		n := copy(q.events, q.events[q.head:])
		clear(q.events[n:])
		q.events, q.head = q.events[:n], 0
	}
	q.events = append(q.events, e)
	signal(q.ready)
	return true
}

// pushWait adds e, waiting for room while the queue is full; false if
// ctx ended first. Only for a queue made by newWaitingEventQueue.
func (q *eventQueue) pushWait(ctx context.Context, e *feedEvent) bool {
	for !q.push(e) {
		select {
		case <-q.space:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// pop takes the oldest change waiting, if any. A reader may find none
// after taking a token from ready (one left by a pop of its own outside
// a select): it waits again.
func (q *eventQueue) pop() (*feedEvent, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.events) - q.head
	if n == 0 {
		return nil, false
	}
	e := q.events[q.head]
	q.events[q.head] = nil
	q.head++
	if n == q.limit && q.space != nil {
		signal(q.space)
	}
	if n == 1 {
		q.head = 0
		if cap(q.events) > eventQueueKeep {
			q.events = nil
		} else {
			q.events = q.events[:0]
		}
	} else {
		signal(q.ready)
	}
	return e, true
}

// len is how many changes wait.
func (q *eventQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.events) - q.head
}

// signal puts a token in a channel of capacity one, if it has none.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
