package testguest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BootDisk writes, into dir, a disk image that boots the guest from
// disk: an ISO (isolinux, the guest's kernel and initramfs, with
// console=ttyS0) made hybrid, so that SeaBIOS boots it as a hard disk
// too. It returns the image's path. It needs Debian's genisoimage,
// isolinux, syslinux-common and syslinux-utils (isohybrid).
func BootDisk(ctx context.Context, g Guest, dir string) (string, error) {
	tree := filepath.Join(dir, "tree")
	files := map[string]string{
		"isolinux/isolinux.bin": "/usr/lib/ISOLINUX/isolinux.bin",
		"isolinux/ldlinux.c32":  "/usr/lib/syslinux/modules/bios/ldlinux.c32",
		"vmlinuz":               g.Kernel,
		"initrd.img":            g.Initrd,
	}
	for dst, src := range files {
		data, err := os.ReadFile(src)
		if err != nil {
			return "", fmt.Errorf("%w (install Debian's isolinux and syslinux-common)", err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(tree, dst)), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(tree, dst), data, 0o644); err != nil {
			return "", err
		}
	}
	cfg := "DEFAULT guest\nPROMPT 0\nTIMEOUT 0\nLABEL guest\n  KERNEL /vmlinuz\n  INITRD /initrd.img\n  APPEND console=ttyS0 panic=-1\n"
	if err := os.WriteFile(filepath.Join(tree, "isolinux/isolinux.cfg"), []byte(cfg), 0o644); err != nil {
		return "", err
	}
	iso := filepath.Join(dir, "guest.img")
	for _, c := range [][]string{
		{"genisoimage", "-quiet", "-o", iso, "-V", "GUEST", "-J", "-R", "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
			"-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", tree},
		{"isohybrid", iso},
	} {
		if out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("%s: %v: %s", c[0], err, out)
		}
	}
	return iso, os.RemoveAll(tree)
}
