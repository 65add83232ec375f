// Package netns runs code inside Linux network namespaces and keeps named
// ones the way iproute2 does (a bind mount of the namespace under
// /run/netns), so `ip netns` and `ip -n NAME` see what Hearth makes.
//
// Go runs every program on several OS threads, and setns(2) moves only
// the calling thread. Do therefore runs a function on a fresh goroutine
// locked to its OS thread, moves that thread, and never moves it back:
// the goroutine exits while still locked, and the Go runtime then ends
// the thread instead of reusing it. No other goroutine ever runs in a
// namespace it did not ask for, even when a setns back would have failed.
// Sockets a function opens stay in the namespace they were opened in and
// may be used from any goroutine afterwards; processes it starts run
// there, and so do their children.
//
// This is the one place Hearth enters network namespaces; the data plane,
// the sandbox and the tests use it.
package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Handle is an open network namespace: a file descriptor. It is
// github.com/vishvananda/netns's type, so netlink.NewHandleAt and
// netlink.NsFd take it as is. Close it when done.
type Handle = vnetns.NsHandle

// Dir is where named network namespaces are bind-mounted, as iproute2 and
// github.com/vishvananda/netns do it.
const Dir = "/run/netns"

// None is a Handle that refers to no namespace; Do runs on a fresh thread
// in the caller's namespace when given it.
func None() Handle { return vnetns.None() }

// Path is the file that holds the named namespace.
func Path(name string) string { return filepath.Join(Dir, name) }

// ValidName reports whether name can name a namespace: a single, non-empty
// path element.
func ValidName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%q is not a network namespace name (a non-empty file name without '/')", name)
	}
	return nil
}

// Current opens the network namespace the calling goroutine runs in:
// the process's, since no goroutine but Do's ever runs elsewhere. (Not
// /proc/self/ns/net, which is the main thread's: see Do.)
func Current() (Handle, error) {
	return OpenPath("/proc/thread-self/ns/net")
}

// Open opens the named namespace.
func Open(name string) (Handle, error) {
	if err := ValidName(name); err != nil {
		return None(), err
	}
	return OpenPath(Path(name))
}

// OpenPath opens the namespace a file refers to: /run/netns/NAME,
// /proc/PID/ns/net, or any bind mount of one.
func OpenPath(path string) (Handle, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return None(), fmt.Errorf("network namespace %s: %w", path, &os.PathError{Op: "open", Path: path, Err: err})
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err == nil && st.Type != unix.NSFS_MAGIC && st.Type != unix.PROC_SUPER_MAGIC {
		unix.Close(fd)
		return None(), fmt.Errorf("%s is not a network namespace (not on nsfs: is the bind mount gone?)", path)
	}
	return Handle(fd), nil
}

// Do runs fn on an OS thread inside ns and returns its error. The thread
// is thrown away afterwards (see the package comment). With None, fn runs
// on a fresh thread in the caller's namespace, which fn may itself leave
// (unshare, setns) without harm to anyone else.
func Do(ns Handle, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime ends a thread whose goroutine exits
		// while locked to it.
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The main thread is never ended: the runtime parks it for
			// good instead, and a main thread parked in a namespace
			// would keep the namespace alive after its deletion. Hold
			// this thread (so the work cannot land on it) and do the
			// work on another.
			err := Do(ns, fn)
			runtime.UnlockOSThread()
			done <- err
			return
		}
		if ns.IsOpen() {
			if err := vnetns.Set(ns); err != nil {
				done <- fmt.Errorf("entering network namespace: %w", err)
				return
			}
		}
		done <- fn()
	}()
	return <-done
}

// Enter moves the calling OS thread into ns for good. It is only for a
// caller about to replace the process with execve(2), which keeps only
// the calling thread, so the new program runs in ns from its first
// instruction (the sandbox's exec-in): lock the goroutine to its thread
// first (runtime.LockOSThread) and never unlock it. Everything else uses
// Do.
func Enter(ns Handle) error {
	if err := vnetns.Set(ns); err != nil {
		return fmt.Errorf("entering network namespace: %w", err)
	}
	return nil
}

// DoNamed runs fn inside the named namespace, as Do.
func DoNamed(name string, fn func() error) error {
	ns, err := Open(name)
	if err != nil {
		return err
	}
	defer ns.Close()
	return Do(ns, fn)
}

// DoPath runs fn inside the namespace the file at path refers to, as Do.
func DoPath(path string, fn func() error) error {
	ns, err := OpenPath(path)
	if err != nil {
		return err
	}
	defer ns.Close()
	return Do(ns, fn)
}

// Start starts cmd inside ns: it is forked from a thread in ns, and a
// child inherits its parent thread's network namespace. Only the network
// namespace changes: unlike `ip netns exec`, /sys still shows the
// caller's interfaces.
func Start(ns Handle, cmd *exec.Cmd) error {
	return Do(ns, cmd.Start)
}

// New makes an anonymous network namespace. It lives as long as a handle
// on it or a process in it does, and leaves nothing in Dir.
func New() (Handle, error) {
	var ns Handle
	err := Do(None(), func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return err
		}
		var err error
		ns, err = OpenPath(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		return err
	})
	if err != nil {
		return None(), fmt.Errorf("creating a network namespace: %w", err)
	}
	return ns, nil
}

// Create makes a new named network namespace and returns a handle on it.
// It fails with an error wrapping os.ErrExist if the name is taken. As
// iproute2 does, it first makes Dir a shared mount point of its own, so
// the namespaces made later are seen by every mount namespace that shares
// it (and an `ip netns add` run after this one does not hide them).
func Create(name string) (Handle, error) {
	if err := ValidName(name); err != nil {
		return None(), err
	}
	if err := sharedDir(); err != nil {
		return None(), err
	}
	path := Path(name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return None(), fmt.Errorf("creating network namespace %s: %w", name, err)
	}
	f.Close()
	err = Do(None(), func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return err
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		return unix.Mount(self, path, "none", unix.MS_BIND, "")
	})
	if err != nil {
		os.Remove(path)
		return None(), fmt.Errorf("creating network namespace %s: %w", name, err)
	}
	return OpenPath(path)
}

// Delete removes the named namespace's bind mount. The namespace itself
// (and every link in it) goes away once no handle on it and no process in
// it is left. Deleting a name that does not exist returns an error
// wrapping os.ErrNotExist.
func Delete(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	path := Path(name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("deleting network namespace %s: %w", name, os.ErrNotExist)
		}
		return fmt.Errorf("deleting network namespace %s: unmounting: %w", name, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("deleting network namespace %s: %w", name, err)
	}
	return nil
}

// List returns the names in Dir, sorted.
func List() ([]string, error) {
	entries, err := os.ReadDir(Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

// sharedDir makes Dir a shared mount point of its own, as iproute2 does
// before it adds a namespace. Without it, the first `ip netns add` after
// ours bind-mounts Dir over itself and hides our namespaces.
func sharedDir() error {
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err == nil {
		return nil
	}
	// Not a mount point yet: make it one, then shared.
	if err := unix.Mount(Dir, Dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("making %s a mount point: %w", Dir, err)
	}
	if err := unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("sharing %s: %w", Dir, err)
	}
	return nil
}

// WriteSysctl writes a value under /proc/sys of the calling thread's
// network namespace; call it inside Do. key is the path below /proc/sys,
// such as "net/ipv4/ip_forward".
func WriteSysctl(key, value string) error {
	if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// ReadSysctl reads a value under /proc/sys of the calling thread's
// network namespace, without the trailing newline; call it inside Do.
func ReadSysctl(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", key))
	if err != nil {
		return "", fmt.Errorf("sysctl %s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), nil
}
