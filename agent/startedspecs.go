package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// startedSpecs keeps what each VM directory's specFile holds, decoded,
// so that the readers who look at it all the time (every reconcile of a
// VM, every stats sample of it, the volume controller's look for a disk's
// user) decode it only when it changed: a stat, not a read and a JSON
// decode, per look. A change is told by the file's identity (inode,
// size, modification and change times), which a rewrite (atomicfile's
// new file and rename) or a removal changes; the writer need not say
// anything. The zero value is ready; a nil one caches nothing.
type startedSpecs struct {
	mu    sync.Mutex
	byDir map[string]startedSpecEntry
}

type startedSpecEntry struct {
	id   fileID
	spec startedSpec
}

// fileID tells one version of a file from another without reading it.
type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime syscall.Timespec
}

func fileIDOf(fi os.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}, true
}

// read returns what the VM in dir was started with, as readStartedSpec
// does. The spec's slices are shared with other readers: read them only.
func (c *startedSpecs) read(dir string) (startedSpec, bool) {
	if c == nil {
		return readStartedSpec(dir)
	}
	fi, err := os.Stat(filepath.Join(dir, specFile))
	if err != nil {
		c.forget(dir)
		return startedSpec{}, false
	}
	id, ok := fileIDOf(fi)
	if !ok {
		return readStartedSpec(dir)
	}
	c.mu.Lock()
	e, hit := c.byDir[dir]
	c.mu.Unlock()
	if hit && e.id == id {
		return e.spec, true
	}
	// Read, then stat again: a file replaced between the two is read
	// again next time, not remembered under the old one's identity.
	s, ok := readStartedSpec(dir)
	if !ok {
		c.forget(dir)
		return s, false
	}
	if fi, err := os.Stat(filepath.Join(dir, specFile)); err == nil {
		if id2, _ := fileIDOf(fi); id2 == id {
			c.mu.Lock()
			if c.byDir == nil {
				c.byDir = map[string]startedSpecEntry{}
			}
			c.byDir[dir] = startedSpecEntry{id: id, spec: s}
			c.mu.Unlock()
		}
	}
	return s, true
}

// forget drops what is kept of dir (its VM was torn down).
func (c *startedSpecs) forget(dir string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.byDir, dir)
	c.mu.Unlock()
}

// readStartedSpec reads what the VM in dir was started with.
func readStartedSpec(dir string) (startedSpec, bool) {
	var s startedSpec
	data, err := os.ReadFile(filepath.Join(dir, specFile))
	if err != nil || json.Unmarshal(data, &s) != nil {
		return s, false
	}
	return s, true
}
