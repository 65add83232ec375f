package agent_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/storage"
)

const mi = 1 << 20

func needQEMUImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed (apt-get install qemu-utils); the volume tests make real qcow2 files")
	}
}

func (l *lab) create(t *testing.T, obj api.Object) {
	t.Helper()
	if _, err := l.env.Admin.Create(servertest.Ctx(t), obj); err != nil {
		t.Fatalf("creating %s: %v", api.Ref(obj), err)
	}
}

// store writes obj straight into etcd, past the API's admission checks:
// for objects the API refuses (an image URL on loopback, where a test's
// web server is; a tenant's file:// image) to see what the agent makes of
// them should they get there.
func (l *lab) store(t *testing.T, obj api.Object) {
	t.Helper()
	if es := api.Prepare(obj, nil); len(es) > 0 {
		t.Fatalf("%s: %v", api.Ref(obj), es)
	}
	l.storeInvalid(t, obj)
}

// storeInvalid writes obj straight into etcd with its defaults but not
// validated: for what the API's validation itself refuses (a VM's
// file:// kernel).
func (l *lab) storeInvalid(t *testing.T, obj api.Object) {
	t.Helper()
	if d, ok := obj.SpecAny().(api.Defaulter); ok {
		d.Default()
	}
	if _, err := l.env.Server.Store().Create(servertest.Ctx(t), obj); err != nil {
		t.Fatalf("storing %s: %v", api.Ref(obj), err)
	}
}

func volume(name string, size api.Bytes, src api.VolumeSource) *api.Volume {
	return &api.Volume{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Volume"},
		Metadata: api.ObjectMeta{Name: name, Tenant: "lab"}, Spec: api.VolumeSpec{Host: "h1", Size: size, Source: src}}
}

func snapshot(name, vol string) *api.Snapshot {
	return &api.Snapshot{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Snapshot"},
		Metadata: api.ObjectMeta{Name: name, Tenant: "lab"}, Spec: api.SnapshotSpec{Volume: vol}}
}

// waitVolume waits until the volume passes check, and returns it.
func (l *lab) waitVolume(t *testing.T, name string, check func(*api.Volume) error) *api.Volume {
	t.Helper()
	var vol *api.Volume
	servertest.Eventually(t, 120*time.Second, func() error {
		o, err := l.env.Admin.Get(servertest.Ctx(t), "Volume", "lab", name)
		if err != nil {
			return err
		}
		vol = o.(*api.Volume)
		if err := check(vol); err != nil {
			return fmt.Errorf("volume %s: %w (status %+v)", name, err, vol.Status)
		}
		return nil
	})
	return vol
}

func phase(want string, size api.Bytes) func(*api.Volume) error {
	return func(v *api.Volume) error {
		if v.Status.Phase != want || (size != 0 && v.Status.Size != size) {
			return fmt.Errorf("phase %q size %s, want %q %s", v.Status.Phase, v.Status.Size, want, size)
		}
		return nil
	}
}

func (l *lab) waitSnapshot(t *testing.T, name string, check func(*api.Snapshot) error) *api.Snapshot {
	t.Helper()
	var s *api.Snapshot
	servertest.Eventually(t, 60*time.Second, func() error {
		o, err := l.env.Admin.Get(servertest.Ctx(t), "Snapshot", "lab", name)
		if err != nil {
			return err
		}
		s = o.(*api.Snapshot)
		return check(s)
	})
	return s
}

func ready(s *api.Snapshot) error {
	if !s.Status.ReadyToUse || s.Status.Phase != api.SnapshotReady {
		return fmt.Errorf("snapshot %s not ready: %+v", s.Metadata.Name, s.Status)
	}
	return nil
}

// info reads a volume's file as qemu-img sees it.
func info(t *testing.T, path string) storage.Info {
	t.Helper()
	i, err := storage.VolumeInfo(servertest.Ctx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func (l *lab) delete(t *testing.T, kind, tenant, name string) {
	t.Helper()
	if _, err := l.env.Admin.Delete(servertest.Ctx(t), kind, tenant, name); err != nil {
		t.Fatalf("deleting %s %s: %v", kind, name, err)
	}
}

// waitGone waits until none of the paths exists.
func waitGone(t *testing.T, paths ...string) {
	t.Helper()
	servertest.Eventually(t, 30*time.Second, func() error {
		for _, p := range paths {
			if _, err := os.Stat(p); err == nil {
				return fmt.Errorf("%s is still there", p)
			}
		}
		return nil
	})
}

// TestVolumeFiles: blank volumes, clones of a downloaded and of an
// uploaded image, resizing, snapshots and volumes made from them, all as
// real qcow2 files, and nothing left once the objects are deleted.
func TestVolumeFiles(t *testing.T) {
	needQEMUImg(t)
	// The image "web server" of this test is on loopback, which agents
	// never fetch from unless told to.
	l := newLab(t, func(c *agent.Config) { c.AllowFetchFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	ctx := servertest.Ctx(t)

	// A blank volume, then grown.
	l.create(t, volume("blank", 64*mi, api.VolumeSource{}))
	blank := l.waitVolume(t, "blank", phase(api.VolumeAvailable, 64*mi))
	if got := info(t, blank.Status.Path); got.VirtualSize != 64*mi || got.Format != "qcow2" || got.BackingFile != "" {
		t.Fatalf("blank volume file: %+v", got)
	}
	if want := filepath.Join(l.dataDir, "volumes", blank.Metadata.UID+".qcow2"); blank.Status.Path != want {
		t.Fatalf("path %s, want %s", blank.Status.Path, want)
	}
	if _, err := l.env.Admin.Patch(ctx, "Volume", "lab", "blank", map[string]any{"spec": map[string]any{"size": "96Mi"}}, false); err != nil {
		t.Fatal(err)
	}
	l.waitVolume(t, "blank", phase(api.VolumeAvailable, 96*mi))
	if got := info(t, blank.Status.Path); got.VirtualSize != 96*mi {
		t.Fatalf("grown file is %d bytes, want %d", got.VirtualSize, 96*mi)
	}

	// A snapshot of it (the server puts it on the volume's host), and a
	// volume made from the snapshot.
	l.create(t, snapshot("s1", "blank"))
	s1 := l.waitSnapshot(t, "s1", ready)
	snapFile := filepath.Join(l.dataDir, "snapshots", s1.Metadata.UID+".qcow2")
	if s1.Spec.Host != "h1" || s1.Status.Size != 96*mi || s1.Status.TakenAt == nil {
		t.Fatalf("snapshot: host %q, status %+v", s1.Spec.Host, s1.Status)
	}
	l.create(t, volume("restored", 0, api.VolumeSource{Snapshot: "s1"}))
	restored := l.waitVolume(t, "restored", phase(api.VolumeAvailable, 96*mi))
	if got := info(t, restored.Status.Path); got.BackingFile != snapFile {
		t.Fatalf("restored volume is backed by %q, want the snapshot %s", got.BackingFile, snapFile)
	}

	// A clone of an image served over HTTP with its checksum: the host
	// reports its copy on the Image.
	imgDir := t.TempDir()
	imgFile := filepath.Join(imgDir, "tiny.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", imgFile, "32M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	data, _ := os.ReadFile(imgFile)
	sum := sha256.Sum256(data)
	checksum := "sha256:" + hex.EncodeToString(sum[:])
	web := httptest.NewServer(http.FileServer(http.Dir(imgDir)))
	defer web.Close()
	l.store(t, &api.Image{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Image"}, Metadata: api.ObjectMeta{Name: "tiny"},
		Spec: api.ImageSpec{Source: api.ImageSource{URL: web.URL + "/tiny.qcow2", Checksum: checksum}}})
	l.create(t, volume("cloned", 48*mi, api.VolumeSource{Image: "tiny"}))
	cloned := l.waitVolume(t, "cloned", phase(api.VolumeAvailable, 48*mi))
	cached := filepath.Join(l.dataDir, "images", "sha256", hex.EncodeToString(sum[:]))
	if got := info(t, cloned.Status.Path); got.BackingFile != cached {
		t.Fatalf("clone is backed by %q, want the cached image %s", got.BackingFile, cached)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		o, err := l.env.Admin.Get(ctx, "Image", "", "tiny")
		if err != nil {
			return err
		}
		st := o.(*api.Image).Status
		if st.Phase != api.ImageReady || st.VirtualSize != 32*mi || len(st.Hosts) != 1 || st.Hosts[0].Host != "h1" ||
			st.Hosts[0].Phase != api.ImageReady || st.Hosts[0].Progress != 100 {
			return fmt.Errorf("image status %+v", st)
		}
		return nil
	})

	// An image uploaded through the API, fetched by the agent from the
	// server with its own credential.
	upload := bytes.Repeat([]byte{0x55}, 3*mi)
	upSum := sha256.Sum256(upload)
	l.create(t, &api.Image{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Image"}, Metadata: api.ObjectMeta{Name: "up", Tenant: "lab"},
		Spec: api.ImageSpec{Format: api.FormatRaw, Source: api.ImageSource{Upload: true, Checksum: "sha256:" + hex.EncodeToString(upSum[:])}}})
	l.create(t, volume("fromupload", 0, api.VolumeSource{Image: "up"}))
	l.waitVolume(t, "fromupload", func(v *api.Volume) error {
		if c := v.Status.Condition("Ready"); v.Status.Phase != api.VolumePending || c == nil || !strings.Contains(c.Message, "has not been uploaded yet") {
			return fmt.Errorf("want Pending, waiting for the upload")
		}
		return nil
	})
	if _, err := l.env.Admin.UploadImage(ctx, "lab", "up", bytes.NewReader(upload)); err != nil {
		t.Fatal(err)
	}
	fromUpload := l.waitVolume(t, "fromupload", phase(api.VolumeAvailable, 3*mi))
	if got := info(t, fromUpload.Status.Path); got.BackingFile != filepath.Join(l.dataDir, "images", "sha256", hex.EncodeToString(upSum[:])) {
		t.Fatalf("clone of the upload is backed by %q", got.BackingFile)
	}

	// Deleting: volumes go at once; a snapshot and an image stay while a
	// volume is cloned from them, and go with the last one.
	l.delete(t, "Snapshot", "lab", "s1")
	l.delete(t, "Image", "", "tiny")
	l.delete(t, "Volume", "lab", "blank")
	waitGone(t, blank.Status.Path)
	time.Sleep(3 * time.Second) // a sweep or two
	for _, f := range []string{snapFile, cached} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s is gone while a volume is cloned from it: %v", f, err)
		}
	}
	for _, name := range []string{"restored", "cloned", "fromupload"} {
		l.delete(t, "Volume", "lab", name)
	}
	l.delete(t, "Image", "lab", "up")
	waitGone(t, restored.Status.Path, cloned.Status.Path, fromUpload.Status.Path, snapFile, cached)
	servertest.Eventually(t, 30*time.Second, func() error {
		for _, d := range []string{"volumes", "snapshots", "images/sha256"} {
			if files, _ := os.ReadDir(filepath.Join(l.dataDir, d)); len(files) > 0 {
				return fmt.Errorf("%s still holds %d files (%s, …)", d, len(files), files[0].Name())
			}
		}
		return nil
	})
}

// TestVolumeAttachedToVM: a VM boots with a volume attached, which shows
// InUse; a snapshot and a resize wait while the VM runs; detaching the
// volume restarts the VM without it, and then both happen.
func TestVolumeAttachedToVM(t *testing.T) {
	needQEMUImg(t)
	l := newLab(t)
	ctx := servertest.Ctx(t)
	l.create(t, volume("data", 64*mi, api.VolumeSource{}))
	l.waitVolume(t, "data", phase(api.VolumeAvailable, 64*mi))

	vm := l.vm("db")
	vm.Spec.Disks = []api.VMDisk{{Volume: "data"}}
	l.create(t, vm)
	running := l.waitPhase(t, "db", api.VMRunning)
	l.waitVolume(t, "data", func(v *api.Volume) error {
		if v.Status.Phase != api.VolumeInUse || v.Status.AttachedTo != "db" {
			return fmt.Errorf("want InUse, attached to db")
		}
		return nil
	})

	l.create(t, snapshot("s1", "data"))
	l.waitSnapshot(t, "s1", func(s *api.Snapshot) error {
		if c := s.Status.Condition("Ready"); c == nil || c.Reason != "VolumeInUse" || !strings.Contains(c.Message, "running VM db") {
			return fmt.Errorf("want Ready=False/VolumeInUse naming db: %+v", s.Status)
		}
		return nil
	})
	if _, err := l.env.Admin.Patch(ctx, "Volume", "lab", "data", map[string]any{"spec": map[string]any{"size": "128Mi"}}, false); err != nil {
		t.Fatal(err)
	}
	l.waitVolume(t, "data", func(v *api.Volume) error {
		if c := v.Status.Condition("Resized"); c == nil || c.Reason != "PendingRestart" || v.Status.Size != 64*mi {
			return fmt.Errorf("want Resized=False/PendingRestart at 64Mi")
		}
		return nil
	})

	// Detach: the VM restarts without the disk.
	if _, err := l.env.Admin.Patch(ctx, "VirtualMachine", "lab", "db", map[string]any{"spec": map[string]any{"disks": nil}}, false); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 120*time.Second, func() error {
		vm := l.get(t, "db")
		if vm.Status.PID == running.Status.PID || vm.Status.Phase != api.VMRunning || !alive(vm.Status.PID) {
			return fmt.Errorf("VM not restarted yet: pid %d (was %d), phase %s", vm.Status.PID, running.Status.PID, vm.Status.Phase)
		}
		return nil
	})
	l.waitVolume(t, "data", func(v *api.Volume) error {
		if v.Status.Phase != api.VolumeAvailable || v.Status.AttachedTo != "" || v.Status.Size != 128*mi || v.Status.Condition("Resized") != nil {
			return fmt.Errorf("want Available, detached, grown to 128Mi")
		}
		return nil
	})
	// Taken before or after the resize: both wait for the same restart.
	s1 := l.waitSnapshot(t, "s1", ready)
	if s1.Status.Size != 64*mi && s1.Status.Size != 128*mi {
		t.Fatalf("snapshot size %s, want 64Mi or 128Mi", s1.Status.Size)
	}

	// Deleting the VM, the snapshot and the volume leaves no file.
	data := l.waitVolume(t, "data", phase(api.VolumeAvailable, 0))
	l.delete(t, "VirtualMachine", "lab", "db")
	l.delete(t, "Snapshot", "lab", "s1")
	l.delete(t, "Volume", "lab", "data")
	waitGone(t, data.Status.Path, filepath.Join(l.dataDir, "snapshots", s1.Metadata.UID+".qcow2"))
}
