package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// qemuTarget is the json: filename qemu-img and qemu-io open a volume by,
// and the arguments that define its secrets.
func qemuTarget(t *testing.T, a Attachment) (objects []string, name string) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"driver": a.Format, "file": a.Protocol})
	if err != nil {
		t.Fatal(err)
	}
	args := a.ObjectArgs()
	for i := 0; i+1 < len(args); i += 2 {
		objects = append(objects, "--object", args[i+1])
	}
	return objects, "json:" + string(b)
}

// readVolume returns the first n bytes of a volume's disk, read the way
// QEMU would read it: through its Attachment.
func readVolume(t *testing.T, d Driver, id string, n int) []byte {
	t.Helper()
	a, err := d.Attachment(id)
	if err != nil {
		t.Fatal(err)
	}
	objs, name := qemuTarget(t, a)
	out := filepath.Join(t.TempDir(), "disk.raw")
	args := append([]string{"convert", "-U", "-O", "raw"}, objs...)
	cmd := exec.Command("qemu-img", append(args, name, out)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reading volume %s: %v\n%s", id, err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data[:min(n, len(data))]
}

// writeVolume writes n bytes of pattern at offset 0 of a volume's disk,
// through its Attachment.
func writeVolume(t *testing.T, d Driver, id string, pattern byte, n int) {
	t.Helper()
	a, err := d.Attachment(id)
	if err != nil {
		t.Fatal(err)
	}
	objs, name := qemuTarget(t, a)
	args := append(objs, "-c", "write -P "+strconv.Itoa(int(pattern))+" 0 "+strconv.Itoa(n), name)
	if b, err := exec.Command("qemu-io", args...).CombinedOutput(); err != nil || !strings.Contains(string(b), "wrote") {
		t.Fatalf("writing volume %s: %v\n%s", id, err, b)
	}
}

// driverTest says how a driver's behaviour differs where the Driver
// contract lets it.
type driverTest struct {
	// snapshotsInVolume: the driver keeps snapshots inside their volume
	// and tracks clones (rbd), so a volume with snapshots, a snapshot with
	// clones and an image with clones cannot be deleted (ErrBusy). Else
	// snapshots are standalone copies, deleting a volume leaves them.
	snapshotsInVolume bool
}

// testDriver runs every operation of the Driver contract against d and
// checks what a guest would see on the volumes: the shared test of the
// local, rbd and nfs drivers.
func testDriver(t *testing.T, d Driver, dt driverTest) {
	requireQemuImg(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	img := makeImage(t, 8<<20, 0x40)
	image := Image{Checksum: img.sum, Path: img.path}
	want := func(t *testing.T, id string, n int) []byte {
		raw := make([]byte, n)
		for i := range min(n, 64<<10) {
			raw[i] = 0x40 + byte(i%7)
		}
		return raw
	}
	prefix := randomHex(3)
	id := func(s string) string { return prefix + "-" + s }
	size := func(id string) int64 {
		t.Helper()
		st, err := d.Stat(ctx, id)
		if err != nil {
			t.Fatalf("stat %s: %v", id, err)
		}
		return st.Size
	}

	// Blank volumes, made again and made differently.
	if err := d.CreateVolume(ctx, id("blank"), 4<<20); err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := d.CreateVolume(ctx, id("blank"), 4<<20); err != nil {
		t.Errorf("create again: %v, want nil", err)
	}
	if err := d.CreateVolume(ctx, id("blank"), 8<<20); err == nil {
		t.Errorf("create again with another size: got nil, want an error")
	}
	if got := size(id("blank")); got != 4<<20 {
		t.Errorf("blank volume: size %d, want %d", got, 4<<20)
	}
	if got := readVolume(t, d, id("blank"), 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Errorf("blank volume does not read as zeroes")
	}

	// Clones of an image: its size by default, larger if asked, never smaller.
	if err := d.CloneImage(ctx, image, id("a"), 0); err != nil {
		t.Fatalf("clone image: %v", err)
	}
	if err := d.CloneImage(ctx, image, id("a"), 0); err != nil {
		t.Errorf("clone image again: %v, want nil", err)
	}
	if err := d.CloneImage(ctx, image, id("b"), 16<<20); err != nil {
		t.Fatalf("clone image larger: %v", err)
	}
	if err := d.CloneImage(ctx, image, id("small"), 4<<20); err == nil || !strings.Contains(err.Error(), "smaller") {
		t.Errorf("clone image smaller than it: got %v, want an error saying so", err)
	}
	if got := size(id("a")); got != img.virtualSize {
		t.Errorf("clone: size %d, want the image's %d", got, img.virtualSize)
	}
	if got := size(id("b")); got != 16<<20 {
		t.Errorf("larger clone: size %d, want %d", got, 16<<20)
	}
	if got := readVolume(t, d, id("a"), 128<<10); !bytes.Equal(got, want(t, id("a"), 128<<10)) {
		t.Errorf("clone does not read as its image")
	}

	// Copy-on-write: writing one clone leaves the other as it was.
	writeVolume(t, d, id("a"), 0x61, 4096)
	if got := readVolume(t, d, id("b"), 128<<10); !bytes.Equal(got, want(t, id("b"), 128<<10)) {
		t.Errorf("writing one clone changed another")
	}

	// A snapshot holds the volume as it was; clones of it start there.
	if err := d.Snapshot(ctx, id("a"), id("s1")); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if err := d.Snapshot(ctx, id("a"), id("s1")); err != nil {
		t.Errorf("snapshot again: %v, want nil", err)
	}
	writeVolume(t, d, id("a"), 0x62, 4096)
	if err := d.CloneSnapshot(ctx, id("a"), id("s1"), id("c"), 0); err != nil {
		t.Fatalf("clone snapshot: %v", err)
	}
	if err := d.CloneSnapshot(ctx, id("a"), id("s1"), id("c"), 0); err != nil {
		t.Errorf("clone snapshot again: %v, want nil", err)
	}
	got := readVolume(t, d, id("c"), 8192)
	if !bytes.Equal(got[:4096], bytes.Repeat([]byte{0x61}, 4096)) || !bytes.Equal(got[4096:], want(t, "", 8192)[4096:]) {
		t.Errorf("clone of a snapshot does not read as the volume did when the snapshot was taken")
	}
	if got := size(id("c")); got != img.virtualSize {
		t.Errorf("clone of a snapshot: size %d, want %d", got, img.virtualSize)
	}

	// Volumes grow, and only grow.
	if err := d.Resize(ctx, id("c"), 12<<20); err != nil {
		t.Fatalf("resize: %v", err)
	}
	if err := d.Resize(ctx, id("c"), 12<<20); err != nil {
		t.Errorf("resize to the same size: %v, want nil", err)
	}
	if err := d.Resize(ctx, id("c"), 4<<20); err == nil || !strings.Contains(err.Error(), "shrink") {
		t.Errorf("shrink: got %v, want an error saying volumes do not shrink", err)
	}
	if got := size(id("c")); got != 12<<20 {
		t.Errorf("resized: size %d, want %d", got, 12<<20)
	}
	if st, err := d.Stat(ctx, id("a")); err != nil || st.Allocated <= 0 {
		t.Errorf("stat of a written volume: %+v, %v; want some space allocated", st, err)
	}

	// Deleting.
	if dt.snapshotsInVolume {
		if err := d.DeleteSnapshot(ctx, id("a"), id("s1")); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), id("c")) {
			t.Errorf("delete a snapshot with a clone: got %v, want ErrBusy naming the clone", err)
		}
		if err := d.DeleteVolume(ctx, id("a")); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), id("s1")) {
			t.Errorf("delete a volume with a snapshot: got %v, want ErrBusy naming the snapshot", err)
		}
		if err := d.DeleteImage(ctx, image); !errors.Is(err, ErrBusy) {
			t.Errorf("delete an image with clones: got %v, want ErrBusy", err)
		}
		for _, v := range []string{"c"} {
			if err := d.DeleteVolume(ctx, id(v)); err != nil {
				t.Fatalf("delete %s: %v", v, err)
			}
		}
		if err := d.DeleteSnapshot(ctx, id("a"), id("s1")); err != nil {
			t.Fatalf("delete snapshot: %v", err)
		}
	} else {
		// A snapshot outlives its volume.
		if err := d.DeleteVolume(ctx, id("a")); err != nil {
			t.Fatalf("delete volume: %v", err)
		}
		if err := d.CloneSnapshot(ctx, id("a"), id("s1"), id("d"), 0); err != nil {
			t.Fatalf("clone a snapshot of a deleted volume: %v", err)
		}
		if got := readVolume(t, d, id("d"), 4096); !bytes.Equal(got, bytes.Repeat([]byte{0x61}, 4096)) {
			t.Errorf("clone of a deleted volume's snapshot does not read as the snapshot")
		}
		for _, v := range []string{"c", "d"} {
			if err := d.DeleteVolume(ctx, id(v)); err != nil {
				t.Fatalf("delete %s: %v", v, err)
			}
		}
		if err := d.DeleteSnapshot(ctx, id("a"), id("s1")); err != nil {
			t.Fatalf("delete snapshot: %v", err)
		}
	}
	for _, v := range []string{"a", "b", "blank"} {
		if err := d.DeleteVolume(ctx, id(v)); err != nil {
			t.Fatalf("delete %s: %v", v, err)
		}
		if err := d.DeleteVolume(ctx, id(v)); err != nil {
			t.Errorf("delete %s again: %v, want nil", v, err)
		}
		if _, err := d.Stat(ctx, id(v)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stat of deleted %s: got %v, want fs.ErrNotExist", v, err)
		}
	}
	if err := d.DeleteSnapshot(ctx, id("a"), id("s1")); err != nil {
		t.Errorf("delete snapshot again: %v, want nil", err)
	}
	if err := d.DeleteImage(ctx, image); err != nil {
		t.Errorf("delete image: %v", err)
	}

	// What the caller cannot choose.
	for _, bad := range []string{"", "../x", "A", "a/b", "a,b", strings.Repeat("a", 101)} {
		if err := d.CreateVolume(ctx, bad, 1<<20); err == nil {
			t.Errorf("create volume %q: got nil, want an error", bad)
		}
	}
	if a, err := d.Attachment(id("x")); err != nil || a.Shared != d.Shared() {
		t.Errorf("attachment: shared %v (%v), want the driver's %v", a.Shared, err, d.Shared())
	}
	c, err := d.Capacity(ctx)
	if err != nil || c.Total <= 0 || c.Available <= 0 || c.Used < 0 || c.Available > c.Total {
		t.Errorf("capacity: %+v, %v", c, err)
	}
}

func TestLocalDriver(t *testing.T) {
	testDriver(t, &Local{Dir: t.TempDir()}, driverTest{})
}
