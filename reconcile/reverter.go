package reconcile

import (
	"errors"
	"slices"
)

// Reverter undoes the completed steps of a multi-step host change when a
// later step fails, so a failed reconcile leaves the host as it found it
// instead of half-configured:
//
//	r := reconcile.NewReverter()
//	defer r.Fail()
//	if err := createBridge(); err != nil {
//		return err
//	}
//	r.Add(deleteBridge)
//	if err := attachTap(); err != nil {
//		return err // deleteBridge runs
//	}
//	r.Success()
//	return nil
//
// A Reverter belongs to one goroutine and is used once.
type Reverter struct {
	undo []func() error
	done bool
}

// NewReverter returns a Reverter with nothing to undo.
func NewReverter() *Reverter {
	return &Reverter{}
}

// Add registers the undo of a step that has just succeeded. Undos run in
// the reverse order of Add, the way the steps would be taken apart by hand.
func (r *Reverter) Add(undo func() error) {
	r.undo = append(r.undo, undo)
}

// Success keeps the changes: a later Fail does nothing.
func (r *Reverter) Success() {
	r.done = true
	r.undo = nil
}

// Fail runs every registered undo, last added first, unless Success or
// Fail was already called. An undo that fails does not stop the others;
// their errors are joined. Fail is meant to be deferred right after
// NewReverter, where its error is usually dropped because the step's own
// error says more; call it directly to report failed undos as well.
func (r *Reverter) Fail() error {
	if r.done {
		return nil
	}
	r.done = true
	var errs []error
	for _, undo := range slices.Backward(r.undo) {
		if err := undo(); err != nil {
			errs = append(errs, err)
		}
	}
	r.undo = nil
	return errors.Join(errs...)
}

// Clone returns a Reverter holding the same undos. It hands the undo on to
// a caller: a function that sets something up can return
// r.Clone().Fail as its cleanup and then call r.Success().
func (r *Reverter) Clone() *Reverter {
	return &Reverter{undo: slices.Clone(r.undo), done: r.done}
}
