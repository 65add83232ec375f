package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Local is the driver for volumes kept as files on this host, made by
// the functions of volume.go:
//
//	DIR/volumes/<id>.qcow2 (or .raw)   a volume
//	DIR/snapshots/<id>.qcow2           a snapshot: a flattened copy
//
// Images are not imported: a clone's backing file is the image's file in
// this host's image cache, which must therefore stay as long as a volume
// is cloned from it (the agent's image GC sees to that), as must a
// snapshot's file; DeleteImage leaves the cache alone, and DeleteSnapshot
// removes the file whether or not volumes are cloned from it, so the
// caller must not delete a snapshot that still backs a volume.
type Local struct {
	// Dir holds the volumes and snapshots directories.
	Dir string
	// Format is the format of the volumes this driver makes: qcow2 (the
	// default, for "") or raw. A raw clone is a full copy.
	Format string
}

func (l *Local) Kind() string { return "local" }
func (l *Local) Shared() bool { return false }

func (l *Local) format() string {
	if l.Format == FormatRaw {
		return FormatRaw
	}
	return FormatQCOW2
}

// VolumePath is the file of volume id.
func (l *Local) VolumePath(id string) string {
	return filepath.Join(l.Dir, "volumes", id+"."+l.format())
}

// SnapshotPath is the file of snapshot id.
func (l *Local) SnapshotPath(id string) string {
	return filepath.Join(l.Dir, "snapshots", id+"."+FormatQCOW2)
}

func (l *Local) mkdirs() error {
	for _, d := range []string{"volumes", "snapshots"} {
		if err := os.MkdirAll(filepath.Join(l.Dir, d), 0o700); err != nil {
			return err
		}
	}
	return nil
}

func (l *Local) CreateVolume(ctx context.Context, id string, size int64) error {
	return l.create(ctx, id, size, "")
}

func (l *Local) create(ctx context.Context, id string, size int64, backing string) error {
	if err := ValidID(id); err != nil {
		return err
	}
	if err := l.mkdirs(); err != nil {
		return err
	}
	return CreateVolume(ctx, l.VolumePath(id), l.format(), size, backing)
}

func (l *Local) CloneImage(ctx context.Context, img Image, id string, size int64) error {
	if _, err := img.id(); err != nil {
		return err
	}
	return l.create(ctx, id, size, img.Path)
}

func (l *Local) Snapshot(ctx context.Context, vol, snap string) error {
	if err := validIDs(vol, snap); err != nil {
		return err
	}
	if err := l.mkdirs(); err != nil {
		return err
	}
	return Snapshot(ctx, l.VolumePath(vol), l.SnapshotPath(snap))
}

func (l *Local) CloneSnapshot(ctx context.Context, vol, snap, id string, size int64) error {
	if err := validIDs(vol, snap); err != nil {
		return err
	}
	return l.create(ctx, id, size, l.SnapshotPath(snap))
}

func (l *Local) Resize(ctx context.Context, id string, size int64) error {
	if err := ValidID(id); err != nil {
		return err
	}
	return ResizeVolume(ctx, l.VolumePath(id), size)
}

func (l *Local) DeleteVolume(ctx context.Context, id string) error {
	if err := ValidID(id); err != nil {
		return err
	}
	return DeleteVolume(l.VolumePath(id))
}

func (l *Local) DeleteSnapshot(ctx context.Context, vol, snap string) error {
	if err := validIDs(vol, snap); err != nil {
		return err
	}
	return DeleteVolume(l.SnapshotPath(snap))
}

// DeleteImage does nothing: the image's file is the image cache's.
func (l *Local) DeleteImage(ctx context.Context, img Image) error {
	_, err := img.id()
	return err
}

func (l *Local) Stat(ctx context.Context, id string) (VolumeStat, error) {
	if err := ValidID(id); err != nil {
		return VolumeStat{}, err
	}
	i, err := VolumeInfo(ctx, l.VolumePath(id))
	if err != nil {
		return VolumeStat{}, fmt.Errorf("volume %s: %w", l.VolumePath(id), err)
	}
	return VolumeStat{Size: i.VirtualSize, Allocated: i.ActualSize}, nil
}

func (l *Local) Attachment(id string) (Attachment, error) {
	if err := ValidID(id); err != nil {
		return Attachment{}, err
	}
	return Attachment{
		Format:   l.format(),
		Protocol: map[string]any{"driver": "file", "filename": l.VolumePath(id)},
	}, nil
}

// Capacity is that of the filesystem Dir is on, which other things may
// share.
func (l *Local) Capacity(ctx context.Context) (Capacity, error) {
	if err := l.mkdirs(); err != nil {
		return Capacity{}, err
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(l.Dir, &st); err != nil {
		return Capacity{}, fmt.Errorf("capacity of %s: %w", l.Dir, err)
	}
	bs := int64(st.Bsize)
	return Capacity{
		Total:     int64(st.Blocks) * bs,
		Used:      int64(st.Blocks-st.Bfree) * bs,
		Available: int64(st.Bavail) * bs,
	}, nil
}
