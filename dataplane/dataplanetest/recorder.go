package dataplanetest

import (
	"context"
	"sync"

	"hearth.dev/hearth/dataplane"
)

// Recorder is a dataplane.Plane that changes nothing: it checks each
// state it is given (as Apply does, so a caller's test sees the same
// field errors) and keeps it. The agent's tests use it to table-test the
// desired state they compute, without root.
type Recorder struct {
	mu      sync.Mutex
	applied []dataplane.HostState
	// Err, when set, is what Apply returns after recording.
	Err     error
	changes chan struct{}
}

var _ dataplane.Plane = (*Recorder)(nil)

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{changes: make(chan struct{}, 1)} }

// Apply implements dataplane.Plane.
func (r *Recorder) Apply(ctx context.Context, s dataplane.HostState) error {
	if err := s.Validate(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied = append(r.applied, s)
	return r.Err
}

// Applied returns the states applied so far, oldest first.
func (r *Recorder) Applied() []dataplane.HostState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]dataplane.HostState(nil), r.applied...)
}

// Last returns the last state applied, and whether there was one.
func (r *Recorder) Last() (dataplane.HostState, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.applied) == 0 {
		return dataplane.HostState{}, false
	}
	return r.applied[len(r.applied)-1], true
}

// RouterNetns implements dataplane.Plane.
func (r *Recorder) RouterNetns(vni uint32) string {
	return dataplane.RouterNetnsName(dataplane.DefaultNetnsPrefix, vni)
}

// Changes implements dataplane.Plane.
func (r *Recorder) Changes() <-chan struct{} { return r.changes }

// Change makes Changes fire, as a Plane does when the host drifted.
func (r *Recorder) Change() {
	select {
	case r.changes <- struct{}{}:
	default:
	}
}

// Close implements dataplane.Plane.
func (r *Recorder) Close() error { return nil }
