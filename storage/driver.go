package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// A Driver keeps the volumes of one storage pool: files on this host
// (local), images in a Ceph pool (rbd) or qcow2 files on an NFS share
// (nfs). The agent reconciles volumes through it, and asks it, not the
// volume's host, whether a VM can run elsewhere (Shared).
//
// Volumes, snapshots and images are named by IDs the caller chooses
// (Volume and Snapshot uids; an image's checksum): ValidID says which are
// allowed. The driver maps them to names in its pool that no other ID
// maps to, so a pool can be shared with things that are not Hearth's.
//
// Every method is idempotent, as the agent calls them on every pass:
// making what is already there, as asked, returns nil; deleting what is
// gone returns nil. A call that fails leaves nothing half-made under the
// name it was making. Methods are safe for concurrent use, for different
// IDs; the caller serialises calls for one volume.
//
// Sizes are bytes; the driver rounds a size up to a whole 512-byte sector.
// Volumes only grow.
type Driver interface {
	// Kind is "local", "rbd" or "nfs".
	Kind() string
	// Shared reports whether every host reaches the pool's volumes, so a
	// VM on them can be started, or migrated, on another host.
	Shared() bool

	// CreateVolume makes a blank volume of size bytes.
	CreateVolume(ctx context.Context, id string, size int64) error
	// CloneImage makes a copy-on-write clone of img, importing img into
	// the pool the first time a volume is cloned from it. size 0 means
	// the image's size; a smaller size than that is an error.
	CloneImage(ctx context.Context, img Image, id string, size int64) error
	// Snapshot takes a snapshot of volume vol that new volumes can be
	// cloned from. The volume should be quiet: a snapshot of a disk a
	// running guest writes is crash-consistent at best (rbd), or torn
	// (nfs, whose copy takes a while). The local driver refuses a disk
	// QEMU holds; the nfs driver cannot tell (QEMU's NFS client takes no
	// locks), so the caller stops the VM first.
	Snapshot(ctx context.Context, vol, snap string) error
	// CloneSnapshot makes volume id from snapshot snap of volume vol, as
	// CloneImage does from an image.
	CloneSnapshot(ctx context.Context, vol, snap, id string, size int64) error
	// Resize grows volume id to size bytes. Growing a volume a running
	// VM uses changes the disk under QEMU, which sees the new size only
	// when told (QMP block_resize); so for a running VM the caller
	// resizes through QEMU instead (the local driver refuses a volume
	// QEMU holds; rbd grows it, and QEMU must then be told; nfs cannot
	// tell and must not be asked).
	Resize(ctx context.Context, id string, size int64) error
	// DeleteVolume deletes volume id. On rbd it fails with an error
	// wrapping ErrBusy while a VM has it open or snapshots of it remain;
	// the local and nfs drivers cannot tell whether a VM has it open, so
	// the caller must not delete an attached volume.
	DeleteVolume(ctx context.Context, id string) error
	// DeleteSnapshot deletes snapshot snap of volume vol. It fails with an
	// error wrapping ErrBusy while (rbd) volumes cloned from it remain.
	DeleteSnapshot(ctx context.Context, vol, snap string) error
	// DeleteImage removes an imported image from the pool. It fails with
	// an error wrapping ErrBusy while volumes cloned from it remain.
	DeleteImage(ctx context.Context, img Image) error

	// Stat reports a volume's size and the space it takes; an error
	// wrapping fs.ErrNotExist says there is no such volume.
	Stat(ctx context.Context, id string) (VolumeStat, error)
	// Attachment says how QEMU opens volume id. It does not check that
	// the volume exists.
	Attachment(id string) (Attachment, error)
	// Capacity reports the pool's size and how much of it is used.
	Capacity(ctx context.Context) (Capacity, error)
}

// ErrBusy is what deleting something still in use wraps.
var ErrBusy = errors.New("in use")

// Image is an image a volume is cloned from: a file in this host's image
// cache (ImageCache.Ensure), which the pool imports the first time.
type Image struct {
	// Checksum is "sha256:<hex>" of the image's bytes: it names the
	// image in the pool, so images with the same bytes are imported once.
	Checksum string
	// Path is the image's file on this host.
	Path string
}

// id is the image's name in a pool: the hex of its checksum.
func (img Image) id() (string, error) {
	hex, ok := strings.CutPrefix(img.Checksum, "sha256:")
	if !ok || len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" {
		return "", fmt.Errorf("image %s: checksum %q is not sha256:<64 lowercase hex digits>", img.Path, img.Checksum)
	}
	return hex, nil
}

// VolumeStat is what Stat reports.
type VolumeStat struct {
	// Size is the disk's size, as the guest sees it.
	Size int64
	// Allocated is the space the volume takes in the pool, not counting
	// what it shares with the image or snapshot it was cloned from.
	Allocated int64
}

// Capacity is a pool's size and use, in bytes.
type Capacity struct {
	// Total is the pool's size; Used what its data takes; Available what
	// can still be written (Ceph's max_avail, an NFS share's free space
	// for the user it is mounted as), which may be less than Total-Used.
	Total, Used, Available int64
}

// Attachment says how QEMU opens a volume: a -blockdev node of the
// volume's format on top of a protocol node (a file, an RBD image, a file
// on an NFS share), and the secrets the protocol node reads.
//
// Secrets never appear in the description itself: QEMU reads each from a
// file (mode 0600) named by a secret object, so that no key is in QEMU's
// command line, which every user of the host can read in /proc, nor in
// QMP traffic or logs.
type Attachment struct {
	// Format is the format node's driver: "qcow2" or "raw".
	Format string
	// Protocol is the protocol node's options, as QMP's blockdev-add and
	// -blockdev's JSON form take them: {"driver": "file", "filename": …},
	// {"driver": "rbd", "pool": …, "image": …, …} or {"driver": "nfs", …}.
	Protocol map[string]any
	// Secrets are the secret objects (QEMU's -object secret) the protocol
	// node refers to by ID.
	Secrets []SecretFile
	// Shared is the pool's Shared: every host can attach the volume.
	Shared bool
}

// SecretFile is a QEMU secret object whose value is read from a file.
type SecretFile struct {
	// ID is the object's id, which the protocol node names; it is unique
	// to the pool, so disks of one pool in one VM can share the object.
	ID string
	// File holds the secret, base64-encoded, mode 0600.
	File string
}

// Blockdev returns the -blockdev argument (JSON) for the volume with node
// name node and the given extra options of the format node (such as
// "read-only": true or "discard": "unmap").
func (a Attachment) Blockdev(node string, extra map[string]any) (string, error) {
	if node == "" {
		return "", errors.New("blockdev: a node name is required")
	}
	opts := map[string]any{"driver": a.Format, "node-name": node, "file": a.Protocol}
	for k, v := range extra {
		opts[k] = v
	}
	b, err := json.Marshal(opts)
	return string(b), err
}

// ObjectArgs returns the -object arguments that define the attachment's
// secrets, to come before the -blockdev that uses them.
func (a Attachment) ObjectArgs() []string {
	var args []string
	for _, s := range a.Secrets {
		args = append(args, "-object", "secret,id="+s.ID+",format=base64,file="+strings.ReplaceAll(s.File, ",", ",,"))
	}
	return args
}

// validID matches the IDs drivers accept: object uids, checksums' hex and
// other names made of lowercase letters, digits, '-' and '_', starting
// with a letter or digit, and short enough for any pool's names.
var validID = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,99}$`)

// ValidID returns an error unless id can name a volume or snapshot.
func ValidID(id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("%q cannot name a volume or snapshot (lowercase letters, digits, '-' and '_', at most 100)", id)
	}
	return nil
}

func validIDs(ids ...string) error {
	for _, id := range ids {
		if err := ValidID(id); err != nil {
			return err
		}
	}
	return nil
}

// checkSize rejects a negative size, and rounds size up to a sector.
func checkSize(what string, size int64) (int64, error) {
	if size < 0 {
		return 0, fmt.Errorf("%s: size %d is negative", what, size)
	}
	return roundUp(size), nil
}
