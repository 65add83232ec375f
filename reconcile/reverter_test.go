package reconcile_test

import (
	"errors"
	"slices"
	"testing"

	"hearth.dev/hearth/reconcile"
)

// steps records undos in the order they ran.
type steps struct{ ran []string }

func (s *steps) undo(name string, err error) func() error {
	return func() error {
		s.ran = append(s.ran, name)
		return err
	}
}

func TestReverterFailUndoesInReverse(t *testing.T) {
	var s steps
	r := reconcile.NewReverter()
	r.Add(s.undo("delete bridge", nil))
	r.Add(s.undo("delete tap", nil))
	r.Add(s.undo("delete nft table", nil))
	if err := r.Fail(); err != nil {
		t.Fatalf("Fail() = %v, want nil", err)
	}
	want := []string{"delete nft table", "delete tap", "delete bridge"}
	if !slices.Equal(s.ran, want) {
		t.Errorf("undos ran %q, want %q", s.ran, want)
	}

	// Fail runs the undos once only.
	if err := r.Fail(); err != nil {
		t.Errorf("second Fail() = %v, want nil", err)
	}
	if !slices.Equal(s.ran, want) {
		t.Errorf("after a second Fail undos ran %q, want %q", s.ran, want)
	}
}

func TestReverterSuccessKeepsChanges(t *testing.T) {
	var s steps
	r := reconcile.NewReverter()
	r.Add(s.undo("delete bridge", nil))
	r.Success()
	if err := r.Fail(); err != nil {
		t.Errorf("Fail() after Success = %v, want nil", err)
	}
	if len(s.ran) != 0 {
		t.Errorf("undos ran %q after Success, want none", s.ran)
	}
}

func TestReverterFailJoinsErrorsAndRunsEveryUndo(t *testing.T) {
	var s steps
	errBridge := errors.New("delete bridge br-a: device busy")
	errTap := errors.New("delete tap tap-a: no such device")
	r := reconcile.NewReverter()
	r.Add(s.undo("delete bridge", errBridge))
	r.Add(s.undo("delete tap", errTap))
	r.Add(s.undo("delete nft table", nil))

	err := r.Fail()
	if !errors.Is(err, errBridge) || !errors.Is(err, errTap) {
		t.Errorf("Fail() = %v, want it to wrap %q and %q", err, errBridge, errTap)
	}
	want := []string{"delete nft table", "delete tap", "delete bridge"}
	if !slices.Equal(s.ran, want) {
		t.Errorf("undos ran %q, want %q", s.ran, want)
	}
}

func TestReverterDeferredFail(t *testing.T) {
	var s steps
	setUp := func(failAt int) error {
		r := reconcile.NewReverter()
		defer r.Fail()
		for i, name := range []string{"bridge", "tap", "nft table"} {
			if i == failAt {
				return errors.New("create " + name + ": permission denied")
			}
			r.Add(s.undo("delete "+name, nil))
		}
		r.Success()
		return nil
	}

	if err := setUp(2); err == nil {
		t.Fatalf("setUp(2) = nil, want an error")
	}
	if want := []string{"delete tap", "delete bridge"}; !slices.Equal(s.ran, want) {
		t.Errorf("after failing at step 3 undos ran %q, want %q", s.ran, want)
	}

	s.ran = nil
	if err := setUp(-1); err != nil {
		t.Fatalf("setUp(-1) = %v, want nil", err)
	}
	if len(s.ran) != 0 {
		t.Errorf("after success undos ran %q, want none", s.ran)
	}
}

func TestReverterCloneHandsUndoToCaller(t *testing.T) {
	var s steps
	r := reconcile.NewReverter()
	r.Add(s.undo("delete bridge", nil))
	cleanup := r.Clone().Fail
	r.Success()
	if err := r.Fail(); err != nil || len(s.ran) != 0 {
		t.Fatalf("Fail() after Success = %v and ran %q, want nil and none", err, s.ran)
	}

	if err := cleanup(); err != nil {
		t.Fatalf("cleanup() = %v, want nil", err)
	}
	if want := []string{"delete bridge"}; !slices.Equal(s.ran, want) {
		t.Errorf("cleanup ran %q, want %q", s.ran, want)
	}
}
