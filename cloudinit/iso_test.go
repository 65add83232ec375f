package cloudinit

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// isoinfo is genisoimage's reader: an independent check that the image is
// what Linux and cloud-init will see.
func isoinfo(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("isoinfo", args...).Output()
	if err != nil {
		t.Fatalf("isoinfo %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

// listedNames returns the names in an isoinfo -l listing, "." and ".." aside.
func listedNames(listing string) []string {
	var names []string
	for _, line := range strings.Split(listing, "\n") {
		// "-r--r--r--   1    0    0   78 Jan  1 1970 [     26 00]  meta-data "
		i := strings.LastIndex(line, "]")
		if i < 0 {
			continue
		}
		name := strings.TrimSpace(line[i+1:])
		if name != "." && name != ".." {
			names = append(names, name)
		}
	}
	return names
}

func TestWriteISO(t *testing.T) {
	if _, err := exec.LookPath("isoinfo"); err != nil {
		t.Skip("isoinfo not found: install Debian's genisoimage package to check seed images")
	}
	tests := []struct {
		name  string
		seed  Seed
		names []string
	}{
		{
			name:  "without network-config",
			seed:  Seed{InstanceID: "uid-1", Hostname: "guest-1", SSHKeys: []string{key1}},
			names: []string{"meta-data", "user-data"},
		},
		{
			name: "with network-config and a script",
			seed: Seed{InstanceID: "uid-2", Hostname: "guest-2", SSHKeys: []string{key1, key2},
				UserData:      "#!/bin/sh\necho hello\n",
				NetworkConfig: "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"},
			names: []string{"meta-data", "network-config", "user-data"},
		},
		{
			name: "file larger than a sector",
			seed: Seed{InstanceID: "uid-3", Hostname: "guest-3",
				UserData: "#cloud-config\nwrite_files:\n- path: /big\n  content: " + strings.Repeat("x", 5000) + "\n"},
			names: []string{"meta-data", "user-data"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "seed.iso")
			if err := tt.seed.WriteISO(path); err != nil {
				t.Fatalf("WriteISO: %v", err)
			}
			img, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(img)%2048 != 0 {
				t.Errorf("image is %d bytes, want a multiple of 2048", len(img))
			}

			info := isoinfo(t, "-d", "-i", path)
			for _, want := range []string{"Volume id: cidata\n", "Joliet with UCS level 3 found", "Rock Ridge signatures version 1 found"} {
				if !strings.Contains(info, want) {
					t.Errorf("isoinfo -d lacks %q:\n%s", want, info)
				}
			}
			if m := regexp.MustCompile(`Volume size is: (\d+)`).FindStringSubmatch(info); m == nil || m[1] != strconv.Itoa(len(img)/2048) {
				t.Errorf("isoinfo reports volume size %v, image has %d sectors", m, len(img)/2048)
			}

			want := map[string][]byte{
				"meta-data": tt.seed.MetaData(),
				"user-data": tt.seed.UserDataBytes(),
			}
			if tt.seed.NetworkConfig != "" {
				want["network-config"] = []byte(tt.seed.NetworkConfig)
			}
			for _, ext := range []string{"-R", "-J"} {
				names := listedNames(isoinfo(t, ext, "-l", "-i", path))
				if strings.Join(names, ",") != strings.Join(tt.names, ",") {
					t.Errorf("isoinfo %s -l lists %q, want %q", ext, names, tt.names)
				}
				for name, data := range want {
					got := isoinfo(t, ext, "-x", "/"+name, "-i", path)
					if !bytes.Equal([]byte(got), data) {
						t.Errorf("isoinfo %s -x /%s =\n%q\nwant\n%q", ext, name, got, data)
					}
				}
			}

			// Same seed, same bytes: callers compare before replacing.
			again := filepath.Join(t.TempDir(), "again.iso")
			if err := tt.seed.WriteISO(again); err != nil {
				t.Fatal(err)
			}
			if img2, _ := os.ReadFile(again); !bytes.Equal(img, img2) {
				t.Error("writing the same seed twice gave different images")
			}
		})
	}
}

func TestWriteISOReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "seed.iso")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := (Seed{Hostname: "vm1"}).WriteISO(path); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "seed.iso" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %q, want only seed.iso (no temporary files left)", names)
	}
	if img, _ := os.ReadFile(path); len(img) < 17*2048 || string(img[16*2048+1:16*2048+6]) != "CD001" {
		t.Error("seed.iso was not replaced by an ISO9660 image")
	}
	if err := (Seed{}).WriteISO(filepath.Join(dir, "missing", "seed.iso")); err == nil {
		t.Error("WriteISO into a missing directory: got no error")
	}
}
