package testguest

import (
	"bytes"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParseMarkers(t *testing.T) {
	tests := []struct {
		name string
		log  string
		want map[string][]string
	}{
		{
			name: "empty",
			log:  "",
			want: map[string][]string{},
		},
		{
			name: "serial console log",
			log: "[    1.63] Run /init as init process\r\n" +
				"HEARTH-GUEST booted\r\n" +
				"HEARTH-GUEST hostname=vm1\r\n" +
				"HEARTH-GUEST ssh-key=ssh-ed25519 AAAA a@b\r\n" +
				"HEARTH-GUEST ssh-key=ssh-rsa BBBB c=d\r\n" +
				"udhcpc: lease of 10.0.2.15 obtained\r\n" +
				"HEARTH-GUEST ip=10.0.2.15\r\n" +
				"HEARTH-GUEST ready\r\n",
			want: map[string][]string{
				"booted":   {""},
				"hostname": {"vm1"},
				"ssh-key":  {"ssh-ed25519 AAAA a@b", "ssh-rsa BBBB c=d"},
				"ip":       {"10.0.2.15"},
				"ready":    {""},
			},
		},
		{
			name: "marker after interleaved kernel output",
			log:  "[    2.1] virtio_net virtio1 eth0: renamedHEARTH-GUEST seed=/dev/vda\n",
			want: map[string][]string{"seed": {"/dev/vda"}},
		},
		{
			name: "not markers",
			log:  "HEARTH-GUEST\nHEARTH-GUESTS ready\nhearth-guest ready\nHEARTH-GUEST \n",
			want: map[string][]string{},
		},
		{
			name: "empty value",
			log:  "HEARTH-GUEST instance-id=\n",
			want: map[string][]string{"instance-id": {""}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseMarkers(tt.log); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseMarkers() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestResolveModules(t *testing.T) {
	graph := map[string][]string{
		"virtio_net":   {"net_failover", "virtio", "virtio_ring"},
		"net_failover": {"failover"},
		"failover":     nil,
		"virtio":       {"virtio_ring"},
		"virtio_ring":  nil,
		"virtio_blk":   {"virtio", "virtio_ring"},
		"isofs":        {"cdrom"},
		"cdrom":        nil,
		"loop_a":       {"loop_b"},
		"loop_b":       {"loop_a"},
		"needs_gone":   {"gone"},
		"uses_builtin": {"crc32c"},
	}
	files := map[string]string{}
	for name := range graph {
		files[name] = "/mods/" + name + ".ko"
	}
	builtin := map[string]bool{"crc32c": true, "evdev": true}
	dependsOf := func(path string) ([]string, error) {
		name := strings.TrimSuffix(strings.TrimPrefix(path, "/mods/"), ".ko")
		return graph[name], nil
	}
	names := func(mods []module) string {
		var n []string
		for _, m := range mods {
			n = append(n, m.name)
		}
		return strings.Join(n, " ")
	}
	tests := []struct {
		name    string
		wanted  []wantedModule
		want    string
		wantErr string
	}{
		{
			name:   "dependencies first, each once",
			wanted: []wantedModule{{"virtio_net", true}, {"virtio_blk", true}, {"isofs", true}},
			want:   "failover net_failover virtio_ring virtio virtio_net virtio_blk cdrom isofs",
		},
		{
			name:   "built-in modules are not loaded",
			wanted: []wantedModule{{"evdev", true}, {"uses_builtin", true}},
			want:   "uses_builtin",
		},
		{
			name:   "missing optional module is skipped",
			wanted: []wantedModule{{"ata_piix", false}, {"cdrom", true}},
			want:   "cdrom",
		},
		{
			name:    "missing required module",
			wanted:  []wantedModule{{"ata_piix", true}},
			wantErr: "no ata_piix driver",
		},
		{
			name:    "missing dependency",
			wanted:  []wantedModule{{"needs_gone", false}},
			wantErr: "kernel module gone (needed by needs_gone)",
		},
		{
			name:    "cycle",
			wanted:  []wantedModule{{"loop_a", true}},
			wantErr: "cycle: loop_a → loop_b → loop_a",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveModules(tt.wanted, files, builtin, dependsOf)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("resolveModules() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if names(got) != tt.want {
				t.Errorf("resolveModules() = %q, want %q", names(got), tt.want)
			}
		})
	}
}

func TestModuleName(t *testing.T) {
	for file, want := range map[string]string{
		"kernel/drivers/net/virtio_net.ko":   "virtio_net",
		"kernel/drivers/net/net-failover.ko": "net_failover",
		"kernel/fs/isofs/isofs.ko.xz":        "isofs",
		"kernel/drivers/scsi/sr_mod.ko.zst":  "sr_mod",
	} {
		if got := moduleName(file); got != want {
			t.Errorf("moduleName(%q) = %q, want %q", file, got, want)
		}
	}
}

// readNewc parses a newc archive, independently of writeCPIO.
func readNewc(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	field := func(hdr []byte, i int) uint32 {
		v, err := strconv.ParseUint(string(hdr[6+8*i:6+8*i+8]), 16, 32)
		if err != nil {
			t.Fatalf("bad header field %d: %v", i, err)
		}
		return uint32(v)
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	var out []cpioEntry
	for off := 0; ; {
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("no newc header at offset %d", off)
		}
		hdr := b[off : off+110]
		namesize, filesize := int(field(hdr, 11)), int(field(hdr, 6))
		name := string(b[off+110 : off+110+namesize-1])
		if b[off+110+namesize-1] != 0 {
			t.Fatalf("entry %q: name not NUL-terminated", name)
		}
		dataOff := align(off + 110 + namesize)
		if name == "TRAILER!!!" {
			if rest := b[dataOff:]; len(rest) != 0 {
				t.Fatalf("%d bytes after the trailer", len(rest))
			}
			return out
		}
		out = append(out, cpioEntry{name: name, mode: field(hdr, 1), data: b[dataOff : dataOff+filesize],
			major: field(hdr, 9), minor: field(hdr, 10)})
		off = align(dataOff + filesize)
	}
}

func TestWriteCPIO(t *testing.T) {
	entries := withParents([]cpioEntry{
		{name: "init", mode: modeFile | 0o755, data: []byte("#!/bin/sh\n")},
		{name: "bin/sh", mode: modeLink | 0o777, data: []byte("busybox")},
		{name: "dev/console", mode: modeChar | 0o600, major: 5, minor: 1},
		{name: "etc/acpi/PWRF/00000080", mode: modeFile | 0o755, data: []byte("odd")},
	})
	var buf bytes.Buffer
	if err := writeCPIO(&buf, entries); err != nil {
		t.Fatal(err)
	}
	got := readNewc(t, buf.Bytes())
	var names []string
	byName := map[string]cpioEntry{}
	for _, e := range got {
		names = append(names, e.name)
		byName[e.name] = e
	}
	want := "bin bin/sh dev dev/console etc etc/acpi etc/acpi/PWRF etc/acpi/PWRF/00000080 init"
	if strings.Join(names, " ") != want {
		t.Errorf("archive holds %q, want %q (directories before their contents)", strings.Join(names, " "), want)
	}
	if e := byName["dev/console"]; e.mode != modeChar|0o600 || e.major != 5 || e.minor != 1 {
		t.Errorf("dev/console = mode %o dev %d:%d, want char device 5:1", e.mode, e.major, e.minor)
	}
	if e := byName["bin/sh"]; e.mode&0o170000 != modeLink || string(e.data) != "busybox" {
		t.Errorf("bin/sh = mode %o target %q, want a symlink to busybox", e.mode, e.data)
	}
	if e := byName["etc/acpi/PWRF/00000080"]; string(e.data) != "odd" || e.mode != modeFile|0o755 {
		t.Errorf("script = mode %o %q", e.mode, e.data)
	}
	if e := byName["etc/acpi"]; e.mode != modeDir|0o755 {
		t.Errorf("etc/acpi mode = %o, want a directory", e.mode)
	}

	if err := writeCPIO(&buf, []cpioEntry{{name: "/abs"}}); err == nil {
		t.Error("writeCPIO with an absolute name: got no error")
	}
}

func TestModuleDependsRejectsNonELF(t *testing.T) {
	if _, err := moduleDepends([]byte("not elf")); err == nil {
		t.Error("moduleDepends(garbage): got no error")
	}
}

// TestParseCloudInitMarkers: the Debian image's report lines, with the
// busybox guest's markers and cloud-init's own console lines beside them.
func TestParseCloudInitMarkers(t *testing.T) {
	log := "[  145.6] cloud-init[376]: Cloud-init v. 22.4.2 finished\r\n" +
		"HEARTH-GUEST hostname=busybox\r\n" +
		"HEARTH-CLOUDINIT status=status: done\r\n" +
		"HEARTH-CLOUDINIT status=detail:\r\n" +
		"HEARTH-CLOUDINIT status-exit=0\r\n" +
		"HEARTH-CLOUDINIT ssh-key=/home/debian/.ssh/authorized_keys ssh-ed25519 AAAA a@b\r\n" +
		"HEARTH-CLOUDINIT ip=hearth0 10.20.1.10/24\r\n" +
		"HEARTH-CLOUDINIT done\r\n"
	got := ParseCloudInitMarkers(log)
	want := map[string][]string{
		"status":      {"status: done", "detail:"},
		"status-exit": {"0"},
		"ssh-key":     {"/home/debian/.ssh/authorized_keys ssh-ed25519 AAAA a@b"},
		"ip":          {"hearth0 10.20.1.10/24"},
		"done":        {""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseCloudInitMarkers = %q, want %q", got, want)
	}
}

// TestDebianRecipe: the recipe names a package list, and its hash, which
// names the cached image, is the same on every call.
func TestDebianRecipe(t *testing.T) {
	pkgs, err := debianPackages()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cloud-init", "linux-image-cloud-amd64", "systemd-sysv", "isc-dhcp-client"} {
		if !slices.Contains(pkgs, want) {
			t.Errorf("packages %q lack %s", pkgs, want)
		}
	}
	a, err := debianRecipeID()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := debianRecipeID()
	if a != b || len(a) != 16 {
		t.Errorf("recipe IDs %q and %q, want one 16-digit hash", a, b)
	}
}
