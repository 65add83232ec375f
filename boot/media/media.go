// Package media writes boot media for machines whose NIC cannot
// network-boot on its own: a CD image (ISO) or a USB stick image that
// starts iPXE, which brings the network up with DHCP and chainloads the
// boot service, so the machine goes on exactly as if it had PXE-booted.
//
// The media boot with BIOS firmware (ISOLINUX loads Debian's ipxe.lkrn
// and hands it the script as its initrd, which iPXE runs). The tools that
// lay out the image come from Debian's isolinux, syslinux-common,
// syslinux-utils (isohybrid) and genisoimage packages.
package media

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Options say what the media boot and where they point.
type Options struct {
	// BootURL is the boot service's HTTP base (http://ADDRESS:8080).
	BootURL string
	// USB makes the image bootable from a USB stick too (isohybrid); it
	// still boots as a CD.
	USB bool
	// IPXE is ipxe.lkrn (default /usr/lib/ipxe/ipxe.lkrn).
	IPXE string
	// ISOLinuxDir and ModulesDir hold isolinux.bin and ldlinux.c32.
	ISOLinuxDir, ModulesDir string
}

// Script is the iPXE script the media run: DHCP on any NIC that answers,
// then the machine's script from the boot service, found by its MAC.
func Script(bootURL string) (string, error) {
	u, err := url.Parse(bootURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("boot URL %q is not an http(s) URL such as http://192.0.2.2:8080", bootURL)
	}
	if strings.ContainsAny(bootURL, " \t\n\"'${}") {
		return "", fmt.Errorf("boot URL %q has characters iPXE would read as script", bootURL)
	}
	base := strings.TrimRight(bootURL, "/")
	return "#!ipxe\n" +
		"echo Hearth boot media: starting the network boot from " + base + "\n" +
		":retry\n" +
		"dhcp || goto wait\n" +
		"chain " + base + "/boot.ipxe?mac=${net0/mac} || goto wait\n" +
		":wait\n" +
		"echo Network boot failed; trying again in 10 seconds\n" +
		"sleep 10\n" +
		"goto retry\n", nil
}

// Write writes the image to path.
func Write(ctx context.Context, path string, o Options) error {
	script, err := Script(o.BootURL)
	if err != nil {
		return err
	}
	if o.IPXE == "" {
		o.IPXE = "/usr/lib/ipxe/ipxe.lkrn"
	}
	if o.ISOLinuxDir == "" {
		o.ISOLinuxDir = "/usr/lib/ISOLINUX"
	}
	if o.ModulesDir == "" {
		o.ModulesDir = "/usr/lib/syslinux/modules/bios"
	}
	tree, err := os.MkdirTemp(filepath.Dir(path), ".hearth-media-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tree)
	files := map[string]string{
		"isolinux/isolinux.bin": filepath.Join(o.ISOLinuxDir, "isolinux.bin"),
		"isolinux/ldlinux.c32":  filepath.Join(o.ModulesDir, "ldlinux.c32"),
		"ipxe.lkrn":             o.IPXE,
	}
	for dst, src := range files {
		data, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("%w (install Debian's ipxe, isolinux and syslinux-common packages)", err)
		}
		if err := writeFile(filepath.Join(tree, dst), data); err != nil {
			return err
		}
	}
	cfg := "DEFAULT hearth\nPROMPT 0\nTIMEOUT 0\nLABEL hearth\n  KERNEL /ipxe.lkrn\n  INITRD /hearth.ipxe\n"
	if err := writeFile(filepath.Join(tree, "isolinux/isolinux.cfg"), []byte(cfg)); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(tree, "hearth.ipxe"), []byte(script)); err != nil {
		return err
	}
	tmp := path + ".tmp"
	mk := exec.CommandContext(ctx, "genisoimage", "-quiet", "-o", tmp, "-V", "HEARTH-BOOT", "-J", "-R",
		"-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", tree)
	if out, err := mk.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("genisoimage: %v: %s", err, strings.TrimSpace(string(out)))
	}
	if o.USB {
		if out, err := exec.CommandContext(ctx, "isohybrid", tmp).CombinedOutput(); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("isohybrid (syslinux-utils): %v: %s", err, strings.TrimSpace(string(out)))
		}
	}
	return os.Rename(tmp, path)
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
