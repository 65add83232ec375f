package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"hearth.dev/hearth/atomicfile"
	"hearth.dev/hearth/flock"
	"hearth.dev/hearth/process"
)

// Sandboxes with an owner. A test starts a sandbox (`sandbox up
// --owner-pid`) and removes it when it ends; a test killed by `go test
// -timeout` (or kill -9) never does, and its server, agents, VMs under
// TCG, namespaces and files stay behind on a machine that others share.
// So a sandbox with an owner is recorded in OwnersDir, one file per
// sandbox directory, with the owner's pid and start time, and every New
// first sweeps the recorded sandboxes whose owner has exited: Down on
// each, then the owner's directories left empty.
//
// What keeps the sweep from touching what is not its own: only sandboxes
// recorded here are swept, never one found by its names alone; a
// sandbox whose owner lives (same pid and start time: a reused pid is
// another process) is left alone, and so is one whose directory is
// locked by a sandbox command still at work (Up, machine add); a
// sandbox sharing its prefix with another recorded one whose owner lives
// is left alone too (Down finds processes by the prefix's names); and of
// the owner's directories only empty ones are removed. A sandbox without
// an owner (the default, a person's) is never recorded, and lives until
// `sandbox down`.

// OwnersDir holds the records of sandboxes with an owner. /run is
// emptied at boot, as the namespaces and processes are.
const OwnersDir = "/run/hearth/sandbox-owners"

// ownerRecord is a file of OwnersDir.
type ownerRecord struct {
	Dir    string `json:"dir"`
	Prefix string `json:"prefix"`
	// OwnerPID and OwnerStart name the owner process (process.ID).
	OwnerPID   int    `json:"ownerPID"`
	OwnerStart uint64 `json:"ownerStart"`
	// OwnerDir is Config.OwnerDir: Dir or an ancestor, removed up to
	// which directories left empty are removed.
	OwnerDir string `json:"ownerDir,omitempty"`
}

func (r ownerRecord) owner() process.ID {
	return process.ID{PID: r.OwnerPID, Start: r.OwnerStart}
}

// ownerRecordPath is the record of the sandbox in dir (an absolute path).
func ownerRecordPath(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return filepath.Join(OwnersDir, hex.EncodeToString(sum[:8])+".json")
}

// checkOwner checks Config.OwnerPID and OwnerDir against dir.
func checkOwner(c Config) error {
	if c.OwnerPID == 0 {
		if c.OwnerDir != "" {
			return fmt.Errorf("--owner-dir %s: only a sandbox with an --owner-pid has one", c.OwnerDir)
		}
		return nil
	}
	if _, ok := process.Of(c.OwnerPID); !ok {
		return fmt.Errorf("--owner-pid %d: no such process", c.OwnerPID)
	}
	if c.OwnerDir != "" {
		if !filepath.IsAbs(c.OwnerDir) {
			return fmt.Errorf("--owner-dir %s: want an absolute path", c.OwnerDir)
		}
		rel, err := filepath.Rel(filepath.Clean(c.OwnerDir), c.Dir)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			return fmt.Errorf("--owner-dir %s: want --dir %s or a directory above it", c.OwnerDir, c.Dir)
		}
	}
	return nil
}

// recordOwner records the sandbox's owner, before anything is made.
func recordOwner(c Config) error {
	id, ok := process.Of(c.OwnerPID)
	if !ok {
		return fmt.Errorf("--owner-pid %d: no such process", c.OwnerPID)
	}
	r := ownerRecord{Dir: c.Dir, Prefix: c.Prefix, OwnerPID: id.PID, OwnerStart: id.Start}
	if c.OwnerDir != "" {
		r.OwnerDir = filepath.Clean(c.OwnerDir)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(OwnersDir, 0o700); err != nil {
		return fmt.Errorf("recording the sandbox's owner: %w", err)
	}
	if err := atomicfile.Write(ownerRecordPath(c.Dir), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("recording the sandbox's owner: %w", err)
	}
	return nil
}

// forgetOwner removes the record of the sandbox in dir, once Down has
// removed it all.
func forgetOwner(dir string) error {
	if err := os.Remove(ownerRecordPath(dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func readOwnerRecords() (map[string]ownerRecord, error) {
	paths, err := filepath.Glob(filepath.Join(OwnersDir, "*.json"))
	if err != nil {
		return nil, err
	}
	out := map[string]ownerRecord{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // removed meanwhile
		}
		var r ownerRecord
		// A record that does not parse, or names a directory that is not
		// its own, is left alone: it is not certain what it stands for.
		if json.Unmarshal(b, &r) != nil || r.Dir == "" || r.OwnerPID <= 0 || validPrefix(r.Prefix) != nil || ownerRecordPath(r.Dir) != p {
			continue
		}
		out[p] = r
	}
	return out, nil
}

// Sweep removes every recorded sandbox whose owner has exited (see
// OwnersDir), and says so on progress. It returns what it failed to
// remove; a sandbox it could not remove whole keeps its record, so the
// next sweep tries again. Sweeps of concurrent processes take turns.
func Sweep(ctx context.Context, progress io.Writer) error {
	if progress == nil {
		progress = io.Discard
	}
	if _, err := os.Stat(OwnersDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	lockCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	unlock, err := flock.Lock(lockCtx, OwnersDir, 100*time.Millisecond)
	if err != nil {
		return fmt.Errorf("sweeping sandboxes of exited owners: %w", err)
	}
	defer unlock()
	records, err := readOwnerRecords()
	if err != nil {
		return err
	}
	liveAt := map[string]bool{}
	for _, r := range records {
		if r.owner().Alive() {
			liveAt[r.Prefix] = true
		}
	}
	var errs []error
	for path, r := range records {
		if r.owner().Alive() || liveAt[r.Prefix] {
			continue
		}
		if err := sweepOne(ctx, path, r, progress); err != nil {
			errs = append(errs, fmt.Errorf("sandbox %s (prefix %s) of exited pid %d: %w", r.Dir, r.Prefix, r.OwnerPID, err))
		}
	}
	return errors.Join(errs...)
}

// sweepOne removes one sandbox whose owner has exited.
func sweepOne(ctx context.Context, path string, r ownerRecord, progress io.Writer) error {
	// A sandbox command still at work on it (an Up whose owner died)
	// holds its directory's lock: leave it to finish; the next sweep
	// comes back.
	if _, err := os.Stat(r.Dir); err == nil {
		unlock, err := flock.TryLock(r.Dir)
		if errors.Is(err, flock.ErrBusy) {
			fmt.Fprintf(progress, "sandbox: %s of exited pid %d is busy (a sandbox command holds it); left for the next sweep\n", r.Dir, r.OwnerPID)
			return nil
		}
		if err != nil {
			return err
		}
		defer unlock()
	}
	fmt.Fprintf(progress, "sandbox: removing sandbox %s (prefix %s): its owner, pid %d, has exited\n", r.Dir, r.Prefix, r.OwnerPID)
	if err := Down(ctx, Config{Dir: r.Dir, Prefix: r.Prefix, Progress: progress}); err != nil {
		return err
	}
	// The owner's directories, from Dir up to OwnerDir, if empty.
	if r.OwnerDir != "" {
		for d := r.Dir; ; d = filepath.Dir(d) {
			if os.Remove(d) != nil && exists(d) {
				break
			}
			if d == r.OwnerDir || d == filepath.Dir(d) {
				break
			}
		}
	}
	return forgetOwner(r.Dir)
}
