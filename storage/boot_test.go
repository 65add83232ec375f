package storage

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth.dev/hearth/cloudinit"
	"hearth.dev/hearth/testguest"
)

// These tests boot the project's test guest (testguest) from a shared
// volume cloned from an image, as a VM on shared storage starts on one
// host and then on another: QEMU (TCG) boots the volume through the
// driver's Attachment, the guest's user-data script writes a marker to
// its disk, the guest powers off; a second QEMU, given the same disk by a
// second driver (another host's configuration files), boots it again and
// the guest reads the marker back.

// bootImage is a bootable disk image holding the test guest: an ISO
// (isolinux, the guest's kernel and initramfs) made hybrid, so it boots
// as a hard disk too. It is built once per test process.
var bootImage = sync.OnceValues(func() (Image, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	g, err := testguest.Build(ctx, "")
	if err != nil {
		return Image{}, err
	}
	dir, err := os.MkdirTemp("", "hearth-bootimage-")
	if err != nil {
		return Image{}, err
	}
	iso, err := testguest.BootDisk(ctx, g, dir)
	if err != nil {
		return Image{}, err
	}
	f, err := os.Open(iso)
	if err != nil {
		return Image{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return Image{}, err
	}
	return Image{Checksum: "sha256:" + hex.EncodeToString(h.Sum(nil)), Path: iso}, nil
})

// requireBoot skips a test that boots QEMU where QEMU or the tools that
// make the boot image are missing.
func requireBoot(t *testing.T) {
	t.Helper()
	for tool, pkg := range map[string]string{"qemu-system-x86_64": "qemu-system-x86", "genisoimage": "genisoimage", "isohybrid": "syslinux-utils"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: install Debian's %s to boot the test guest", tool, pkg)
		}
	}
	if testing.Short() {
		t.Skip("boots QEMU; not in -short mode")
	}
}

// markerOffset is where on its disk the guest writes its marker: past the
// end of the boot image, in the part of the volume the clone added.
const markerOffset = 48 << 20

// markerScript is the guest's user-data: print what is at markerOffset,
// then write token there and flush it to the disk.
func markerScript(token string) string {
	sector := markerOffset / 512
	return fmt.Sprintf(`#!/bin/sh
have=$(dd if=/dev/vda bs=512 skip=%[1]d count=1 2>/dev/null | tr -d '\000' | head -c 64)
echo "HEARTH-GUEST disk-marker=${have:-none}"
printf '%%s' '%[2]s' | dd of=/dev/vda bs=512 seek=%[1]d conv=notrunc,sync 2>/dev/null
sync
echo 3 >/proc/sys/vm/drop_caches
again=$(dd if=/dev/vda bs=512 skip=%[1]d count=1 2>/dev/null | tr -d '\000' | head -c 64)
echo "HEARTH-GUEST disk-written=$again"
`, sector, token)
}

// guestVM is a QEMU running the test guest from a volume.
type guestVM struct {
	cmd    *exec.Cmd
	log    string
	qmp    string
	exited chan struct{}
	err    error
}

// bootVolume starts QEMU with volume id of d as its boot disk, and the
// seed on a second disk.
func bootVolume(t *testing.T, d Driver, id string, seed cloudinit.Seed) *guestVM {
	t.Helper()
	dir, err := os.MkdirTemp("", "hb") // short: the QMP socket's path must fit in sun_path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	iso := filepath.Join(dir, "seed.iso")
	if err := seed.WriteISO(iso); err != nil {
		t.Fatal(err)
	}
	a, err := d.Attachment(id)
	if err != nil {
		t.Fatal(err)
	}
	bd, err := a.Blockdev("disk0", map[string]any{"discard": "unmap"})
	if err != nil {
		t.Fatal(err)
	}
	v := &guestVM{log: filepath.Join(dir, "console.log"), qmp: filepath.Join(dir, "qmp.sock"), exited: make(chan struct{})}
	args := []string{
		"-accel", "tcg", "-m", "256", "-smp", "1", "-no-reboot",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-serial", "file:" + v.log,
		"-qmp", "unix:" + v.qmp + ",server=on,wait=off",
	}
	args = append(args, a.ObjectArgs()...)
	args = append(args,
		"-blockdev", bd,
		"-device", "virtio-blk-pci,drive=disk0,bootindex=1",
		"-blockdev", "driver=raw,node-name=seed,read-only=on,file.driver=file,file.filename="+iso,
		"-device", "virtio-blk-pci,drive=seed",
	)
	v.cmd = exec.Command("qemu-system-x86_64", args...)
	var stderr strings.Builder
	v.cmd.Stderr = &stderr
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("start QEMU: %v", err)
	}
	go func() {
		v.err = v.cmd.Wait()
		if stderr.Len() > 0 {
			v.err = fmt.Errorf("%v: %s", v.err, strings.TrimSpace(stderr.String()))
		}
		close(v.exited)
	}()
	t.Cleanup(func() {
		v.cmd.Process.Kill()
		<-v.exited
		if t.Failed() {
			b, _ := os.ReadFile(v.log)
			t.Logf("console log of QEMU on %s:\n%s", id, b)
		}
	})
	return v
}

func (v *guestVM) waitMarker(t *testing.T, key string, timeout time.Duration) map[string][]string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(v.log)
		m := testguest.ParseMarkers(string(b))
		if _, ok := m[key]; ok {
			return m
		}
		select {
		case <-v.exited:
			t.Fatalf("QEMU exited before the guest printed %s %s: %v", testguest.Marker, key, v.err)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s %s on the console after %v", testguest.Marker, key, timeout)
		}
	}
}

// powerOff presses the ACPI power button and waits for QEMU to exit.
func (v *guestVM) powerOff(t *testing.T) {
	t.Helper()
	qmp(t, v.qmp, "system_powerdown")
	select {
	case <-v.exited:
	case <-time.After(60 * time.Second):
		t.Fatal("the guest did not power off within 60s of the power button")
	}
}

// testBootTwice is the test of a driver: clone the boot image into a
// volume on host one, boot it, write; boot it on host two, read.
func testBootTwice(t *testing.T, host1, host2 Driver) {
	requireBoot(t)
	img, err := bootImage()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := "boot-" + randomHex(4)
	if err := host1.CloneImage(ctx, img, id, 64<<20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host1.DeleteVolume(context.Background(), id) })

	token := "hearth-" + randomHex(8)
	seed := cloudinit.Seed{InstanceID: id, Hostname: "guest", UserData: markerScript(token)}
	boot := 4 * time.Minute // TCG on a busy machine

	first := bootVolume(t, host1, id, seed)
	m := first.waitMarker(t, "script-exit", boot)
	if got := m["disk-marker"]; len(got) != 1 || got[0] != "none" {
		t.Fatalf("first boot: the disk held %q at its marker offset, want nothing", got)
	}
	if got := m["disk-written"]; len(got) != 1 || got[0] != token {
		t.Fatalf("first boot: read back %q after writing, want %q", got, token)
	}
	if got := m["script-exit"]; got[0] != "0" {
		t.Fatalf("first boot: the user-data script exited %s", got[0])
	}
	if host1.Kind() == "rbd" {
		// Ceph knows the volume is open (a watcher): it refuses to delete it.
		if err := host2.DeleteVolume(ctx, id); !errors.Is(err, ErrBusy) {
			t.Fatalf("delete a volume a running VM has open: got %v, want ErrBusy", err)
		}
	}
	first.powerOff(t)

	second := bootVolume(t, host2, id, seed)
	m = second.waitMarker(t, "script-exit", boot)
	if got := m["disk-marker"]; len(got) != 1 || got[0] != token {
		t.Fatalf("second boot, on the other host: the disk held %q, want the marker %q the first boot wrote", got, token)
	}
	second.powerOff(t)
}

func TestRBDBootTwoHosts(t *testing.T) {
	requireBoot(t)
	host1, c, key := newTestRBD(t)
	host2, err := NewRBD(RBDConfig{Pool: c.Pool, Monitors: c.Monitors, User: host1.cfg.User, Key: key, Dir: filepath.Join(t.TempDir(), "host2")})
	if err != nil {
		t.Fatal(err)
	}
	testBootTwice(t, host1, host2)
}

func TestNFSBootTwoHosts(t *testing.T) {
	requireBoot(t)
	host1, _ := newTestNFS(t)
	host2, err := NewNFS(host1.cfg)
	if err != nil {
		t.Fatal(err)
	}
	testBootTwice(t, host1, host2)
}

// qmp runs one QMP command on a fresh connection to socket.
func qmp(t *testing.T, socket, command string) {
	t.Helper()
	conn, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		t.Fatalf("QMP: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil { // greeting
		t.Fatalf("QMP greeting: %v", err)
	}
	for _, c := range []string{"qmp_capabilities", command} {
		if _, err := fmt.Fprintf(conn, `{"execute":%q}`+"\n", c); err != nil {
			t.Fatalf("QMP %s: %v", c, err)
		}
		for { // events until the command's answer
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("QMP %s: %v", c, err)
			}
			var reply struct {
				Return json.RawMessage
				Error  *struct{ Desc string }
			}
			if err := json.Unmarshal([]byte(line), &reply); err != nil {
				t.Fatalf("QMP %s: %v in %q", c, err, line)
			}
			if reply.Error != nil {
				t.Fatalf("QMP %s: %s", c, reply.Error.Desc)
			}
			if reply.Return != nil {
				break
			}
		}
	}
}
