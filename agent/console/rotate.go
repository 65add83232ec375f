package console

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"hearth.dev/hearth/compute"
)

// rotation orders RotateLog against the readers of logs in this process
// (logTail). The rename and the truncation happen under its write lock,
// and count one more rotation of the directory; readers look at the files
// under its read lock, so they see a rotation whole or not at all (between
// the two steps the files overlap: the new console.log.1 holds what
// console.log still holds), and by the count they know whether the log
// was rotated while they read it.
var rotation struct {
	sync.RWMutex
	count map[string]uint64 // VM directory → rotations so far
}

// RotateLog caps the console log in a VM's directory: when
// compute.ConsoleLog holds more than max bytes, it is copied to
// compute.ConsoleLogPrevious (replacing the one kept last time) and
// truncated to nothing in place. It reports whether it rotated.
//
// QEMU keeps the log open while the VM runs, and opened it with O_APPEND
// (the driver's logappend=on), so after the truncation its writes land at
// the new end of the file and no hole opens before them. What the guest
// writes between the copy's last read and the truncation is lost: that
// is a few system calls, and the wait for readers of the log in this
// process to finish looking at the files (not reading them): microseconds.
// The steps come in the order readers rely on:
//
//  1. Copy the log to a temporary file, reading until its end, so what
//     QEMU appends meanwhile goes along. A log more than twice max (one
//     that grew while no agent capped it, or by more than max since the
//     last check) keeps only its last max bytes, so the kept file never
//     needs more than twice max.
//  2. Give the copy the log's modification time: the time of the last
//     output it holds. agent/vms.go's firstOutput tells new output from
//     old by that time, whichever of the two files the output is in.
//  3. Rename the copy over the old ConsoleLogPrevious: readers see the
//     old file or the new one, never half of one.
//  4. Truncate the log. A reader that stats the log and then
//     ConsoleLogPrevious, and finds the log truncated, finds the new copy.
//
// When the copy cannot be made (the usual reason is a full disk, which a
// chatty guest may have caused), the log is truncated all the same and
// the error says what was lost: the cap protects the host.
//
// dir must be spelt as Handler's Resolver spells it: readers learn of the
// rotations of a directory by that name.
func RotateLog(dir string, max int64) (rotated bool, err error) {
	path := filepath.Join(dir, compute.ConsoleLog)
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if fi.Size() <= max {
		return false, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // the VM's directory went meanwhile
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	prev := filepath.Join(dir, compute.ConsoleLogPrevious)
	tmp := prev + ".tmp"
	keepErr := copyLog(f, tmp, fi.Mode().Perm(), max)

	rotation.Lock()
	defer rotation.Unlock()
	if rotation.count == nil {
		rotation.count = map[string]uint64{}
	}
	rotation.count[dir]++
	if keepErr == nil {
		keepErr = os.Rename(tmp, prev)
	}
	if keepErr != nil {
		os.Remove(tmp)
	}
	if err := f.Truncate(0); err != nil {
		return false, errors.Join(keepErr, fmt.Errorf("truncating %s: %w", path, err))
	}
	if keepErr != nil {
		return true, fmt.Errorf("%s was emptied without keeping its contents: %w", path, keepErr)
	}
	return true, nil
}

// copyLog copies the open log to tmp (steps 1 and 2 of RotateLog).
func copyLog(f *os.File, tmp string, perm fs.FileMode, max int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() > 2*max {
		if _, err := f.Seek(fi.Size()-max, io.SeekStart); err != nil {
			return err
		}
	}
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, f)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	// After the copy: the log's time is then that of the last write the
	// copy holds.
	if fi, err = f.Stat(); err != nil {
		return err
	}
	return os.Chtimes(tmp, fi.ModTime(), fi.ModTime())
}
