// Package testguest builds the small guest Hearth's tests boot in QEMU: the
// kernel of Debian's linux-image-cloud-amd64 and an initramfs of
// busybox-static whose /init (rootfs/init) reads the NoCloud seed, sets the
// hostname, runs DHCP, powers off on the ACPI power button, and reports each
// step on the serial console as a "HEARTH-GUEST key=value" line.
//
// Booted from the network as a bare-metal "installer", it reads the kernel
// command line:
//
//	hearth.hostname=NAME  the hostname, when there is no NoCloud seed
//	                      (bare metal has none; a seed's hostname wins)
//	hearth.report=URL     after DHCP (and the user-data script, if any),
//	                      POST a report to URL
//	hearth.token=TOKEN    sent with the report as
//	                      "Authorization: Bearer TOKEN"
//
// The report is one POST from busybox wget, form-encoded
// (application/x-www-form-urlencoded), with these fields:
//
//	ip            eth0's address from DHCP ("" if DHCP failed)
//	hostname      the hostname set ("" if none)
//	mac           eth0's MAC
//	ssh_host_key  "ssh-ed25519 BASE64 root@HOSTNAME": a random Ed25519
//	              public key in authorized_keys format, made at each boot
//	              (the guest runs no SSH server; it stands in for the host
//	              key an installed system reports)
//	result        "ok", or "failed" when the user-data script exited
//	              non-zero
//	message       only with result=failed: why
//
// It tries three times (20 s each, 2 s apart) and prints
// "HEARTH-GUEST report=ok" once the server answered 2xx, else
// "HEARTH-GUEST report=failed".
//
// The guest is built from Debian packages on first use and cached. Building
// needs apt (apt-get, apt-cache; lists fetched with apt-get update, which
// Build runs by itself as root when they are missing) and dpkg (dpkg-deb),
// and xz-utils or zstd only if the kernel's modules are compressed (Debian
// 12's are not). The initramfs is written in Go, so cpio and gzip are not
// needed, and neither is busybox on the building machine.
package testguest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"hearth.dev/hearth/flock"
)

// Marker starts every line the guest's init prints for tests, as
// "HEARTH-GUEST key=value" or "HEARTH-GUEST key". In the order the guest
// prints them:
//
//	booted              /init started
//	module-failed=NAME  a driver did not load
//	acpi=unavailable    no input device for the power button
//	seed=DEVICE|none    where the NoCloud seed was found
//	instance-id=ID      from meta-data
//	hostname=NAME       user-data's hostname (or its fqdn's first label),
//	                    else meta-data's local-hostname, as cloud-init does;
//	                    without a seed, hearth.hostname= from the kernel
//	                    command line
//	ssh-key=KEY         one per key, from user-data's ssh_authorized_keys
//	                    and meta-data's public-keys
//	ip=ADDR             eth0's address from DHCP
//	gateway=ADDR        eth0's default gateway from DHCP
//	dhcp=failed         eth0 exists but got no lease
//	script-exit=N       a user-data script (#!) ran and exited with N
//	ssh-host-key=KEY    the host key the report carries (with
//	                    hearth.report= only)
//	report=ok|failed    whether the report was taken (with
//	                    hearth.report= only)
//	ready               all of the above is done
//	poweroff            the ACPI power button was pressed; the guest
//	                    powers off (QEMU exits, or under Hearth's
//	                    driver keeps the process in status shutdown)
//
// The power button works from the seed= line on (acpid starts before the
// seed search). ParseMarkers collects the markers from a console log.
const Marker = "HEARTH-GUEST"

//go:embed rootfs
var rootfs embed.FS

// Guest is the paths of a built guest.
type Guest struct {
	Kernel, Initrd string
}

// recipeVersion changes when the build changes in a way the recipe hash
// cannot see (the Go code that assembles the initramfs).
const recipeVersion = "1"

// Build returns the guest, building it into cacheDir on first use. cacheDir
// "" means $HEARTH_TESTGUEST_DIR, or else hearth/testguest in the user's
// cache directory. Concurrent callers, in one process or several, wait for
// one build: it happens in a temporary directory under a lock and is
// renamed into place whole. A changed recipe (init script, module list)
// builds into a new directory beside the old one.
func Build(ctx context.Context, cacheDir string) (Guest, error) {
	cacheDir, err := guestCacheDir(cacheDir)
	if err != nil {
		return Guest{}, err
	}
	id, err := recipeID()
	if err != nil {
		return Guest{}, err
	}
	final := filepath.Join(cacheDir, id)
	g := Guest{Kernel: filepath.Join(final, "vmlinuz"), Initrd: filepath.Join(final, "initrd.img")}
	err = buildCached(ctx, cacheDir, id, "test guest", func(ctx context.Context, tmp, out string) error {
		return build(ctx, filepath.Join(tmp, "work"), out)
	}, g.Kernel, g.Initrd)
	if err != nil {
		return Guest{}, err
	}
	return g, nil
}

// buildCached makes cacheDir/name (what, in errors) unless every file of
// want is there and not empty: build writes it into out, a directory
// under the build's temporary directory tmp, which is renamed into place
// whole. Concurrent callers, in one process or several, wait for one
// build under a lock; leftovers of killed builds are removed.
func buildCached(ctx context.Context, cacheDir, name, what string, build func(ctx context.Context, tmp, out string) error, want ...string) error {
	if nonEmpty(want...) {
		return nil
	}
	unlock, err := lockFile(ctx, filepath.Join(cacheDir, name+".lock"))
	if err != nil {
		return err
	}
	defer unlock()
	if nonEmpty(want...) { // another caller built it while we waited
		return nil
	}
	// Leftovers of builds that were killed; the lock says none is running.
	if old, _ := filepath.Glob(filepath.Join(cacheDir, ".build-"+name+"-*")); len(old) > 0 {
		for _, o := range old {
			os.RemoveAll(o)
		}
	}
	tmp, err := os.MkdirTemp(cacheDir, ".build-"+name+"-")
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "out")
	if err := build(ctx, tmp, out); err != nil {
		return fmt.Errorf("build %s: %w", what, err)
	}
	if err := os.Rename(out, filepath.Join(cacheDir, name)); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// nonEmpty reports whether every file of paths exists and is not empty.
func nonEmpty(paths ...string) bool {
	for _, p := range paths {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			return false
		}
	}
	return true
}

// recipeID names a build by what goes into it, so a changed init script
// never runs from a stale cache.
func recipeID() (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "version %s\narch %s\nkernel %s\n", recipeVersion, runtime.GOARCH, kernelPackage())
	for _, m := range wantedModules {
		fmt.Fprintf(h, "module %s %v\n", m.name, m.required)
	}
	if err := hashFiles(h, rootfs, "rootfs"); err != nil {
		return "", fmt.Errorf("test guest: read embedded rootfs: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// hashFiles writes every file under root of fsys, named and sized, to h:
// what a recipe's id is made of.
func hashFiles(h io.Writer, fsys embed.FS, root string) error {
	return fs.WalkDir(fsys, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fsys.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "file %s %d\n", p, len(b))
		h.Write(b)
		return nil
	})
}

func kernelPackage() string {
	return "linux-image-cloud-" + runtime.GOARCH
}

// lockFile takes an exclusive lock on path (see flock), waiting until
// ctx is done: one build at a time, across processes and goroutines.
func lockFile(ctx context.Context, path string) (func(), error) {
	unlock, err := flock.Lock(ctx, path, 200*time.Millisecond)
	if errors.Is(err, flock.ErrBusy) {
		return nil, fmt.Errorf("test guest: waiting for another build (%s): %w", path, ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("test guest lock %s: %w", path, err)
	}
	return unlock, nil
}

// build downloads and unpacks the packages in work and writes vmlinuz,
// initrd.img and guest.json into out.
func build(ctx context.Context, work, out string) error {
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	kpkg, err := resolveKernelPackage(ctx)
	if err != nil {
		return err
	}
	debs := filepath.Join(work, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return err
	}
	// Download as root without apt's _apt sandbox user, which could not
	// write into this directory.
	if _, err := run(ctx, debs, "apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", kpkg, "busybox-static"); err != nil {
		return err
	}
	root := filepath.Join(work, "root")
	entries, err := os.ReadDir(debs)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".deb") {
			if _, err := run(ctx, work, "dpkg-deb", "-x", filepath.Join(debs, e.Name()), root); err != nil {
				return err
			}
		}
	}

	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		return fmt.Errorf("package %s holds %d kernels (boot/vmlinuz-*), want 1", kpkg, len(kernels))
	}
	version := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	modDir := filepath.Join(root, "lib", "modules", version)
	if _, err := os.Stat(modDir); err != nil {
		modDir = filepath.Join(root, "usr", "lib", "modules", version) // merged /usr
	}
	files, builtin, err := indexModules(modDir)
	if err != nil {
		return err
	}
	mods, err := resolveModules(wantedModules, files, builtin, fileDepends(ctx))
	if err != nil {
		return err
	}
	busybox, err := os.ReadFile(filepath.Join(root, "bin", "busybox"))
	if err != nil {
		if busybox, err = os.ReadFile(filepath.Join(root, "usr", "bin", "busybox")); err != nil {
			return fmt.Errorf("busybox-static holds no bin/busybox: %w", err)
		}
	}

	initrd, err := initramfs(ctx, busybox, mods)
	if err != nil {
		return err
	}
	if err := copyFile(kernels[0], filepath.Join(out, "vmlinuz")); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "initrd.img"), initrd, 0o644); err != nil {
		return err
	}
	info := struct {
		KernelPackage string   `json:"kernelPackage"`
		KernelVersion string   `json:"kernelVersion"`
		Modules       []string `json:"modules"`
		Built         string   `json:"built"`
	}{KernelPackage: kpkg, KernelVersion: version, Built: time.Now().UTC().Format(time.RFC3339)}
	for _, m := range mods {
		info.Modules = append(info.Modules, m.name)
	}
	b, _ := json.MarshalIndent(info, "", "  ")
	return os.WriteFile(filepath.Join(out, "guest.json"), append(b, '\n'), 0o644)
}

// resolveKernelPackage finds the versioned package the metapackage points
// at. Without package lists it runs apt-get update once (as root; anyone
// else is told to).
func resolveKernelPackage(ctx context.Context) (string, error) {
	meta := kernelPackage()
	find := func() (string, error) {
		outp, err := run(ctx, "", "apt-cache", "depends", meta)
		if err != nil {
			return "", err
		}
		for _, line := range strings.Split(outp, "\n") {
			if name, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: "); ok && strings.HasPrefix(name, "linux-image-") {
				return name, nil
			}
		}
		return "", fmt.Errorf("apt-cache depends %s names no linux-image package", meta)
	}
	name, err := find()
	if err == nil {
		return name, nil
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("%w (run apt-get update as root, then try again)", err)
	}
	if _, uerr := run(ctx, "", "apt-get", "update", "-q"); uerr != nil {
		return "", fmt.Errorf("%w; apt-get update: %v", err, uerr)
	}
	return find()
}

// initramfs returns the gzip-compressed newc archive: busybox, the embedded
// rootfs (init and its scripts), the modules and their load order, and the
// /dev/console node the kernel opens for init before devtmpfs is mounted.
func initramfs(ctx context.Context, busybox []byte, mods []module) ([]byte, error) {
	entries := []cpioEntry{
		{name: "bin/busybox", mode: modeFile | 0o755, data: busybox},
		{name: "bin/sh", mode: modeLink | 0o777, data: []byte("busybox")},
		{name: "dev/console", mode: modeChar | 0o600, major: 5, minor: 1},
	}
	var order bytes.Buffer
	for _, m := range mods {
		data, err := readModule(ctx, m.path)
		if err != nil {
			return nil, err
		}
		entries = append(entries, cpioEntry{name: "lib/modules/" + m.name + ".ko", mode: modeFile | 0o644, data: data})
		fmt.Fprintln(&order, m.name)
	}
	entries = append(entries, cpioEntry{name: "etc/modules", mode: modeFile | 0o644, data: order.Bytes()})
	err := fs.WalkDir(rootfs, "rootfs", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "rootfs" {
			return err
		}
		name := strings.TrimPrefix(p, "rootfs/")
		if d.IsDir() {
			entries = append(entries, cpioEntry{name: name, mode: modeDir | 0o755})
			return nil
		}
		b, err := rootfs.ReadFile(p)
		if err != nil {
			return err
		}
		// Everything in rootfs is a script.
		entries = append(entries, cpioEntry{name: name, mode: modeFile | 0o755, data: b})
		return nil
	})
	if err != nil {
		return nil, err
	}
	entries = withParents(entries)

	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := writeCPIO(zw, entries); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// withParents adds the directories entries live in that are not entries
// themselves.
func withParents(entries []cpioEntry) []cpioEntry {
	have := map[string]bool{}
	for _, e := range entries {
		have[e.name] = true
	}
	for _, e := range entries {
		for dir := path.Dir(e.name); dir != "." && !have[dir]; dir = path.Dir(dir) {
			have[dir] = true
			entries = append(entries, cpioEntry{name: dir, mode: modeDir | 0o755})
		}
	}
	return entries
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

// run runs a build tool and returns its output; errors carry its stderr.
func run(ctx context.Context, dir, name string, args ...string) (string, error) {
	if _, err := exec.LookPath(name); err != nil {
		return "", fmt.Errorf("%s is needed to build the test guest (Debian packages: apt, dpkg): %w", name, err)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// ParseMarkers returns the values of the guest's marker lines in a console
// log, in the order they appeared: "HEARTH-GUEST hostname=vm1" gives
// "hostname" → ["vm1"]; a marker without "=" ("booted") has the value "".
// Markers may follow other output on a line (a kernel message the console
// interleaved), and serial line endings (\r\n) are fine.
func ParseMarkers(consoleLog string) map[string][]string {
	return parseMarkers(consoleLog, Marker)
}

// parseMarkers reads "MARKER key=value" lines (see ParseMarkers).
func parseMarkers(consoleLog, marker string) map[string][]string {
	m := map[string][]string{}
	for _, line := range strings.Split(consoleLog, "\n") {
		i := strings.Index(line, marker+" ")
		if i < 0 {
			continue
		}
		rest := strings.TrimRight(line[i+len(marker)+1:], "\r \t")
		if rest == "" {
			continue
		}
		key, value, _ := strings.Cut(rest, "=")
		m[key] = append(m[key], value)
	}
	return m
}
