package reconcile

import "time"

// Clock tells the time and schedules callbacks. Queue and Controller take
// one so that tests can drive backoff, RequeueAfter and resync with a fake
// clock instead of sleeping.
type Clock interface {
	Now() time.Time
	// AfterFunc arranges for f to be called once d has passed. It must not
	// call f before it has returned: callers may hold a lock that f takes.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a callback scheduled with Clock.AfterFunc.
type Timer interface {
	// Stop prevents the callback from running. It reports false if the
	// callback has already run or been stopped.
	Stop() bool
}

// RealClock is the Clock of the time package.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// AfterFunc calls f in its own goroutine after d, like time.AfterFunc.
func (RealClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
