package testguest

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// wantedModules are the drivers the guest loads, with everything they
// depend on. Required ones fail the build when the kernel has them neither
// built in nor as a module; the others are taken when present.
var wantedModules = []wantedModule{
	{"virtio_pci", true}, // the virtio devices QEMU's pc and q35 machines offer
	{"virtio_blk", true}, // the seed and the disks
	{"virtio_net", true},
	{"isofs", true},           // the seed's filesystem
	{"virtio_scsi", false},    // a seed or disk on virtio-scsi
	{"ata_piix", false},       // a seed on the pc machine's IDE cdrom
	{"sr_mod", false},         // … which shows up as /dev/sr0
	{"sd_mod", false},         // SCSI disks
	{"button", true},          // the ACPI power button (system_powerdown)
	{"evdev", true},           // … reported to acpid as /dev/input/event*
	{"virtio_rng", false},     // entropy, so nothing waits for it
	{"virtio_console", false}, // hvc consoles, when a driver adds one
	{"pvpanic_mmio", false},   // tells QEMU's pvpanic device of a kernel panic
}

type wantedModule struct {
	name     string
	required bool
}

// module is one kernel module file.
type module struct {
	name    string // "virtio_net": as the kernel and modinfo spell it
	path    string
	depends []string
}

// moduleName turns a file name into the module's name.
func moduleName(file string) string {
	base := filepath.Base(file)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// indexModules finds every module under dir (a kernel's
// lib/modules/<version>) and the names of the built-in ones.
func indexModules(dir string) (map[string]string, map[string]bool, error) {
	files := map[string]string{}
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(d.Name(), ".ko") {
			files[moduleName(d.Name())] = path
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list kernel modules: %w", err)
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, line := range strings.Fields(string(b)) {
			builtin[moduleName(line)] = true
		}
	}
	return files, builtin, nil
}

// resolveModules returns the modules to load for wanted, each after the
// ones it depends on. files maps module names to paths, builtin holds the
// kernel's built-in ones, and dependsOf tells what a module file needs.
func resolveModules(wanted []wantedModule, files map[string]string, builtin map[string]bool, dependsOf func(path string) ([]string, error)) ([]module, error) {
	var order []module
	state := map[string]int{} // 1: visiting, 2: done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("kernel modules depend on each other in a cycle: %s", strings.Join(append(chain, name), " → "))
		case 2:
			return nil
		}
		if builtin[name] {
			state[name] = 2
			return nil
		}
		path, ok := files[name]
		if !ok {
			return fmt.Errorf("kernel module %s (needed by %s) is neither built in nor shipped", name, strings.Join(chain, " → "))
		}
		state[name] = 1
		deps, err := dependsOf(path)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, module{name: name, path: path, depends: deps})
		return nil
	}
	for _, w := range wanted {
		if _, ok := files[w.name]; !ok && !builtin[w.name] {
			if w.required {
				return nil, fmt.Errorf("the kernel has no %s driver, built in or as a module", w.name)
			}
			continue
		}
		if err := visit(w.name, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// fileDepends reads a module file's dependencies.
func fileDepends(ctx context.Context) func(path string) ([]string, error) {
	return func(path string) ([]string, error) {
		data, err := readModule(ctx, path)
		if err != nil {
			return nil, err
		}
		deps, err := moduleDepends(data)
		if err != nil {
			return nil, fmt.Errorf("kernel module %s: %w", path, err)
		}
		return deps, nil
	}
}

// readModule returns a module's ELF contents. Debian 12 ships plain .ko
// files; later releases compress them, and busybox insmod cannot load
// compressed ones, so they are decompressed here.
func readModule(ctx context.Context, path string) ([]byte, error) {
	var tool string
	switch {
	case strings.HasSuffix(path, ".ko"):
		return os.ReadFile(path)
	case strings.HasSuffix(path, ".ko.gz"):
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", path, err)
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(path, ".ko.xz"):
		tool = "xz" // xz-utils
	case strings.HasSuffix(path, ".ko.zst"):
		tool = "zstd"
	default:
		return nil, fmt.Errorf("kernel module %s: unknown compression", path)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tool, "-dc", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("decompress %s with %s (install it to build the test guest): %v: %s", path, tool, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// moduleDepends reads the depends= entry of a module's .modinfo section,
// which is where depmod learns it from.
func moduleDepends(data []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("not an ELF module: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("no .modinfo section")
	}
	info, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read .modinfo: %w", err)
	}
	for _, entry := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(entry, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, strings.ReplaceAll(d, "-", "_"))
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}
