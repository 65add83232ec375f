package reconcile_test

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"hearth.dev/hearth/reconcile"
)

func mustGet(t *testing.T, q *reconcile.Queue, want string) {
	t.Helper()
	got, shutdown := q.Get()
	if shutdown || got != want {
		t.Fatalf("Get() = %q, shutdown %v; want %q, shutdown false", got, shutdown, want)
	}
}

func wantLen(t *testing.T, q *reconcile.Queue, want int) {
	t.Helper()
	if got := q.Len(); got != want {
		t.Fatalf("Len() = %d, want %d", got, want)
	}
}

func TestQueueAddDeduplicates(t *testing.T) {
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: newFakeClock()})
	q.Add("a")
	q.Add("b")
	q.Add("a")
	wantLen(t, q, 2)
	mustGet(t, q, "a")
	mustGet(t, q, "b")
	wantLen(t, q, 0)
}

func TestQueueAddWhileProcessingRequeuesOnceAfterDone(t *testing.T) {
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: newFakeClock()})
	q.Add("a")
	mustGet(t, q, "a")

	// While "a" is processed, adding it again must not hand it to a second
	// worker, however often it is added.
	q.Add("a")
	q.Add("a")
	wantLen(t, q, 0)

	q.Done("a")
	wantLen(t, q, 1)
	mustGet(t, q, "a")
	q.Done("a")
	wantLen(t, q, 0)
}

func TestQueueDoneWithoutAddDoesNotRequeue(t *testing.T) {
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: newFakeClock()})
	q.Add("a")
	mustGet(t, q, "a")
	q.Done("a")
	q.Done("a") // A stray Done is harmless.
	wantLen(t, q, 0)
}

func TestQueueAddAfter(t *testing.T) {
	clk := newFakeClock()
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: clk})

	q.AddAfter("a", time.Second)
	wantLen(t, q, 0)
	clk.Advance(999 * time.Millisecond)
	wantLen(t, q, 0)
	clk.Advance(time.Millisecond)
	wantLen(t, q, 1)
	mustGet(t, q, "a")

	q.AddAfter("now", 0)
	wantLen(t, q, 1)
	mustGet(t, q, "now")
}

func TestQueueAddAfterSoonerWins(t *testing.T) {
	clk := newFakeClock()
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: clk})

	q.AddAfter("a", time.Minute)
	q.AddAfter("a", time.Second) // Sooner: replaces the minute.
	q.AddAfter("a", time.Hour)   // Later: ignored.
	if got := clk.Pending(); got != 1 {
		t.Fatalf("pending timers = %d, want 1", got)
	}
	if got, _ := clk.NextIn(); got != time.Second {
		t.Fatalf("next timer in %v, want 1s", got)
	}
	clk.Advance(time.Hour)
	wantLen(t, q, 1)
	mustGet(t, q, "a")
	q.Done("a")
	wantLen(t, q, 0)
}

func TestQueueAddAfterOfWaitingKeyDeduplicates(t *testing.T) {
	clk := newFakeClock()
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: clk})
	q.Add("a")
	q.AddAfter("a", time.Second)
	clk.Advance(time.Second)
	wantLen(t, q, 1)
}

// nextBackoff fails key once more and returns the delay the queue waits
// before handing it out again, checking that the key really comes back
// after exactly that delay.
func nextBackoff(t *testing.T, q *reconcile.Queue, clk *fakeClock, key string) time.Duration {
	t.Helper()
	chosen := q.AddRateLimited(key)
	got, ok := clk.NextIn()
	if !ok {
		t.Fatalf("AddRateLimited(%q) scheduled no timer", key)
	}
	if got != chosen {
		t.Fatalf("AddRateLimited(%q) returned %v but scheduled %v", key, chosen, got)
	}
	if got > time.Nanosecond {
		clk.Advance(got - time.Nanosecond)
		wantLen(t, q, 0)
	}
	clk.Advance(time.Nanosecond)
	wantLen(t, q, 1)
	mustGet(t, q, key)
	q.Done(key)
	return got
}

func TestQueueBackoffGrowsAndForgetResets(t *testing.T) {
	clk := newFakeClock()
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: clk})

	ms := time.Millisecond
	want := []time.Duration{
		50 * ms, 100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms,
		6400 * ms, 12800 * ms, 25600 * ms, 51200 * ms, 102400 * ms, 204800 * ms,
		5 * time.Minute, 5 * time.Minute, 5 * time.Minute,
	}
	for i, w := range want {
		if got := nextBackoff(t, q, clk, "a"); got != w {
			t.Fatalf("failure %d: backoff = %v, want %v", i+1, got, w)
		}
	}
	if got := q.Failures("a"); got != len(want) {
		t.Fatalf("Failures(a) = %d, want %d", got, len(want))
	}

	// Another key has its own backoff.
	if got := nextBackoff(t, q, clk, "b"); got != 50*ms {
		t.Fatalf("first backoff of b = %v, want 50ms", got)
	}

	q.Forget("a")
	if got := q.Failures("a"); got != 0 {
		t.Fatalf("Failures(a) after Forget = %d, want 0", got)
	}
	if got := nextBackoff(t, q, clk, "a"); got != 50*ms {
		t.Fatalf("backoff after Forget = %v, want 50ms", got)
	}
}

func TestQueueBackoffDoesNotOverflow(t *testing.T) {
	clk := newFakeClock()
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: clk, BaseDelay: time.Second, MaxDelay: 1<<63 - 1})
	var last time.Duration
	for i := range 70 {
		d := q.AddRateLimited("a")
		if d < last {
			t.Fatalf("failure %d: backoff %v is less than the previous %v", i+1, d, last)
		}
		last = d
	}
}

func TestQueueCustomDelays(t *testing.T) {
	clk := newFakeClock()
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: clk, BaseDelay: time.Second, MaxDelay: 3 * time.Second})
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second} {
		if got := nextBackoff(t, q, clk, "a"); got != want {
			t.Fatalf("failure %d: backoff = %v, want %v", i+1, got, want)
		}
	}
}

func TestQueueJitterStaysWithinBounds(t *testing.T) {
	clk := newFakeClock()
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: clk, Jitter: true})
	for i := range 20 {
		key := fmt.Sprint("k", i)
		base := 50 * time.Millisecond
		for n := range 5 {
			full := base << n
			got := q.AddRateLimited(key)
			if got < full/2 || got > full {
				t.Fatalf("%s failure %d: backoff %v, want within [%v, %v]", key, n+1, got, full/2, full)
			}
		}
	}
}

func TestQueueShutDownUnblocksGet(t *testing.T) {
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: newFakeClock()})
	const getters = 3
	done := make(chan bool, getters)
	for range getters {
		go func() {
			_, shutdown := q.Get()
			done <- shutdown
		}()
	}
	q.ShutDown()
	for range getters {
		select {
		case shutdown := <-done:
			if !shutdown {
				t.Fatalf("Get() after ShutDown: shutdown = false, want true")
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Get() still blocked 2s after ShutDown")
		}
	}
	if !q.ShuttingDown() {
		t.Errorf("ShuttingDown() = false, want true")
	}
}

func TestQueueAfterShutDown(t *testing.T) {
	clk := newFakeClock()
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: clk})
	q.Add("waiting")
	q.Add("busy")
	q.AddAfter("later", time.Second)
	mustGet(t, q, "waiting")
	q.Add("waiting") // Re-added while processing.

	q.ShutDown()
	if got := clk.Pending(); got != 0 {
		t.Errorf("pending timers after ShutDown = %d, want 0", got)
	}
	q.Add("new")
	q.AddAfter("new", time.Second)
	q.AddRateLimited("new")
	q.Done("waiting") // Allowed, but not requeued.
	wantLen(t, q, 0)
	if got := clk.Pending(); got != 0 {
		t.Errorf("pending timers after adds on a shut queue = %d, want 0", got)
	}
	if key, shutdown := q.Get(); !shutdown {
		t.Errorf("Get() = %q, shutdown false; want shutdown true", key)
	}
}

// TestQueueNeverHandsOutAKeyTwice runs workers against a stream of Adds and
// checks that no key is ever held by two workers at once.
func TestQueueNeverHandsOutAKeyTwice(t *testing.T) {
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: newFakeClock()})
	const keys, adds, workers = 8, 2000, 4

	var mu sync.Mutex
	inFlight := make(map[string]bool)
	processed := make(map[string]int) // key → number of times processed
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				key, shutdown := q.Get()
				if shutdown {
					return
				}
				mu.Lock()
				if inFlight[key] {
					mu.Unlock()
					t.Errorf("key %q handed to two workers at once", key)
					q.Done(key)
					continue
				}
				inFlight[key] = true
				mu.Unlock()
				runtime.Gosched() // Give another worker a chance to get the same key.
				mu.Lock()
				inFlight[key] = false
				processed[key]++
				mu.Unlock()
				q.Done(key)
			}
		})
	}
	for i := range adds {
		q.Add(fmt.Sprint("k", i%keys))
	}
	// Every key was added; wait until each was processed at least once.
	deadline := time.Now().Add(2 * time.Second)
	for {
		mu.Lock()
		n := len(processed)
		mu.Unlock()
		if n == keys {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processed %d distinct keys within 2s, want %d", n, keys)
		}
		time.Sleep(100 * time.Microsecond)
	}
	q.ShutDown()
	wg.Wait()
}

// failOnce hands key out, fails it and marks it done, as a Controller's
// worker does with a reconcile that returned an error.
func failOnce(t *testing.T, q *reconcile.Queue, key string) time.Duration {
	t.Helper()
	mustGet(t, q, key)
	d := q.AddRateLimited(key)
	q.Done(key)
	return d
}

// TestQueueAddWaitsForBackoff: a failed key is handed out at its retry
// and not before, however often it is Added meanwhile (its controller's
// own writes coming back through its watches), and also when it was
// Added while it was processed.
func TestQueueAddWaitsForBackoff(t *testing.T) {
	clk := newFakeClock()
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: clk})
	q.Add("a")
	mustGet(t, q, "a")
	q.Add("a") // the echo of a status write, while processing
	q.AddRateLimited("a")
	q.Done("a")
	wantLen(t, q, 0)
	for range 10 {
		q.Add("a")
	}
	clk.Advance(49 * time.Millisecond)
	wantLen(t, q, 0)
	clk.Advance(time.Millisecond)
	wantLen(t, q, 1)

	// The second failure waits 100ms, Adds or not.
	if d := failOnce(t, q, "a"); d != 100*time.Millisecond {
		t.Fatalf("second backoff %v, want 100ms", d)
	}
	q.Add("a")
	clk.Advance(99 * time.Millisecond)
	wantLen(t, q, 0)
	clk.Advance(time.Millisecond)
	mustGet(t, q, "a")

	// Success: Forget, and an Add is handed out at once again.
	q.Forget("a")
	q.Done("a")
	q.Add("a")
	wantLen(t, q, 1)
}

// TestQueueAddNowCutsBackoffShort: a change to what a key asks for
// (AddNow) hands it out before its retry, while it waits or while it is
// processed, without forgetting its failures; the retry it replaced does
// not hand it out a second time.
func TestQueueAddNowCutsBackoffShort(t *testing.T) {
	clk := newFakeClock()
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: clk})
	q.Add("a")
	failOnce(t, q, "a")
	failOnce2 := func() {
		clk.Advance(time.Hour)
		failOnce(t, q, "a")
	}
	failOnce2() // two failures: the retry is 100ms away
	q.AddNow("a")
	wantLen(t, q, 1)
	if got := clk.Pending(); got != 0 {
		t.Errorf("%d timers pending after AddNow: the replaced retry would hand the key out again", got)
	}
	if d := failOnce(t, q, "a"); d != 200*time.Millisecond {
		t.Errorf("backoff after AddNow and a third failure = %v, want 200ms: the failures are kept", d)
	}

	// AddNow while processing a reconcile that then fails.
	clk.Advance(time.Hour)
	mustGet(t, q, "a")
	q.AddNow("a")
	q.AddRateLimited("a")
	q.Done("a")
	wantLen(t, q, 1)
	mustGet(t, q, "a")
	q.Done("a")
	if q.Len() != 0 || clk.Pending() != 0 {
		t.Errorf("after the AddNow'd key was handed out: %d waiting, %d timers; want none", q.Len(), clk.Pending())
	}

	// On a key that is not backing off, AddNow is Add.
	q.AddNow("b")
	q.AddNow("b")
	wantLen(t, q, 1)
}

// TestQueueAddAfterWaitsForBackoff: an AddAfter sooner than a failed
// key's retry (a resync spread over its period, say) does not bring it
// sooner; a failure after a long RequeueAfter still retries at its
// backoff.
func TestQueueAddAfterWaitsForBackoff(t *testing.T) {
	clk := newFakeClock()
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: clk})
	q.Add("a")
	failOnce(t, q, "a") // retry in 50ms
	q.AddAfter("a", 10*time.Millisecond)
	clk.Advance(10 * time.Millisecond)
	wantLen(t, q, 0)
	clk.Advance(40 * time.Millisecond)
	wantLen(t, q, 1)
	mustGet(t, q, "a")
	q.Forget("a")
	q.Done("a")

	// A success asked to look again in an hour; the next look fails.
	q.AddAfter("a", time.Hour)
	q.Add("a")
	if d := failOnce(t, q, "a"); d != 50*time.Millisecond {
		t.Fatalf("backoff %v, want 50ms", d)
	}
	clk.Advance(50 * time.Millisecond)
	wantLen(t, q, 1)
}

// TestQueueDelayedKeysShareOneTimer: a thousand keys added after as many
// delays (a resync spread over its period) wait on one timer, not a
// timer each (about 200 bytes a key, for every object of every kind the
// garbage collector resyncs), and each is still handed out at its time,
// not before, the soonest first; a sooner AddAfter of a waiting key
// moves it up.
func TestQueueDelayedKeysShareOneTimer(t *testing.T) {
	clk := newFakeClock()
	q := reconcile.NewQueue(reconcile.QueueOptions{Clock: clk})
	const n = 1000
	for i := range n {
		// Out of order: key i is due after (i*7919 mod n)+1 ms.
		q.AddAfter(fmt.Sprint(i), time.Duration(i*7919%n+1)*time.Millisecond)
	}
	q.AddAfter("0", time.Hour) // later than it waits for: no change
	if got := clk.Pending(); got != 1 {
		t.Errorf("%d delayed keys wait on %d timers, want 1", n, got)
	}
	wantLen(t, q, 0)
	for ms := 1; ms <= n; ms++ {
		clk.Advance(time.Millisecond)
		if got := q.Len(); got != 1 {
			t.Fatalf("at %d ms: %d keys ready, want the one due then", ms, got)
		}
		key, _ := q.Get()
		var i int
		fmt.Sscan(key, &i)
		if due := i*7919%n + 1; due != ms {
			t.Fatalf("at %d ms got key %s, due at %d ms", ms, key, due)
		}
		q.Done(key)
	}
	if got := clk.Pending(); got != 0 {
		t.Errorf("%d timers left with nothing delayed", got)
	}

	q.AddAfter("late", time.Hour)
	q.AddAfter("late", time.Second)
	clk.Advance(time.Second)
	mustGet(t, q, "late")
}
