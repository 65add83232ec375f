// Package peer is what the test harnesses of real storage peers
// (storage/cephtest, storage/nfstest) share: a working directory that
// names the test process owning it, so that the next test process can
// recognise and sweep what a killed one left running.
//
// A harness makes its directory with NewDir(PREFIX), starts its daemons
// with command lines or namespaces that name that directory, and removes
// everything when its process ends normally. A process killed before that
// (SIGKILL, a test binary's -timeout panic) leaves daemons behind; the next
// harness of the same kind calls Sweep(PREFIX, kill) before it starts,
// which finds directories whose owner is gone and hands each to kill.
package peer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"hearth.dev/hearth/process"
)

// ownerFile, in a harness's directory, holds "PID STARTTIME" of the
// process that made it: a PID alone could have been reused since.
const ownerFile = "owner"

// NewDir makes a directory under the system's temporary directory named
// PREFIX-PID-RANDOM and records this process as its owner.
func NewDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s-%d-", prefix, os.Getpid()))
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", err
	}
	id, err := processID(os.Getpid())
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(id), 0o600); err != nil {
		return "", err
	}
	return dir, nil
}

// processID is "PID STARTTIME", STARTTIME being the process's start in
// clock ticks after boot (see package process).
func processID(pid int) (string, error) {
	id, ok := process.Of(pid)
	if !ok {
		return "", fmt.Errorf("process %d: gone", pid)
	}
	return strconv.Itoa(id.PID) + " " + strconv.FormatUint(id.Start, 10), nil
}

// alive reports whether the process an owner file names still runs.
func alive(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		// A directory whose owner file is not written yet may belong to
		// a harness starting right now: leave young ones alone.
		fi, serr := os.Stat(dir)
		return serr == nil && time.Since(fi.ModTime()) < time.Minute
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return false
	}
	now, err := processID(pid)
	return err == nil && now == string(b)
}

// Sweep finds the directories PREFIX-* whose owner process is gone, calls
// kill(dir) for each to stop what it left running, and removes the
// directory once kill returns nil.
func Sweep(prefix string, kill func(dir string) error) error {
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), prefix+"-*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		if alive(d) {
			continue
		}
		if err := kill(d); err != nil {
			errs = append(errs, fmt.Errorf("sweep %s: %w", d, err))
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Processes returns the PIDs of the processes for which match returns
// true, given each one's NUL-separated command line.
func Processes(match func(pid int, cmdline string) bool) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if match(pid, string(b)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// KillAndWait sends SIGKILL to each of pids and waits up to timeout for
// them to be gone.
func KillAndWait(pids []int, timeout time.Duration) error {
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill %d: %w", pid, err)
		}
	}
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, fs.ErrNotExist) {
				break
			}
			// A killed child of a dead parent is reaped by init; a zombie
			// of ours has no cmdline left and is as good as gone.
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); len(b) == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("process %d did not exit within %s of SIGKILL", pid, timeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}
