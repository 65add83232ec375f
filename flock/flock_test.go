package flock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLock: a directory or a file (made on first use) is held by one
// holder at a time, within a process as across processes; a waiter gets
// it once it is released, and gives up with ErrBusy when its context
// ends.
func TestLock(t *testing.T) {
	dir := t.TempDir()
	for _, path := range []string{dir, filepath.Join(dir, "x.lock")} {
		unlock, err := TryLock(path)
		if err != nil {
			t.Fatalf("TryLock(%s): %v", path, err)
		}
		if _, err := TryLock(path); !errors.Is(err, ErrBusy) {
			t.Errorf("TryLock(%s) while held = %v, want ErrBusy", path, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_, err = Lock(ctx, path, 10*time.Millisecond)
		cancel()
		if !errors.Is(err, ErrBusy) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Lock(%s) while held until the deadline = %v, want ErrBusy and the deadline", path, err)
		}
		got := make(chan error, 1)
		go func() {
			unlock, err := Lock(context.Background(), path, 10*time.Millisecond)
			if err == nil {
				unlock()
			}
			got <- err
		}()
		time.Sleep(30 * time.Millisecond)
		unlock()
		select {
		case err := <-got:
			if err != nil {
				t.Errorf("Lock(%s) after the release: %v", path, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Lock(%s) still waits after the release", path)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "x.lock")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("the lock file: %v, %v; want a file that stays", fi, err)
	}
	if _, err := TryLock(filepath.Join(dir, "missing", "x.lock")); err == nil || errors.Is(err, ErrBusy) {
		t.Errorf("TryLock in a missing directory = %v, want the open's error", err)
	}
}
