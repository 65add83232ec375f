package server

import (
	"context"
	"testing"
	"time"
)

// next pops the oldest change, failing the test if none waits.
func (q *eventQueue) next(t testing.TB) *feedEvent {
	t.Helper()
	e, ok := q.pop()
	if !ok {
		t.Fatal("no change waits in the queue")
	}
	return e
}

// TestEventQueue: changes come out in order, a full queue refuses more,
// a reader woken by ready finds each change, and a drained queue lets
// its burst's memory go.
func TestEventQueue(t *testing.T) {
	q := newEventQueue(100)
	if q.events != nil {
		t.Fatal("a new queue holds a buffer")
	}
	for round := range 3 {
		for i := range 100 {
			if !q.push(&feedEvent{rev: int64(i)}) {
				t.Fatalf("round %d: push %d refused below the limit", round, i)
			}
		}
		if q.push(&feedEvent{rev: 100}) {
			t.Fatalf("round %d: a full queue took one more", round)
		}
		for i := range 100 {
			select {
			case <-q.ready:
			default:
				t.Fatalf("round %d: change %d waits with no token in ready", round, i)
			}
			if e := q.next(t); e.rev != int64(i) {
				t.Fatalf("round %d: popped %d, want %d", round, e.rev, i)
			}
		}
		if _, ok := q.pop(); ok {
			t.Fatalf("round %d: popped from an empty queue", round)
		}
		if q.events != nil {
			t.Fatalf("round %d: a drained queue keeps %d slots of its burst", round, cap(q.events))
		}
	}
	// Never drained: pushes and pops interleaved keep it bounded.
	for i := range 10000 {
		q.push(&feedEvent{rev: int64(i)})
		q.push(&feedEvent{rev: int64(i)})
		q.pop()
		if q.len() > 50 {
			q.pop()
		}
	}
	if c := cap(q.events); c > 4*q.limit {
		t.Fatalf("a queue kept busy grew to %d slots, limit %d", c, q.limit)
	}
}

// TestEventQueuePushWait: a full queue's writer waits until a change is
// read, or until its context ends.
func TestEventQueuePushWait(t *testing.T) {
	q := newWaitingEventQueue(1)
	q.push(&feedEvent{rev: 1})
	done := make(chan bool)
	go func() { done <- q.pushWait(context.Background(), &feedEvent{rev: 2}) }()
	select {
	case <-done:
		t.Fatal("pushWait did not wait for room")
	case <-time.After(50 * time.Millisecond):
	}
	q.next(t)
	if !<-done {
		t.Fatal("pushWait gave up")
	}
	if e := q.next(t); e.rev != 2 {
		t.Fatalf("popped %d, want 2", e.rev)
	}
	ctx, cancel := context.WithCancel(context.Background())
	q.push(&feedEvent{rev: 3})
	go func() { done <- q.pushWait(ctx, &feedEvent{rev: 4}) }()
	cancel()
	if <-done {
		t.Fatal("pushWait into a full queue succeeded after its context ended")
	}
}
