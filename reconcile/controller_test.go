package reconcile_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hearth.dev/hearth/reconcile"
)

// syncBuffer is a bytes.Buffer that workers may log to while a test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// start runs c until the returned stop is called (or the test ends), and
// fails the test if Run errs or does not return within 2s of stopping.
func start(t *testing.T, c *reconcile.Controller) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("Run() = %v, want nil", err)
				}
			case <-time.After(2 * time.Second):
				t.Errorf("Run() did not return within 2s of cancelling its context")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// recv returns the next value from ch, failing the test after 2s.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(2 * time.Second):
		var zero T
		t.Fatalf("nothing received within 2s")
		return zero
	}
}

// wantNothing checks that ch has nothing to receive now.
func wantNothing[T any](t *testing.T, ch <-chan T) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("received %v, want nothing", v)
	default:
	}
}

func wantStats(t *testing.T, c *reconcile.Controller, want reconcile.Stats) {
	t.Helper()
	if got := c.Stats(); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

func TestControllerRetriesUntilSuccess(t *testing.T) {
	clk := newFakeClock()
	calls := make(chan int, 10)
	var n atomic.Int32
	c := &reconcile.Controller{
		Name:   "test",
		Clock:  clk,
		Logger: discardLogger(),
		Reconciler: reconcile.ReconcilerFunc(func(ctx context.Context, key string) (reconcile.Result, error) {
			i := int(n.Add(1))
			calls <- i
			// Fail three times, succeed, then fail once more.
			if i <= 3 || i == 5 {
				return reconcile.Result{}, errors.New("host h1 unreachable")
			}
			return reconcile.Result{}, nil
		}),
	}
	stop := start(t, c)
	c.Enqueue("vm/web")

	if got := recv(t, calls); got != 1 {
		t.Fatalf("call = %d, want 1", got)
	}
	for i, backoff := range []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond} {
		clk.WaitForTimers(t, 1)
		if got, _ := clk.NextIn(); got != backoff {
			t.Fatalf("retry %d scheduled in %v, want %v", i+1, got, backoff)
		}
		clk.Advance(backoff)
		if got, want := recv(t, calls), i+2; got != want {
			t.Fatalf("call = %d, want %d", got, want)
		}
	}

	// Success forgets the backoff: the next failure starts over at 50ms.
	c.Enqueue("vm/web")
	if got := recv(t, calls); got != 5 {
		t.Fatalf("call = %d, want 5", got)
	}
	clk.WaitForTimers(t, 1)
	if got, _ := clk.NextIn(); got != 50*time.Millisecond {
		t.Fatalf("retry after a success scheduled in %v, want 50ms", got)
	}
	clk.Advance(50 * time.Millisecond)
	if got := recv(t, calls); got != 6 {
		t.Fatalf("call = %d, want 6", got)
	}

	stop()
	wantStats(t, c, reconcile.Stats{Reconciles: 6, Errors: 4})
}

func TestControllerTerminalErrorIsNotRetried(t *testing.T) {
	clk := newFakeClock()
	logs := &syncBuffer{}
	calls := make(chan string, 10)
	c := &reconcile.Controller{
		Name:   "test",
		Clock:  clk,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Reconciler: reconcile.ReconcilerFunc(func(ctx context.Context, key string) (reconcile.Result, error) {
			calls <- key
			if key == "bad" {
				err := reconcile.Terminal(errors.New("spec.cidr 10.0.0.0/33 is not a CIDR"))
				return reconcile.Result{RequeueAfter: time.Minute}, fmt.Errorf("subnet %s: %w", key, err)
			}
			return reconcile.Result{}, nil
		}),
	}
	stop := start(t, c)
	c.Enqueue("bad")
	c.Enqueue("barrier")

	if got := recv(t, calls); got != "bad" {
		t.Fatalf("first call for %q, want bad", got)
	}
	// One worker: "barrier" is only reconciled once "bad" was handled, so a
	// retry of "bad" would be scheduled by now.
	if got := recv(t, calls); got != "barrier" {
		t.Fatalf("second call for %q, want barrier", got)
	}
	if got := clk.Pending(); got != 0 {
		t.Fatalf("timers scheduled after a terminal error: %d, want 0", got)
	}
	clk.Advance(time.Hour)
	wantNothing(t, calls)

	stop()
	wantStats(t, c, reconcile.Stats{Reconciles: 2, Errors: 1})
	if got := logs.String(); !strings.Contains(got, "terminal") || !strings.Contains(got, "10.0.0.0/33") {
		t.Errorf("log does not mention the terminal error:\n%s", got)
	}
}

func TestTerminal(t *testing.T) {
	base := errors.New("boom")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", base, false},
		{"terminal", reconcile.Terminal(base), true},
		{"wrapped terminal", fmt.Errorf("vm web: %w", reconcile.Terminal(base)), true},
		{"joined terminal", errors.Join(base, reconcile.Terminal(base)), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := reconcile.IsTerminal(tt.err); got != tt.want {
				t.Errorf("IsTerminal(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
	if got := reconcile.Terminal(nil); got != nil {
		t.Errorf("Terminal(nil) = %v, want nil", got)
	}
	if err := reconcile.Terminal(base); !errors.Is(err, base) || err.Error() != "boom" {
		t.Errorf("Terminal(boom) = %q, errors.Is boom %v; want %q, true", err, errors.Is(err, base), "boom")
	}
}

func TestControllerRecoversPanic(t *testing.T) {
	clk := newFakeClock()
	logs := &syncBuffer{}
	calls := make(chan int, 10)
	var n atomic.Int32
	c := &reconcile.Controller{
		Name:   "test",
		Clock:  clk,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Reconciler: reconcile.ReconcilerFunc(func(ctx context.Context, key string) (reconcile.Result, error) {
			i := int(n.Add(1))
			calls <- i
			if i == 1 {
				var m map[string]int
				//lint:ignore SA5000 a runtime panic on purpose, as a buggy reconciler's would be
				m["nil map"] = 1 // Panics.
			}
			return reconcile.Result{}, nil
		}),
	}
	stop := start(t, c)
	c.Enqueue("a")
	recv(t, calls)

	// The panic is retried like an error.
	clk.WaitForTimers(t, 1)
	if got, _ := clk.NextIn(); got != 50*time.Millisecond {
		t.Fatalf("retry after panic scheduled in %v, want 50ms", got)
	}
	clk.Advance(50 * time.Millisecond)
	if got := recv(t, calls); got != 2 {
		t.Fatalf("call = %d, want 2", got)
	}

	stop()
	wantStats(t, c, reconcile.Stats{Reconciles: 2, Errors: 1})
	if got := logs.String(); !strings.Contains(got, "panicked") || !strings.Contains(got, "nil map") {
		t.Errorf("log does not report the panic:\n%s", got)
	}
}

func TestControllerRequeueAfter(t *testing.T) {
	clk := newFakeClock()
	calls := make(chan string, 10)
	c := &reconcile.Controller{
		Name:   "test",
		Clock:  clk,
		Logger: discardLogger(),
		Reconciler: reconcile.ReconcilerFunc(func(ctx context.Context, key string) (reconcile.Result, error) {
			calls <- key
			return reconcile.Result{RequeueAfter: 30 * time.Second}, nil
		}),
	}
	stop := start(t, c)
	c.Enqueue("lease/10.0.0.5")
	recv(t, calls)

	clk.WaitForTimers(t, 1)
	if got, _ := clk.NextIn(); got != 30*time.Second {
		t.Fatalf("requeue scheduled in %v, want 30s", got)
	}
	clk.Advance(30*time.Second - time.Millisecond)
	wantNothing(t, calls)
	clk.Advance(time.Millisecond)
	if got := recv(t, calls); got != "lease/10.0.0.5" {
		t.Fatalf("requeued %q, want lease/10.0.0.5", got)
	}

	stop()
	wantStats(t, c, reconcile.Stats{Reconciles: 2})
}

func TestControllerEnqueueAfter(t *testing.T) {
	clk := newFakeClock()
	calls := make(chan string, 10)
	c := &reconcile.Controller{
		Name:   "test",
		Clock:  clk,
		Logger: discardLogger(),
		Reconciler: reconcile.ReconcilerFunc(func(ctx context.Context, key string) (reconcile.Result, error) {
			calls <- key
			return reconcile.Result{}, nil
		}),
	}
	start(t, c)
	c.EnqueueAfter("a", time.Minute)
	clk.Advance(time.Minute - time.Nanosecond)
	wantNothing(t, calls)
	clk.Advance(time.Nanosecond)
	if got := recv(t, calls); got != "a" {
		t.Fatalf("reconciled %q, want a", got)
	}
}

func TestControllerResyncEnqueuesListedKeys(t *testing.T) {
	clk := newFakeClock()
	logs := &syncBuffer{}
	calls := make(chan string, 10)
	var lists atomic.Int32
	c := &reconcile.Controller{
		Name:   "test",
		Clock:  clk,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Resync: 10 * time.Minute,
		List: func(ctx context.Context) ([]string, error) {
			switch lists.Add(1) {
			case 2:
				return nil, errors.New("etcd unavailable")
			default:
				return []string{"net/a", "net/b"}, nil
			}
		},
		Reconciler: reconcile.ReconcilerFunc(func(ctx context.Context, key string) (reconcile.Result, error) {
			calls <- key
			return reconcile.Result{}, nil
		}),
	}
	stop := start(t, c)

	recvKeys := func() []string {
		t.Helper()
		got := []string{recv(t, calls), recv(t, calls)}
		slices.Sort(got)
		return got
	}
	want := []string{"net/a", "net/b"}

	// Run lists once at start…
	if got := recvKeys(); !slices.Equal(got, want) {
		t.Fatalf("reconciled at start %q, want %q", got, want)
	}
	// …and again every Resync; a failed List is logged and skipped.
	clk.WaitForTimers(t, 1)
	if got, _ := clk.NextIn(); got != 10*time.Minute {
		t.Fatalf("resync scheduled in %v, want 10m", got)
	}
	clk.Advance(10 * time.Minute)
	clk.WaitForTimers(t, 1)
	wantNothing(t, calls)
	clk.Advance(10 * time.Minute)
	if got := recvKeys(); !slices.Equal(got, want) {
		t.Fatalf("reconciled at resync %q, want %q", got, want)
	}

	stop()
	if got := lists.Load(); got != 3 {
		t.Errorf("List called %d times, want 3", got)
	}
	if got := logs.String(); !strings.Contains(got, "etcd unavailable") {
		t.Errorf("log does not report the failed List:\n%s", got)
	}
}

func TestControllerRunStopsWorkers(t *testing.T) {
	const workers = 3
	started := make(chan string, 10)
	var active atomic.Int32
	c := &reconcile.Controller{
		Name:    "test",
		Workers: workers,
		Logger:  discardLogger(),
		Reconciler: reconcile.ReconcilerFunc(func(ctx context.Context, key string) (reconcile.Result, error) {
			active.Add(1)
			defer active.Add(-1)
			started <- key
			<-ctx.Done()
			return reconcile.Result{}, ctx.Err()
		}),
	}
	for _, key := range []string{"a", "b", "c", "d"} {
		c.Enqueue(key)
	}
	wantStats(t, c, reconcile.Stats{QueueDepth: 4})
	stop := start(t, c)

	// All workers run at once, each on its own key.
	var got []string
	for range workers {
		got = append(got, recv(t, started))
	}
	slices.Sort(got)
	if want := []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("started %q, want %q", got, want)
	}

	stop()
	if n := active.Load(); n != 0 {
		t.Errorf("%d reconciles still running after Run returned, want 0", n)
	}
	wantNothing(t, started) // "d" was dropped, not started during shutdown.
	c.Enqueue("e")          // Harmless after Run.
	wantStats(t, c, reconcile.Stats{Reconciles: workers})

	if err := c.Run(context.Background()); err == nil {
		t.Errorf("second Run() = nil, want an error")
	}
}

func TestControllerRunRejectsBadConfig(t *testing.T) {
	noop := reconcile.ReconcilerFunc(func(context.Context, string) (reconcile.Result, error) {
		return reconcile.Result{}, nil
	})
	tests := []struct {
		name string
		c    *reconcile.Controller
		want string
	}{
		{"no reconciler", &reconcile.Controller{Name: "vms"}, "Reconciler is nil"},
		{"resync without list", &reconcile.Controller{Name: "vms", Reconciler: noop, Resync: time.Minute}, "List is nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `"vms"`) {
				t.Errorf("Run() = %v, want an error naming the controller and containing %q", err, tt.want)
			}
		})
	}
}

// TestControllerSpreadResync: with SpreadResync, the keys of a periodic
// resync come one at a time over the period rather than all at once; the
// listing at Run is not spread.
func TestControllerSpreadResync(t *testing.T) {
	clk := newFakeClock()
	calls := make(chan string, 10)
	keys := []string{"k0", "k1", "k2", "k3"}
	c := &reconcile.Controller{
		Name:         "test",
		Clock:        clk,
		Resync:       4 * time.Minute,
		SpreadResync: true,
		List:         func(context.Context) ([]string, error) { return keys, nil },
		Reconciler: reconcile.ReconcilerFunc(func(ctx context.Context, key string) (reconcile.Result, error) {
			calls <- key
			return reconcile.Result{}, nil
		}),
	}
	start(t, c)
	for range keys {
		recv(t, calls) // at start, all at once
	}
	clk.WaitForTimers(t, 1)
	clk.Advance(4 * time.Minute) // the resync: k0 now, the others later
	if got := recv(t, calls); got != "k0" {
		t.Fatalf("first key of the resync: %s, want k0", got)
	}
	wantNothing(t, calls)
	for _, want := range keys[1:] {
		clk.Advance(time.Minute)
		if got := recv(t, calls); got != want {
			t.Fatalf("got %s, want %s a minute after the last", got, want)
		}
		wantNothing(t, calls)
	}
}

// TestControllerFailingKeyDoesNotSpin: a reconcile that fails and, each
// time, makes a write its own watch brings back (an Enqueue of its key)
// runs only at its backoff: in 10s of a 5s cap, a handful of times, not
// thousands.
func TestControllerFailingKeyDoesNotSpin(t *testing.T) {
	clk := newFakeClock()
	var n atomic.Int32
	var c *reconcile.Controller
	c = &reconcile.Controller{
		Name:   "test",
		Clock:  clk,
		Logger: discardLogger(),
		Reconciler: reconcile.ReconcilerFunc(func(ctx context.Context, key string) (reconcile.Result, error) {
			n.Add(1)
			c.Enqueue(key) // the echo of this reconcile's status write
			go c.Enqueue(key)
			return reconcile.Result{}, errors.New(`image "x" does not exist in tenant demo`)
		}),
	}
	start(t, c)
	c.Enqueue("demo/web")
	deadline := clk.Now().Add(10 * time.Second)
	for clk.Now().Before(deadline) {
		clk.WaitForTimers(t, 1)
		d, _ := clk.NextIn()
		clk.Advance(d)
		time.Sleep(time.Millisecond) // let the echo goroutine run
	}
	// 50ms doubling: 50+100+…+6400ms ≈ 12.7s, so at most 8 tries in 10s.
	if got := n.Load(); got > 9 {
		t.Fatalf("%d reconciles in 10s of backoff: the echoes cut the backoff short", got)
	}
}
