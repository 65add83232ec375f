package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/testguest"
)

// The shared Images of the Debian image with cloud-init, which VMs boot
// by name: spec.boot.kernel and initrd, and a disk cloned from the root
// file system (examples/sandbox/cloudinit.yaml).
const (
	DebianKernelImage = "debian-kernel"
	DebianInitrdImage = "debian-initrd"
	DebianDiskImage   = "debian-disk"
)

// DebianCmdline is the kernel command line that boots the Debian image.
const DebianCmdline = testguest.DebianCmdline

// BuildDebianImage builds the Debian image with cloud-init, or finds it
// in the build cache (the test guest's), and links its files into
// DIR/debian, where PublishDebianImage's images point.
func (s *Sandbox) BuildDebianImage(ctx context.Context) error {
	img, err := testguest.BuildDebian(ctx, "")
	if err != nil {
		return err
	}
	dir := filepath.Join(s.cfg.Dir, debianSubdir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := s.addPath(dir); err != nil {
		return err
	}
	d := &DebianImage{Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img"), Disk: filepath.Join(dir, "disk.qcow2")}
	for src, dst := range map[string]string{img.Kernel: d.Kernel, img.Initrd: d.Initrd, img.Disk: d.Disk} {
		if err := linkOrCopy(src, dst); err != nil {
			return err
		}
	}
	s.State.DebianImage = d
	return s.State.save()
}

// PublishDebianImage makes the Debian image's files the shared Images
// debian-kernel, debian-initrd (raw) and debian-disk (qcow2): file:// URLs
// into DIR/debian, which the agents are started to allow.
func (s *Sandbox) PublishDebianImage(ctx context.Context) error {
	d := s.State.DebianImage
	if d == nil {
		return errors.New("the Debian image is not built yet")
	}
	c, err := s.Client()
	if err != nil {
		return err
	}
	const what = "the sandbox's Debian image with cloud-init"
	for _, f := range []struct{ name, path, format string }{
		{DebianKernelImage, d.Kernel, api.FormatRaw},
		{DebianInitrdImage, d.Initrd, api.FormatRaw},
		{DebianDiskImage, d.Disk, api.FormatQCOW2},
	} {
		if err := sharedFileImage(ctx, c, f.name, f.path, f.format, what); err != nil {
			return err
		}
	}
	d.KernelImage, d.InitrdImage, d.DiskImage = DebianKernelImage, DebianInitrdImage, DebianDiskImage
	return s.State.save()
}
