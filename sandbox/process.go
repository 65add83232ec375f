package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"hearth.dev/hearth/process"
)

// startDaemon starts argv in a session of its own, detached from the
// terminal, with stdin from /dev/null and stdout and stderr appended to
// logPath. It outlives the caller.
func startDaemon(argv []string, logPath string) (*Process, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", strings.Join(argv, " "), err)
	}
	// Reap it should it die while this process still runs (tests keep
	// running after Up); once `hearth sandbox up` exits, init does.
	go cmd.Wait()
	p := &Process{PID: cmd.Process.Pid, Log: logPath}
	id, ok := process.Of(p.PID)
	if !ok {
		return p, fmt.Errorf("%s exited at once; see %s", argv[0], logPath)
	}
	p.StartTime = id.Start
	return p, nil
}

// alive reports whether the recorded process still runs. A zombie has
// exited: it only waits for its parent to notice.
func (p *Process) alive() bool {
	return p != nil && process.ID{PID: p.PID, Start: p.StartTime}.Alive()
}

// nsID names a namespace: the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

func nsOf(path string) (nsID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

// proc is a running process with its namespaces.
type proc struct {
	Process
	netns, mntns nsID
}

// processes lists every process but this one, with its network and mount
// namespaces. Processes that exit while the list is made are left out.
func processes() []proc {
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var ps []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		base := "/proc/" + e.Name() + "/ns/"
		net, err1 := nsOf(base + "net")
		mnt, err2 := nsOf(base + "mnt")
		id, alive := process.Of(pid)
		if err1 != nil || err2 != nil || !alive {
			continue
		}
		ps = append(ps, proc{Process: Process{PID: pid, StartTime: id.Start}, netns: net, mntns: mnt})
	}
	return ps
}

// processesInside finds every process inside the given network
// namespaces, and every process in a mount namespace that `sandbox
// exec-in` made for a network namespace ours says is the sandbox's,
// whether or not that still exists. Each host's processes get such a mount
// namespace, so this also finds what a host started in network namespaces
// it made itself (a router namespace of a tenant network, say), even after
// the agent that started it is gone. exec-in's mount namespaces are told
// apart by their /sys: a sysfs whose source is the sandbox namespace's
// name. A process that merely entered a sandbox namespace from elsewhere
// (nsenter from a container, say) does not make its whole mount namespace
// a target.
func processesInside(ids map[nsID]bool, ours func(netnsName string) bool) []Process {
	ps := processes()
	skip := map[nsID]bool{}
	for _, self := range []string{"/proc/self/ns/mnt", "/proc/1/ns/mnt"} {
		if id, err := nsOf(self); err == nil {
			skip[id] = true
		}
	}
	made := map[nsID]bool{}
	checked := map[nsID]bool{}
	var out []Process
	for _, p := range ps {
		if ids[p.netns] {
			out = append(out, p.Process)
			continue
		}
		if skip[p.mntns] {
			continue
		}
		if !checked[p.mntns] {
			checked[p.mntns] = true
			made[p.mntns] = ours(sysfsSource(p.PID))
		}
		if made[p.mntns] {
			out = append(out, p.Process)
		}
	}
	return out
}

// sysfsSource returns the source of the sysfs mounted at /sys in a
// process's mount namespace ("sysfs" on a machine, the network
// namespace's name where exec-in mounted it).
func sysfsSource(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/mountinfo")
	if err != nil {
		return ""
	}
	source := ""
	for _, line := range strings.Split(string(data), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS…] - TYPE SOURCE SUPER
		f := strings.Fields(line)
		if len(f) < 5 || f[4] != "/sys" {
			continue
		}
		for i, x := range f {
			if x == "-" && i+2 < len(f) && f[i+1] == "sysfs" {
				source = f[i+2] // the last mount at /sys is the one seen
			}
		}
	}
	return source
}

// terminate asks the processes to stop (SIGTERM), waits up to grace, then
// kills what is left (SIGKILL). It returns the processes that survived
// even that.
func terminate(ctx context.Context, ps []Process, grace time.Duration) []Process {
	signalAll := func(sig syscall.Signal) {
		for _, p := range ps {
			if p.alive() {
				_ = syscall.Kill(p.PID, sig)
			}
		}
	}
	waitGone := func(d time.Duration) []Process {
		deadline := time.Now().Add(d)
		for {
			var left []Process
			for _, p := range ps {
				if p.alive() {
					left = append(left, p)
				}
			}
			if len(left) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
				return left
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	signalAll(syscall.SIGTERM)
	if left := waitGone(grace); len(left) == 0 {
		return nil
	}
	signalAll(syscall.SIGKILL)
	return waitGone(5 * time.Second)
}

// findServer looks for a `hearth server` whose --data-dir is dataDir, for
// Down without a record of the server's pid.
func findServer(dataDir string) []Process {
	var out []Process
	for _, p := range processes() {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
		isServer, hasDir := false, false
		for i, a := range args {
			switch {
			case a == "server":
				isServer = true
			case a == "--data-dir" && i+1 < len(args) && filepath.Clean(args[i+1]) == dataDir,
				a == "--data-dir="+dataDir:
				hasDir = true
			}
		}
		if isServer && hasDir {
			out = append(out, p.Process)
		}
	}
	return out
}

// logTail returns the last lines of a log, indented, for error messages.
func logTail(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "  (" + path + " does not exist)"
		}
		return "  (" + err.Error() + ")"
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	if len(all) == 1 && all[0] == "" {
		return "  (" + path + " is empty)"
	}
	return "  " + strings.Join(all, "\n  ")
}
