package dataplanetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"hearth.dev/hearth/atomicfile"
	"hearth.dev/hearth/flock"
	"hearth.dev/hearth/netns"
	"hearth.dev/hearth/process"
)

// Labs of killed tests. A test killed before its Close (go test
// -timeout, kill -9) leaves its namespaces, and whatever runs in them,
// on a machine others share. So New records each lab's prefix with its
// owner (the process that made it: pid and start time) in OwnersDir,
// Close forgets it, and New first sweeps the labs whose owner has
// exited: the processes inside their namespaces are killed and the
// namespaces named with their prefix deleted. A lab whose owner lives
// (a reused pid is another process) is never touched, nor is anything
// not named with a recorded prefix.

// OwnersDir holds a record per lab; /run is emptied at boot, as the
// namespaces are.
const OwnersDir = "/run/hearth/dataplanetest-owners"

type labOwner struct {
	Prefix string `json:"prefix"`
	PID    int    `json:"pid"`
	Start  uint64 `json:"start"`
}

// labPrefix is what New names labs with.
var labPrefix = regexp.MustCompile(`^hdp[0-9a-f]{6}-$`)

func ownerPath(prefix string) string {
	return filepath.Join(OwnersDir, strings.TrimSuffix(prefix, "-")+".json")
}

// recordOwner records this process as the owner of the lab prefix.
func recordOwner(prefix string) error {
	id, ok := process.Of(os.Getpid())
	if !ok {
		return errors.New("dataplanetest: cannot read this process's start time")
	}
	b, _ := json.Marshal(labOwner{Prefix: prefix, PID: id.PID, Start: id.Start})
	if err := os.MkdirAll(OwnersDir, 0o700); err != nil {
		return err
	}
	return atomicfile.Write(ownerPath(prefix), b, 0o600)
}

func forgetOwner(prefix string) {
	os.Remove(ownerPath(prefix))
}

// SweepDeadLabs removes the labs whose owner has exited, and returns
// the prefixes it removed.
func SweepDeadLabs(ctx context.Context) ([]string, error) {
	if _, err := os.Stat(OwnersDir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	lockCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	unlock, err := flock.Lock(lockCtx, OwnersDir, 100*time.Millisecond)
	if err != nil {
		return nil, fmt.Errorf("dataplanetest: sweeping labs of exited tests: %w", err)
	}
	defer unlock()
	paths, _ := filepath.Glob(filepath.Join(OwnersDir, "*.json"))
	var swept []string
	var errs []error
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var o labOwner
		if json.Unmarshal(b, &o) != nil || !labPrefix.MatchString(o.Prefix) || ownerPath(o.Prefix) != p || o.PID <= 0 {
			continue // not certain what it stands for: left alone
		}
		if (process.ID{PID: o.PID, Start: o.Start}).Alive() {
			continue
		}
		if err := removeLab(ctx, o.Prefix); err != nil {
			errs = append(errs, fmt.Errorf("dataplanetest: lab %s of exited pid %d: %w", o.Prefix, o.PID, err))
			continue
		}
		os.Remove(p)
		swept = append(swept, o.Prefix)
	}
	return swept, errors.Join(errs...)
}

// removeLab kills every process inside a namespace named with prefix
// and deletes those namespaces.
func removeLab(ctx context.Context, prefix string) error {
	names, err := netns.List()
	if err != nil {
		return err
	}
	ids := map[[2]uint64]bool{}
	var mine []string
	for _, n := range names {
		if !strings.HasPrefix(n, prefix) {
			continue
		}
		mine = append(mine, n)
		var st syscall.Stat_t
		if syscall.Stat(netns.Path(n), &st) == nil {
			ids[[2]uint64{uint64(st.Dev), st.Ino}] = true
		}
	}
	entries, _ := os.ReadDir("/proc")
	var errs []error
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name()+"/ns/net", &st) != nil || !ids[[2]uint64{uint64(st.Dev), st.Ino}] {
			continue
		}
		if id, ok := process.Of(pid); ok {
			if err := process.Kill(ctx, id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, n := range mine {
		if err := netns.Delete(n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
