package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"hearth.dev/hearth/api/v1alpha1"
)

// sectorSize is the unit disk sizes are rounded up to: qemu-img makes
// disks in whole 512-byte sectors whatever size it is asked for.
const sectorSize = 512

// CreateVolume makes a volume of size bytes (rounded up to a whole sector)
// at path, in format qcow2 (the default, for "") or raw. Without backing the
// volume is blank and sparse. With backing (an image or snapshot file) a
// qcow2 volume is a thin clone that reads unwritten blocks from it, and a
// raw volume is a full copy of it; size 0 then means the backing image's
// virtual size, and a size below that is an error, since it would cut off
// the end of the disk.
//
// A thin clone records the backing file's absolute path, so the backing
// file must stay where it is for as long as the clone exists.
//
// CreateVolume is idempotent: if path already holds a volume of the same
// format, size and backing file it returns nil; if it holds anything else
// it returns an error and leaves it alone. On failure nothing is left at
// path or beside it.
func CreateVolume(ctx context.Context, path, format string, size int64, backing string) error {
	path, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if format == "" {
		format = FormatQCOW2
	}
	if format != FormatQCOW2 && format != FormatRaw {
		return fmt.Errorf("create volume %s: format %q is not qcow2 or raw", path, format)
	}
	if size < 0 {
		return fmt.Errorf("create volume %s: size %d is negative", path, size)
	}

	var src Info
	if backing != "" {
		if backing, err = filepath.Abs(backing); err != nil {
			return err
		}
		if src, err = inspectVolume(ctx, backing); err != nil {
			return fmt.Errorf("create volume %s: backing image: %w", path, err)
		}
		// A backing image that points at other files could point at any
		// file on the host, and the clone would read it for the guest.
		if src.BackingFile != "" || src.DataFile != "" {
			return fmt.Errorf("create volume %s: backing image %s refers to another file (%s); only standalone images can be cloned",
				path, backing, src.BackingFile+src.DataFile)
		}
		switch {
		case size == 0:
			size = src.VirtualSize
		case size < src.VirtualSize:
			return fmt.Errorf("create volume %s: size %s is smaller than the %s virtual size of its image %s; make the volume at least that big",
				path, sizeString(size), sizeString(src.VirtualSize), backing)
		}
	} else if size == 0 {
		return fmt.Errorf("create volume %s: a blank volume needs a size", path)
	}
	size = roundUp(size)
	thin := backing != "" && format == FormatQCOW2

	if exists, err := checkExisting(ctx, path, format, size, thin, backing); exists || err != nil {
		return err
	}

	tmp, err := reserveTemp(path)
	if err != nil {
		return fmt.Errorf("create volume %s: %w", path, err)
	}
	defer os.Remove(tmp) // a no-op once the volume is in place

	sz := strconv.FormatInt(size, 10)
	switch {
	case backing == "":
		_, err = qemuImg(ctx, "create", "-q", "-f", format, tmp, sz)
	case thin:
		_, err = qemuImg(ctx, "create", "-q", "-f", FormatQCOW2, "-b", backing, "-F", src.Format, tmp, sz)
	default: // a raw copy
		_, err = qemuImg(ctx, "convert", "-q", "-f", src.Format, "-O", FormatRaw, backing, tmp)
		if err == nil && size > src.VirtualSize {
			_, err = qemuImg(ctx, "resize", "-q", "-f", FormatRaw, tmp, sz)
		}
	}
	if err == nil {
		err = setFormat(tmp, format)
	}
	if err == nil {
		err = install(tmp, path)
	}
	if errors.Is(err, fs.ErrExist) {
		// Someone made the volume while we did: fine if it is the same.
		_, err := checkExisting(ctx, path, format, size, thin, backing)
		return err
	}
	if err != nil {
		return fmt.Errorf("create volume %s: %w", path, err)
	}
	return nil
}

// checkExisting compares the volume at path, if there is one, with the one
// CreateVolume was asked for, and says what differs.
func checkExisting(ctx context.Context, path, format string, size int64, thin bool, backing string) (exists bool, err error) {
	have, err := inspectVolume(ctx, path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return true, fmt.Errorf("create volume %s: it exists but cannot be read: %w", path, err)
	}
	want := Info{Format: format, VirtualSize: size}
	if thin {
		want.BackingFile = backing
	}
	if have.Format == want.Format && have.VirtualSize == want.VirtualSize && have.BackingFile == want.BackingFile {
		return true, nil
	}
	return true, fmt.Errorf("create volume %s: it already exists as %s, not %s; delete it or choose another path",
		path, describe(have), describe(want))
}

func describe(i Info) string {
	s := i.Format + " " + sizeString(i.VirtualSize)
	if i.BackingFile != "" {
		s += " backed by " + i.BackingFile
	}
	return s
}

// ResizeVolume grows the volume at path to size bytes (rounded up to a
// whole sector). Growing to the current size does nothing; shrinking is an
// error, because it would cut off whatever the guest keeps at the end of
// its disk. qemu-img cannot resize a disk a running VM holds; grow those
// through QEMU (block_resize), which also tells the guest.
func ResizeVolume(ctx context.Context, path string, size int64) error {
	path, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	info, err := inspectVolume(ctx, path)
	if err != nil {
		return fmt.Errorf("resize volume %s: %w", path, err)
	}
	size = roundUp(size)
	switch {
	case size == info.VirtualSize:
		return nil
	case size < info.VirtualSize:
		return fmt.Errorf("resize volume %s: cannot shrink it from %s to %s; volumes only grow",
			path, sizeString(info.VirtualSize), sizeString(size))
	}
	if _, err := qemuImg(ctx, "resize", "-q", "-f", info.Format, path, strconv.FormatInt(size, 10)); err != nil {
		return fmt.Errorf("resize volume %s: %w", path, err)
	}
	return nil
}

// Snapshot copies the volume at volPath to a new qcow2 file at snapPath.
// The copy is flattened: it holds every block the volume reads, its
// backing image's included, and refers to no other file, so it outlives
// both the volume and the image, and serves as the backing file of new
// volumes (CreateVolume) that start from it. Like an image, it must then
// stay until the last volume cloned from it is gone.
//
// A full copy costs space and time that an external snapshot (a new
// overlay on top of the volume) would not, but an overlay changes the
// running volume's file chain, ties the snapshot's life to the volume's,
// and needs the VM's cooperation; a copy needs none of that.
//
// The volume must not change while it is copied, so its VM must be
// stopped: qemu-img refuses a disk a running VM holds. If snapPath already
// exists, the snapshot was taken and Snapshot returns nil.
func Snapshot(ctx context.Context, volPath, snapPath string) error {
	volPath, err := filepath.Abs(volPath)
	if err != nil {
		return err
	}
	snapPath, err = filepath.Abs(snapPath)
	if err != nil {
		return err
	}
	// Only finished snapshots appear under their name.
	if _, err := os.Lstat(snapPath); err == nil {
		return nil
	}
	info, err := inspectVolume(ctx, volPath)
	if err != nil {
		return fmt.Errorf("snapshot volume %s: %w", volPath, err)
	}
	tmp, err := reserveTemp(snapPath)
	if err != nil {
		return fmt.Errorf("snapshot volume %s: %w", volPath, err)
	}
	defer os.Remove(tmp)
	_, err = qemuImg(ctx, "convert", "-q", "-f", info.Format, "-O", FormatQCOW2, volPath, tmp)
	if err == nil {
		err = setFormat(tmp, FormatQCOW2)
	}
	if err == nil {
		err = install(tmp, snapPath)
	}
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("snapshot volume %s to %s: %w", volPath, snapPath, err)
	}
	return nil
}

// DeleteVolume removes the volume (or snapshot) file at path. A missing
// file is not an error: it is already gone.
func DeleteVolume(path string) error {
	if fi, err := os.Lstat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("delete volume %s: it is a directory", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete volume %s: %w", path, err)
	}
	return nil
}

// VolumeInfo reports the format and sizes of the volume at path. Unlike
// Inspect it reads a volume in the format it was made in, not the one its
// contents suggest.
func VolumeInfo(ctx context.Context, path string) (Info, error) {
	return inspectVolume(ctx, path)
}

// reserveTemp creates an empty, hidden file beside path for the new file to
// be built in, so that a failure or a crash never leaves a half-made file
// under the real name.
func reserveTemp(path string) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", err
	}
	name := f.Name()
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// install moves the finished file tmp to path, failing with an
// fs.ErrExist error rather than replacing a file already there. It syncs
// the file and the directory first, so the name never points at a file
// whose contents are still only in memory.
func install(tmp, path string) error {
	if err := syncFile(tmp); err != nil {
		return err
	}
	// A hard link cannot replace a file; rename could.
	err := os.Link(tmp, path)
	switch {
	case err == nil:
		os.Remove(tmp)
	case errors.Is(err, fs.ErrExist):
		return err
	default:
		// The filesystem has no hard links. Rename, after one more look.
		if _, err := os.Lstat(path); err == nil {
			return &fs.PathError{Op: "install", Path: path, Err: fs.ErrExist}
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return syncFile(filepath.Dir(path))
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func roundUp(size int64) int64 {
	return (size + sectorSize - 1) / sectorSize * sectorSize
}

// sizeString writes a size the way volume specs do ("10Gi"), with the
// exact number of bytes when that is not a round number.
func sizeString(n int64) string {
	b := v1alpha1.Bytes(n).String()
	if b == strconv.FormatInt(n, 10) {
		return b + " bytes"
	}
	return fmt.Sprintf("%s (%d bytes)", b, n)
}
