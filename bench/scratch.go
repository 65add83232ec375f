package bench

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// scratchDir makes a new directory in parent named prefix, this
// process's ID and a random suffix, first removing the directories a
// bench run killed before it could clean up (SIGKILL, a crash, the
// machine's OOM killer) left there: theirs carry the ID of a process no
// longer running. A scale run's simulated hosts keep their files in
// /dev/shm, in RAM, so a leftover costs memory until the next boot.
func scratchDir(parent, prefix string) (string, error) {
	sweepScratch(parent, prefix)
	return os.MkdirTemp(parent, prefix+strconv.Itoa(os.Getpid())+"-")
}

// sweepScratch removes parent/prefix<pid>-* for every pid that is not a
// running process. Names without a pid (made before runs recorded it)
// are left alone: nothing says whose they are.
func sweepScratch(parent, prefix string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || !e.IsDir() {
			continue
		}
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		os.RemoveAll(filepath.Join(parent, e.Name()))
	}
}

// processAlive says whether pid names a process: signal 0 checks
// without sending anything; EPERM means it exists but is not ours.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
