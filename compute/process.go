package compute

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"hearth.dev/hearth/process"
)

func infoOf(p process.ID) Info {
	return Info{PID: p.PID, StartedAt: p.StartedAt()}
}

// findProcess reads dir's pid file and checks that the process it names
// lives and is the QEMU of the VM with id. A missing pid file, a dead
// process or someone else's process means no VM (ok false, no error).
func findProcess(id, dir string) (p process.ID, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, PIDFile))
	if errors.Is(err, os.ErrNotExist) {
		return process.ID{}, false, nil
	}
	if err != nil {
		return process.ID{}, false, fmt.Errorf("read pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		// QEMU writes the file in one go; a torn or foreign one is stale.
		return process.ID{}, false, nil
	}
	p, alive := process.Of(pid)
	if !alive {
		return process.ID{}, false, nil
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return process.ID{}, false, nil
	}
	if !bytes.Contains(cmdline, []byte("\x00-uuid\x00"+vmUUID(id)+"\x00")) {
		return process.ID{}, false, nil
	}
	// The process may have been replaced between the two reads.
	if !p.Alive() {
		return process.ID{}, false, nil
	}
	return p, true, nil
}
