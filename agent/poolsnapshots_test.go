package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/storage/cephtest"
	"hearth.dev/hearth/storage/nfstest"
)

// rawAccess reaches a pool's volumes and snapshots as the pool's
// administrator would, past Hearth: to write into a volume behind the
// agent's back and to see what is in the pool.
type rawAccess struct {
	// qemuIO is the qemu-io arguments that open volume uid.
	qemuIO func(uid string) []string
	// snapshotExists reports whether snapshot snap of volume vol is in
	// the pool.
	snapshotExists func(t *testing.T, vol, snap string) bool
}

func rbdRaw(t *testing.T) rawAccess {
	c := cephtest.Start(t)
	return rawAccess{
		qemuIO: func(uid string) []string {
			return []string{"-f", "raw", "rbd:" + c.Pool + "/hearth-vol-" + uid + ":conf=" + c.Conf}
		},
		snapshotExists: func(t *testing.T, vol, snap string) bool {
			out, err := exec.Command("rbd", "-c", c.Conf, "snap", "ls", c.Pool+"/hearth-vol-"+vol).CombinedOutput()
			if err != nil && !strings.Contains(string(out), "No such file") {
				t.Fatalf("rbd snap ls: %v: %s", err, out)
			}
			return strings.Contains(string(out), "hearth-snap-"+snap)
		},
	}
}

func nfsRaw(t *testing.T) rawAccess {
	s := nfstest.Start(t)
	return rawAccess{
		qemuIO: func(uid string) []string {
			return []string{"-f", "qcow2", filepath.Join(s.Export, "hearth-vol-"+uid+".qcow2")}
		},
		snapshotExists: func(t *testing.T, _, snap string) bool {
			_, err := os.Stat(filepath.Join(s.Export, "hearth-snap-"+snap+".qcow2"))
			return err == nil
		},
	}
}

// qemuIO runs qemu-io commands on a volume, failing t when they fail or
// a read's pattern does not match.
func qemuIO(t *testing.T, open []string, cmds ...string) {
	t.Helper()
	var args []string
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("qemu-io", append(args, open...)...).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("failed")) || bytes.Contains(out, []byte("error")) {
		t.Fatalf("qemu-io %s: %v\n%s", strings.Join(cmds, "; "), err, out)
	}
}

// TestPoolSnapshots takes snapshots of volumes in a real Ceph pool and a
// real NFS share through the API: the snapshot holds the volume as it
// was (a write after it does not show in a volume made from it), its
// status names its pool and volume, a volume made from it lands in the
// same pool and one elsewhere is refused with a reason naming
// spec.source.snapshot; deleting the snapshot while a volume is cloned
// from it leaves it in the pool until that volume is gone, then removes
// it.
func TestPoolSnapshots(t *testing.T) {
	needQEMUImg(t)
	if _, err := exec.LookPath("qemu-io"); err != nil {
		t.Skip("qemu-io not found: install Debian's qemu-utils")
	}
	for _, tc := range []struct {
		name string
		pool func(*testing.T, *lab) sharedPool
		raw  func(*testing.T) rawAccess
	}{
		{"rbd", rbdPool, rbdRaw},
		{"nfs", nfsPool, nfsRaw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			imgDir := t.TempDir()
			l := newLab(t, func(c *agent.Config) { c.AllowFileDirs = append(c.AllowFileDirs, imgDir) })
			p := tc.pool(t, l)
			raw := tc.raw(t)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()

			// An image of 0x41 bytes, cloned into the pool.
			data := bytes.Repeat([]byte{0x41}, 4<<20)
			path := filepath.Join(imgDir, "pattern.raw")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			l.create(t, &api.Image{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Image"}, Metadata: api.ObjectMeta{Name: "pattern"},
				Spec: api.ImageSpec{Format: api.FormatRaw, Source: api.ImageSource{URL: "file://" + path, Checksum: checksumOf(data)}}})
			pool := p.pool.Metadata.Name
			src := volume("src", 8<<20, api.VolumeSource{Image: "pattern"})
			src.Spec.Pool = pool
			l.create(t, src)
			srcVol := l.waitVolume(t, "src", phase(api.VolumeAvailable, 8<<20))

			l.create(t, snapshot("before", "src"))
			snap := l.waitSnapshot(t, "before", ready)
			if snap.Spec.Host != "h1" || snap.Status.Pool != pool || snap.Status.VolumeUID != srcVol.Metadata.UID || snap.Status.Size != 8<<20 {
				t.Errorf("snapshot: host %q pool %q volumeUID %q size %d, want h1, %s, %s, 8Mi",
					snap.Spec.Host, snap.Status.Pool, snap.Status.VolumeUID, snap.Status.Size, pool, srcVol.Metadata.UID)
			}
			if !raw.snapshotExists(t, srcVol.Metadata.UID, snap.Metadata.UID) {
				t.Fatalf("the snapshot is not in the pool")
			}
			// What names it in the pool is the agent's to write: a tenant
			// cannot point its snapshot at another volume.
			forged := api.DeepCopy(snap).(*api.Snapshot)
			forged.Status.VolumeUID = "another-tenants-volume"
			u := l.env.User(randomName("admin-"), "lab", api.RoleTenantAdmin)
			if _, err := u.UpdateStatus(ctx, forged); !api.IsForbidden(err) {
				t.Errorf("a tenant admin writing its snapshot's status.volumeUID: got %v, want forbidden", err)
			}

			// Written after the snapshot: not in what is made from it.
			qemuIO(t, raw.qemuIO(srcVol.Metadata.UID), "write -P 0x42 0 64k")
			cp := volume("copy", 16<<20, api.VolumeSource{Snapshot: "before"})
			cp.Spec.Host, cp.Spec.Pool = "", pool
			l.create(t, cp)
			cpVol := l.waitVolume(t, "copy", phase(api.VolumeAvailable, 16<<20))
			if cpVol.Spec.Host != "h1" || cpVol.Spec.Backend != p.pool.Spec.Driver {
				t.Errorf("copy: host %q backend %q, want h1 (the snapshot's) and %s", cpVol.Spec.Host, cpVol.Spec.Backend, p.pool.Spec.Driver)
			}
			qemuIO(t, raw.qemuIO(cpVol.Metadata.UID), "read -P 0x41 0 64k", "read -P 0x41 4032k 64k")
			qemuIO(t, raw.qemuIO(srcVol.Metadata.UID), "read -P 0x42 0 64k")

			// A local volume from the pool's snapshot is refused, saying why.
			local := volume("local", 16<<20, api.VolumeSource{Snapshot: "before"})
			l.create(t, local)
			l.waitVolume(t, "local", func(v *api.Volume) error {
				c := v.Status.Condition(api.ConditionReady)
				if v.Status.Phase != api.VolumeFailed || c == nil || !strings.Contains(c.Message, "spec.source.snapshot") || !strings.Contains(c.Message, pool) {
					return fmt.Errorf("phase %q, condition %+v: want Failed, naming spec.source.snapshot and pool %s", v.Status.Phase, c, pool)
				}
				return nil
			})

			// Deleted while copy is cloned from it: it stays in the pool
			// until copy is gone.
			l.delete(t, "Snapshot", "lab", "before")
			time.Sleep(3 * time.Second)
			if !raw.snapshotExists(t, srcVol.Metadata.UID, snap.Metadata.UID) {
				t.Fatalf("the snapshot left the pool while volume copy is cloned from it")
			}
			l.delete(t, "Volume", "lab", "copy")
			servertest.Eventually(t, 2*time.Minute, func() error {
				if raw.snapshotExists(t, srcVol.Metadata.UID, snap.Metadata.UID) {
					return fmt.Errorf("the snapshot is still in the pool after volume copy was deleted")
				}
				if _, err := p.driver.Stat(ctx, cpVol.Metadata.UID); err == nil {
					return fmt.Errorf("volume copy is still in the pool")
				}
				return nil
			})
		})
	}
}
