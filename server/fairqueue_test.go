package server

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestFairQueueOrder: beyond the limit, requests wait and are admitted
// one per flow in turn, in order within a flow: a host with five writes
// waiting does not hold back one that came later from another host.
func TestFairQueueOrder(t *testing.T) {
	q := newFairQueue(1)
	q.hold()
	ctx := context.Background()
	if err := q.acquire(ctx, "h0"); err != nil { // the one running
		t.Fatal(err)
	}
	got := make(chan string, 16)
	waitFor := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; {
			q.mu.Lock()
			w := 0
			for _, ws := range q.waiting {
				w += len(ws)
			}
			q.mu.Unlock()
			if w == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d waiting, want %d", w, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	enqueue := func(flow, name string) {
		if err := q.acquire(ctx, flow); err != nil {
			t.Error(err)
			return
		}
		got <- name
	}
	for i, name := range []string{"a1", "a2", "a3", "a4", "a5"} {
		go enqueue("a", name)
		waitFor(i + 1)
	}
	go enqueue("b", "b1")
	waitFor(6)
	var order []string
	for range 6 {
		q.release()
		order = append(order, <-got)
	}
	if want := []string{"a1", "b1", "a2", "a3", "a4", "a5"}; !slices.Equal(order, want) {
		t.Fatalf("admitted %v, want %v", order, want)
	}
	q.release()
	if q.inUse != 0 || len(q.ring) != 0 || len(q.waiting) != 0 {
		t.Fatalf("after every release: %d in use, ring %v, %d flows waiting", q.inUse, q.ring, len(q.waiting))
	}
}

// TestFairQueueGiveUp: a request whose context ends while it waits
// leaves the queue and holds no slot; the one behind it is admitted next.
func TestFairQueueGiveUp(t *testing.T) {
	q := newFairQueue(1)
	q.hold()
	if err := q.acquire(context.Background(), "h0"); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- q.acquire(cctx, "a") }()
	admitted := make(chan error, 1)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		q.mu.Lock()
		n := len(q.waiting["a"])
		q.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first never waited")
		}
	}
	go func() { admitted <- q.acquire(context.Background(), "b") }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		q.mu.Lock()
		n := len(q.ring)
		q.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second never waited")
		}
	}
	cancel()
	if err := <-gaveUp; err == nil {
		t.Fatal("a cancelled wait was admitted")
	}
	q.release()
	select {
	case err := <-admitted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request behind the one that gave up was never admitted")
	}
	q.release()
	if q.inUse != 0 || len(q.ring) != 0 || len(q.waiting) != 0 {
		t.Fatalf("after every release: %d in use, ring %v, %d flows waiting", q.inUse, q.ring, len(q.waiting))
	}
}

// TestFairQueueHold: the limit holds only while held (a batch of bindings
// in flight): not held, requests beyond it run at once; held, they wait;
// the last unhold lets every waiting one run.
func TestFairQueueHold(t *testing.T) {
	q := newFairQueue(1)
	ctx := context.Background()
	for range 3 {
		quick, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := q.acquire(quick, "a"); err != nil {
			t.Fatalf("not held, a request beyond the limit waited: %v", err)
		}
		cancel()
	}
	q.hold()
	q.hold()
	admitted := make(chan string, 2)
	for _, f := range []string{"b", "c"} {
		go func() {
			if err := q.acquire(ctx, f); err == nil {
				admitted <- f
			}
		}()
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		q.mu.Lock()
		n := len(q.ring)
		q.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("held, requests beyond the limit did not wait")
		}
	}
	q.release() // 2 of 3 still run: over the limit, nobody is admitted
	q.unhold()  // one hold left
	select {
	case f := <-admitted:
		t.Fatalf("%s admitted while held and over the limit", f)
	case <-time.After(50 * time.Millisecond):
	}
	q.unhold()
	for range 2 {
		select {
		case <-admitted:
		case <-time.After(5 * time.Second):
			t.Fatal("the last unhold did not let the waiting requests run")
		}
	}
	for range 4 {
		q.release()
	}
	if q.inUse != 0 || q.holds != 0 || len(q.ring) != 0 || len(q.waiting) != 0 {
		t.Fatalf("at the end: %d in use, %d holds, ring %v, %d flows waiting", q.inUse, q.holds, q.ring, len(q.waiting))
	}
}
