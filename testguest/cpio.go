package testguest

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// cpioEntry is one file of an initramfs.
type cpioEntry struct {
	name  string // without a leading slash
	mode  uint32 // type and permission bits, as in stat(2)
	data  []byte // contents, or the target of a symlink
	major uint32 // device numbers, for device nodes
	minor uint32
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeLink = 0o120000
	modeChar = 0o020000
)

// writeCPIO writes entries as a newc cpio archive, the format the kernel
// unpacks an initramfs from. Writing it here rather than with cpio(1) lets
// the archive hold /dev/console without the builder being root, and makes
// it the same on every machine: owners are root, times are zero, and
// entries are sorted so that each directory comes before what it holds.
func writeCPIO(w io.Writer, entries []cpioEntry) error {
	sorted := append([]cpioEntry(nil), entries...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	ino := uint32(1)
	for _, e := range sorted {
		if strings.HasPrefix(e.name, "/") || e.name == "" {
			return fmt.Errorf("cpio entry %q: want a relative path", e.name)
		}
		if err := writeCPIOEntry(w, ino, e); err != nil {
			return err
		}
		ino++
	}
	return writeCPIOEntry(w, 0, cpioEntry{name: "TRAILER!!!"})
}

func writeCPIOEntry(w io.Writer, ino uint32, e cpioEntry) error {
	nlink := uint32(1)
	if e.mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.major, e.minor, len(e.name)+1, 0)
	buf := append([]byte(hdr), e.name...)
	buf = append(buf, 0)
	buf = pad4(buf)
	buf = append(buf, e.data...)
	buf = pad4(buf)
	_, err := w.Write(buf)
	return err
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
