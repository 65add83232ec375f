package testguest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// The Debian image: a real Debian 12 with systemd and Debian's cloud-init,
// for the tests that must prove Hearth works with cloud images, which the
// busybox guest cannot (it only reads the seed the way cloud-init would).
// It is built from Debian's packages by mmdebstrap (recipe in debian/:
// the package list, mmdebstrap hooks and the files they install) into an
// ext4 file system without a partition table or boot loader, converted to
// a compressed qcow2; its kernel and initramfs are kept beside it, and a
// VM boots them directly (spec.boot.from: kernel) with DebianCmdline.
// That skips firmware and a boot loader, seconds under TCG, and needs no
// loop devices or mounts to build.
//
// Once cloud-init is done (or found nothing and disabled itself), a unit
// of the image prints on the serial console, as "HEARTH-CLOUDINIT
// key=value" lines (CloudInitMarker, read with ParseCloudInitMarkers):
//
//	status=LINE        each line of `cloud-init status --long --wait`
//	status-exit=N      its exit code (0: done without errors)
//	network-config=ds|fallback  whether cloud-init applied the
//	                   datasource's network config or, having none, DHCP
//	                   on the first NIC
//	hostname=NAME      the hostname cloud-init set
//	ssh-key=FILE KEY   each line of each authorized_keys file
//	ssh-host-key=KEY   each SSH host public key (type and key)
//	ip=DEV ADDR/LEN    each global IPv4 address, with its interface
//	done               all of the above is printed
//
// User-data can print its own lines to /dev/ttyS0 from runcmd.

//go:embed debian
var debianRecipe embed.FS

// CloudInitMarker starts the lines the Debian image prints on its serial
// console once cloud-init is done (see Debian).
const CloudInitMarker = "HEARTH-CLOUDINIT"

// DebianCmdline is the kernel command line a VM boots the Debian image's
// kernel with: the root file system by its label, the serial console,
// quiet (every line on an emulated serial port costs time under TCG;
// warnings, failed units and cloud-init's own lines still show), and
// no_timer_check: on a busy host an emulated CPU can be too slow for the
// kernel's check of the IO-APIC timer, which then panics ("IO-APIC + timer
// doesn't work!").
const DebianCmdline = "root=LABEL=hearth-root ro console=ttyS0 panic=-1 quiet no_timer_check"

// debianSuite is the Debian release of the image: its cloud-init (22.4)
// is the one Hearth's seed and metadata are checked against.
const debianSuite = "bookworm"

// debianRecipeVersion changes when the build changes in a way the recipe
// hash cannot see (this file's steps after mmdebstrap).
const debianRecipeVersion = "1"

// debianDiskSize is the image's virtual size; the file system fills it.
// Its blocks are sparse, so only what is written costs space.
const debianDiskSize = 2 << 30

// DebianImage is the paths of a built Debian image.
type DebianImage struct {
	// Kernel and Initrd are the image's own kernel and initramfs.
	Kernel, Initrd string
	// Disk is the root file system, a compressed qcow2 (labelled
	// hearth-root).
	Disk string
}

// BuildDebian returns the Debian image, building it into cacheDir on first
// use (cacheDir as for Build). The build directory is named after a hash
// of the recipe (debian-HASH), so a changed recipe builds anew beside the
// old one and an unchanged one is never rebuilt; concurrent callers wait
// for one build, made in a temporary directory and renamed into place
// whole. Building needs root (mmdebstrap's root mode, so that the files
// keep their owners in the image), mmdebstrap, mke2fs (e2fsprogs) and
// qemu-img, and the Debian mirror (HEARTH_DEBIAN_MIRROR and
// HEARTH_DEBIAN_SECURITY, default deb.debian.org): a few minutes, about
// 150 MB of packages.
func BuildDebian(ctx context.Context, cacheDir string) (DebianImage, error) {
	if os.Geteuid() != 0 {
		return DebianImage{}, fmt.Errorf("building the Debian image needs root (mmdebstrap's root mode keeps the files' owners)")
	}
	for _, tool := range []struct{ bin, pkg string }{{"mmdebstrap", "mmdebstrap"}, {"mke2fs", "e2fsprogs"}, {"qemu-img", "qemu-utils"}} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			return DebianImage{}, fmt.Errorf("building the Debian image needs %s (Debian package %s; scripts/deps.sh test installs it)", tool.bin, tool.pkg)
		}
	}
	cacheDir, err := guestCacheDir(cacheDir)
	if err != nil {
		return DebianImage{}, err
	}
	id, err := debianRecipeID()
	if err != nil {
		return DebianImage{}, err
	}
	name := "debian-" + id
	final := filepath.Join(cacheDir, name)
	img := DebianImage{Kernel: filepath.Join(final, "vmlinuz"), Initrd: filepath.Join(final, "initrd.img"), Disk: filepath.Join(final, "disk.qcow2")}
	err = buildCached(ctx, cacheDir, name, "the Debian image", buildDebian, img.Kernel, img.Initrd, img.Disk)
	if err != nil {
		return DebianImage{}, err
	}
	return img, nil
}

// guestCacheDir is Build's cache directory: dir, else
// $HEARTH_TESTGUEST_DIR, else hearth/testguest in the user's cache.
func guestCacheDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("HEARTH_TESTGUEST_DIR")
	}
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("test guest: no cache directory (set HEARTH_TESTGUEST_DIR): %w", err)
		}
		dir = filepath.Join(base, "hearth", "testguest")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("test guest: %w", err)
	}
	return dir, nil
}

// debianRecipeID names a build by what goes into it: every file of the
// recipe, the suite, the architecture and this file's version.
func debianRecipeID() (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "version %s\nsuite %s\narch %s\nsize %d\n", debianRecipeVersion, debianSuite, runtime.GOARCH, debianDiskSize)
	if err := hashFiles(h, debianRecipe, "debian"); err != nil {
		return "", fmt.Errorf("debian image: read embedded recipe: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// debianPackages is the recipe's package list (debian/packages without
// comments).
func debianPackages() ([]string, error) {
	b, err := debianRecipe.ReadFile("debian/packages")
	if err != nil {
		return nil, err
	}
	var pkgs []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			pkgs = append(pkgs, line)
		}
	}
	return pkgs, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// buildDebian runs mmdebstrap into work/root with the recipe's hooks, and
// writes vmlinuz, initrd.img, disk.qcow2 and image.json into out.
func buildDebian(ctx context.Context, work, out string) error {
	recipe := filepath.Join(work, "recipe")
	err := fs.WalkDir(debianRecipe, "debian", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(recipe, strings.TrimPrefix(p, "debian"))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := debianRecipe.ReadFile(p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(p, "debian/hooks/") || bytes.HasPrefix(b, []byte("#!")) {
			mode = 0o755
		}
		return os.WriteFile(dst, b, mode)
	})
	if err != nil {
		return err
	}
	pkgs, err := debianPackages()
	if err != nil {
		return err
	}
	mirror := envOr("HEARTH_DEBIAN_MIRROR", "http://deb.debian.org/debian")
	security := envOr("HEARTH_DEBIAN_SECURITY", "http://deb.debian.org/debian-security")
	root := filepath.Join(work, "root")
	args := []string{"--variant=apt", "--mode=root", "--quiet",
		"--include=" + strings.Join(pkgs, ","),
		"--aptopt=APT::Install-Recommends \"false\"",
		// Documentation, manuals and translations: no test reads them.
		"--dpkgopt=path-exclude=/usr/share/man/*",
		"--dpkgopt=path-exclude=/usr/share/doc/*",
		"--dpkgopt=path-exclude=/usr/share/locale/*",
		"--dpkgopt=path-include=/usr/share/locale/locale.alias",
		"--hook-directory=" + filepath.Join(recipe, "hooks"),
		debianSuite, root,
		fmt.Sprintf("deb %s %s main", mirror, debianSuite),
		fmt.Sprintf("deb %s %s-updates main", mirror, debianSuite),
		fmt.Sprintf("deb %s %s-security main", security, debianSuite),
	}
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	// Timestamps of what mmdebstrap makes itself, for builds that differ
	// only where the packages do.
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mmdebstrap: %v\n%s", err, tailLines(string(b), 40))
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	initrds, _ := filepath.Glob(filepath.Join(root, "boot", "initrd.img-*"))
	if len(kernels) != 1 || len(initrds) != 1 {
		return fmt.Errorf("the image holds %d kernels and %d initramfs images in /boot, want 1 each", len(kernels), len(initrds))
	}
	if err := copyFile(kernels[0], filepath.Join(out, "vmlinuz")); err != nil {
		return err
	}
	if err := copyFile(initrds[0], filepath.Join(out, "initrd.img")); err != nil {
		return err
	}

	// The file system, filled from the root directory by mke2fs itself
	// (no loop device, no mount), with a fixed UUID, hash seed and time
	// so that two builds of the same packages differ only where they do.
	raw := filepath.Join(work, "disk.raw")
	f, err := os.Create(raw)
	if err != nil {
		return err
	}
	if err := f.Truncate(debianDiskSize); err != nil {
		f.Close()
		return err
	}
	f.Close()
	mkfs := exec.CommandContext(ctx, "mke2fs", "-q", "-t", "ext4", "-L", "hearth-root",
		"-U", "2f0e6c4e-8c1f-4f3a-9d55-686561727468", "-E", "hash_seed=2f0e6c4e-8c1f-4f3a-9d55-686561727469", "-d", root, raw)
	mkfs.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1700000000")
	if b, err := mkfs.CombinedOutput(); err != nil {
		return fmt.Errorf("mke2fs: %v: %s", err, b)
	}
	if _, err := run(ctx, work, "qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", raw, filepath.Join(out, "disk.qcow2")); err != nil {
		return err
	}
	os.Remove(raw)

	info := struct {
		Suite    string   `json:"suite"`
		Packages []string `json:"packages"`
		Kernel   string   `json:"kernel"`
		Built    string   `json:"built"`
	}{Suite: debianSuite, Packages: pkgs, Kernel: filepath.Base(kernels[0]), Built: time.Now().UTC().Format(time.RFC3339)}
	b, _ := json.MarshalIndent(info, "", "  ")
	return os.WriteFile(filepath.Join(out, "image.json"), append(b, '\n'), 0o644)
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ParseCloudInitMarkers returns the values of the Debian image's
// "HEARTH-CLOUDINIT key=value" lines in a console log, in order, as
// ParseMarkers does for the busybox guest's.
func ParseCloudInitMarkers(consoleLog string) map[string][]string {
	return parseMarkers(consoleLog, CloudInitMarker)
}
