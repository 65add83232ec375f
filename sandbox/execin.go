package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"

	"hearth.dev/hearth/netns"
)

// ExecInCommand is the hidden subcommand of the hearth binary that runs a
// command inside a network namespace: `hearth sandbox exec-in NETNS --
// CMD ARGS…`. The cli package registers it; Command builds it.
var ExecInCommand = []string{"sandbox", "exec-in"}

// Command returns a command that runs argv inside the named network
// namespace, through exe's exec-in subcommand (see ExecIn).
func Command(exe, netnsName string, argv ...string) *exec.Cmd {
	args := append(append(append([]string{}, ExecInCommand...), netnsName, "--"), argv...)
	return exec.Command(exe, args...)
}

// ExecIn replaces the calling process with argv running inside the named
// network namespace; it returns only if that fails.
//
// Go runs every program on several OS threads, and setns(2) moves only
// the calling thread. So ExecIn locks its goroutine to its thread, moves
// that thread, and calls execve(2) from it: execve keeps only the calling
// thread, so the new program runs entirely in the namespace, from its
// first instruction, as do its children.
//
// Like `ip netns exec`, it also gives the program a mount namespace of its
// own in which /sys shows the namespace's interfaces, and in which
// /run/netns is an empty tmpfs: a sandbox host sees only the network
// namespaces it makes itself, as a separate machine would, so two hosts'
// agents may use the same names. Mounts made there never propagate back
// to the machine.
func ExecIn(netnsName string, argv []string) error {
	if len(argv) == 0 {
		return errors.New("exec-in: give a command to run after --")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("exec-in: %w", err)
	}
	target, err := netns.Open(netnsName)
	if err != nil {
		return fmt.Errorf("exec-in: %w", err)
	}
	// Never unlocked: this thread either becomes the new program or the
	// process exits with the error.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("exec-in: new mount namespace: %w", err)
	}
	// Make every mount a slave first, so the unmount of /sys below and
	// anything the program mounts stay in its own mount namespace.
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("exec-in: making mounts private: %w", err)
	}
	if err := netns.Enter(target); err != nil {
		return fmt.Errorf("exec-in: %s: %w", netnsName, err)
	}
	// sysfs shows the network namespace of whoever mounts it.
	if err := unix.Unmount("/sys", unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("exec-in: unmounting /sys: %w", err)
	}
	if err := unix.Mount(netnsName, "/sys", "sysfs", 0, ""); err != nil {
		return fmt.Errorf("exec-in: mounting /sys: %w", err)
	}
	if err := os.MkdirAll(netns.Dir, 0o755); err != nil {
		return fmt.Errorf("exec-in: %w", err)
	}
	if err := unix.Mount("tmpfs", netns.Dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755"); err != nil {
		return fmt.Errorf("exec-in: a private %s: %w", netns.Dir, err)
	}
	err = unix.Exec(path, argv, os.Environ())
	return fmt.Errorf("exec-in: running %s: %w", path, err)
}
