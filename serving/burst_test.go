package serving_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"hearth.dev/hearth/serving"
)

// deadlineRecorder is a ResponseWriter that records the write deadlines
// http.ResponseController sets on it.
type deadlineRecorder struct {
	*httptest.ResponseRecorder
	set []time.Time
}

func (d *deadlineRecorder) SetWriteDeadline(t time.Time) error {
	d.set = append(d.set, t)
	return nil
}

func (d *deadlineRecorder) SetReadDeadline(time.Time) error { return nil }

// TestBurstHoldsDeadline: a burst of writes and flushes between Hold and
// Release sets the write deadline once and lifts it once (over HTTP/2
// each change is a message to the connection's serving goroutine); alone,
// each write and flush sets and lifts its own. Every write still has the
// stall from a recent moment: a held deadline older than a quarter of it
// is moved on.
func TestBurstHoldsDeadline(t *testing.T) {
	const stall = 400 * time.Millisecond
	rec := &deadlineRecorder{ResponseRecorder: httptest.NewRecorder()}
	w := serving.For(rec, stall).Stream(rec)
	burst, ok := w.(serving.Burst)
	if !ok {
		t.Fatal("a stream's writer is not a serving.Burst")
	}
	rec.set = nil // what Stream itself set
	write := func() {
		for range 3 {
			if _, err := w.Write([]byte("event\n")); err != nil {
				t.Fatal(err)
			}
		}
		w.(http.Flusher).Flush()
	}

	write()
	if got, want := len(rec.set), 8; got != want {
		t.Errorf("three writes and a flush without a burst: %d deadline changes, want %d (a set and a lift each)", got, want)
	}

	rec.set = nil
	start := time.Now()
	burst.Hold()
	write()
	burst.Release()
	if got, want := len(rec.set), 2; got != want {
		t.Fatalf("the same in a burst: %d deadline changes, want %d", got, want)
	}
	if d := rec.set[0].Sub(start); d < stall || d > stall+time.Second {
		t.Errorf("the held deadline is %s after Hold, want the stall, %s", d, stall)
	}
	if !rec.set[1].IsZero() {
		t.Errorf("Release set the deadline to %s, want it lifted (zero)", rec.set[1])
	}

	// A burst that outlasts a quarter of the stall moves it on.
	rec.set = nil
	burst.Hold()
	time.Sleep(stall/4 + 20*time.Millisecond)
	before := time.Now()
	write()
	burst.Release()
	if len(rec.set) != 3 {
		t.Fatalf("a write a quarter of the stall into a burst: deadline changes %v, want the hold, one move and the lift", rec.set)
	}
	if rec.set[1].Before(before.Add(stall)) {
		t.Errorf("the moved deadline %s is less than the stall after the write began", rec.set[1].Sub(before))
	}
}
