// Package process names a running process so that a later process that
// reuses its pid is not mistaken for it: by its pid and its start time,
// both read from /proc. The compute driver uses it to find and adopt QEMU
// processes that outlived an agent; the sandbox to find and stop the
// servers, agents and machines it started.
package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ID is a process as /proc knows it.
type ID struct {
	PID int
	// Start is when the process started, in clock ticks after boot
	// (field 22 of /proc/PID/stat).
	Start uint64
}

// Of returns the ID of the process with this pid, and whether one lives:
// a zombie (exited, not yet reaped by a parent that may not be us) does
// not.
func Of(pid int) (ID, bool) {
	if pid <= 0 {
		return ID{}, false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ID{}, false
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses;
	// the fields after its last ')' are plain.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ID{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 (starttime) is f[19].
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return ID{}, false
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return ID{}, false
	}
	return ID{PID: pid, Start: start}, true
}

// Alive reports whether the process still runs: its pid names a live
// process that started when it did.
func (id ID) Alive() bool {
	now, ok := Of(id.PID)
	return ok && now.Start == id.Start
}

// StartedAt is when the process started, by the wall clock (to the clock
// tick, and as exact as the boot time /proc/stat gives).
func (id ID) StartedAt() time.Time {
	return bootTime().Add(time.Duration(id.Start) * (time.Second / clockTicks))
}

// WaitGone polls until the process has exited or ctx ends. Polling works
// whoever the process's parent is, which after a restart is not us.
func WaitGone(ctx context.Context, id ID) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for id.Alive() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Kill kills the process (SIGKILL) and waits until it is gone. A process
// already gone is no error.
func Kill(ctx context.Context, id ID) error {
	if !id.Alive() {
		return nil
	}
	if err := syscall.Kill(id.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill pid %d: %w", id.PID, err)
	}
	if err := WaitGone(ctx, id); err != nil {
		return fmt.Errorf("pid %d did not exit after SIGKILL: %w", id.PID, err)
	}
	return nil
}

// clockTicks is USER_HZ, the unit of /proc's times: 100 on every Linux
// port Hearth runs on.
const clockTicks = 100

var bootTime = sync.OnceValue(func() time.Time {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "btime "); ok {
			if s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Unix(s, 0)
			}
		}
	}
	return time.Time{}
})
