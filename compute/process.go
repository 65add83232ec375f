package compute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is a VM's QEMU process as found in /proc. start (in clock ticks
// after boot) tells it apart from a later process that reuses the PID.
type process struct {
	pid   int
	start uint64
}

func (p process) info() Info {
	return Info{PID: p.pid, StartedAt: bootTime().Add(time.Duration(p.start) * (time.Second / clockTicks))}
}

// findProcess reads dir's pid file and checks that the process it names
// lives and is the QEMU of the VM with id. A missing pid file, a dead
// process or someone else's process means no VM (ok false, no error).
func findProcess(id, dir string) (p process, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, PIDFile))
	if errors.Is(err, os.ErrNotExist) {
		return process{}, false, nil
	}
	if err != nil {
		return process{}, false, fmt.Errorf("read pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		// QEMU writes the file in one go; a torn or foreign one is stale.
		return process{}, false, nil
	}
	start, alive := procStart(pid)
	if !alive {
		return process{}, false, nil
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return process{}, false, nil
	}
	if !bytes.Contains(cmdline, []byte("\x00-uuid\x00"+vmUUID(id)+"\x00")) {
		return process{}, false, nil
	}
	// The process may have been replaced between the two reads.
	if s, alive := procStart(pid); !alive || s != start {
		return process{}, false, nil
	}
	return process{pid: pid, start: start}, true, nil
}

// procStart returns the start time of process pid, and whether it is
// alive: a zombie (exited, not yet reaped by a parent that may not be us)
// is not.
func procStart(pid int) (start uint64, alive bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, false
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, false
	}
	return start, true
}

func (p process) alive() bool {
	s, ok := procStart(p.pid)
	return ok && s == p.start
}

// waitGone polls until the process exits. Polling works whoever the
// parent is, which after an agent restart is not us.
func waitGone(ctx context.Context, p process) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for p.alive() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

func killAndWait(ctx context.Context, p process) error {
	if !p.alive() {
		return nil
	}
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill pid %d: %w", p.pid, err)
	}
	if err := waitGone(ctx, p); err != nil {
		return fmt.Errorf("pid %d did not exit after SIGKILL: %w", p.pid, err)
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
