package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Disk formats qemu-img makes volumes in.
const (
	FormatQCOW2 = "qcow2"
	FormatRaw   = "raw"
)

// Info is what qemu-img reports about a disk image file.
type Info struct {
	// Format is the image's format: qcow2, raw, vmdk, …
	Format string
	// VirtualSize is the size of the disk the image holds (what a guest
	// sees); ActualSize is the space the file takes on the host.
	VirtualSize int64
	ActualSize  int64
	// BackingFile is the absolute path of the image a qcow2 thin clone
	// reads unwritten blocks from, and BackingFormat that image's format
	// as recorded in the clone; both are "" for a standalone image.
	BackingFile   string
	BackingFormat string
	// DataFile is a qcow2 image's external data file, "" for none.
	DataFile string
}

// Inspect reports the format and sizes of the image at path, with the
// format detected from its contents. Use it for images and files Hearth did
// not make; VolumeInfo is the safe way to look at a volume.
func Inspect(ctx context.Context, path string) (Info, error) {
	return inspect(ctx, path, "")
}

// inspect runs qemu-img info on path, reading it as format, or detecting
// the format when format is "". It shares the image (-U) so that it also
// works on a disk a running VM holds locked.
func inspect(ctx context.Context, path, format string) (Info, error) {
	path, err := filepath.Abs(path)
	if err != nil {
		return Info{}, err
	}
	// Stat first so that a missing file is an fs.ErrNotExist callers can
	// test for, not just words in qemu-img's stderr.
	if _, err := os.Stat(path); err != nil {
		return Info{}, err
	}
	return qemuImgInfo(ctx, path, format)
}

// qemuImgInfo runs qemu-img info on name (a path or a URL qemu-img
// opens, such as nfs://…), as inspect does.
func qemuImgInfo(ctx context.Context, path, format string) (Info, error) {
	args := []string{"info", "--output=json", "-U"}
	if format != "" {
		args = append(args, "-f", format)
	}
	out, err := qemuImg(ctx, append(args, path)...)
	if err != nil {
		return Info{}, err
	}
	var raw struct {
		Format              string `json:"format"`
		VirtualSize         int64  `json:"virtual-size"`
		ActualSize          int64  `json:"actual-size"`
		BackingFilename     string `json:"backing-filename"`
		FullBackingFilename string `json:"full-backing-filename"`
		BackingFormat       string `json:"backing-filename-format"`
		FormatSpecific      struct {
			Data struct {
				DataFile string `json:"data-file"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return Info{}, fmt.Errorf("qemu-img info %s: unexpected output: %w", path, err)
	}
	backing := raw.FullBackingFilename
	if backing == "" {
		backing = raw.BackingFilename
	}
	return Info{
		Format:        raw.Format,
		VirtualSize:   raw.VirtualSize,
		ActualSize:    raw.ActualSize,
		BackingFile:   backing,
		BackingFormat: raw.BackingFormat,
		DataFile:      raw.FormatSpecific.Data.DataFile,
	}, nil
}

// qemuImg runs qemu-img and returns its stdout. Its error carries qemu-img's
// own message, which is usually the useful part ("Failed to get shared
// "write" lock", "Image size too large").
func qemuImg(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "qemu-img", args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	switch {
	case err == nil:
		return stdout.Bytes(), nil
	case errors.Is(err, exec.ErrNotFound):
		return nil, fmt.Errorf("qemu-img is not installed (install the qemu-utils package): %w", err)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("qemu-img %s: %w", args[0], ctx.Err())
	}
	msg := strings.TrimSpace(stderr.String())
	msg = strings.TrimPrefix(msg, "qemu-img: ")
	if msg == "" {
		return nil, fmt.Errorf("qemu-img %s: %w", strings.Join(args, " "), err)
	}
	return nil, fmt.Errorf("qemu-img %s: %s", args[0], msg)
}

// formatAttr is the extended attribute that records the format a volume
// was made in (see the package comment for why).
const formatAttr = "user.hearth.format"

// setFormat records format on the file at path. Filesystems without user
// extended attributes are tolerated: there the format is detected, as for
// files Hearth did not make.
func setFormat(path, format string) error {
	err := syscall.Setxattr(path, formatAttr, []byte(format), 0)
	if err != nil && !errors.Is(err, syscall.ENOTSUP) {
		return fmt.Errorf("record format of %s: %w", path, err)
	}
	return nil
}

// recordedFormat returns the format recorded on path by setFormat, or ""
// when there is none.
func recordedFormat(path string) string {
	buf := make([]byte, 16)
	n, err := syscall.Getxattr(path, formatAttr, buf)
	if err != nil {
		return ""
	}
	switch f := string(buf[:n]); f {
	case FormatQCOW2, FormatRaw:
		return f
	}
	return ""
}

// inspectVolume is inspect with the volume's recorded format, if any.
func inspectVolume(ctx context.Context, path string) (Info, error) {
	return inspect(ctx, path, recordedFormat(path))
}
