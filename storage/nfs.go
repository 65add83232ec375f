package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"hearth.dev/hearth/storage/nfs3"
)

// NFS is the driver for qcow2 volumes on an NFS share, which no host
// mounts: QEMU opens each volume with its own NFS client (libnfs, QEMU's
// nfs block driver from Debian's qemu-block-extra), qemu-img makes,
// copies and grows them the same way, and the few namespace operations
// qemu-img has no verb for (link, remove, free space) go through package
// nfs3.
//
// Why not a mount on each host: a hung NFS mount hangs every process that
// touches it, the agent included, and unmounting it cleanly needs every
// file closed; a mount is host state to keep in step with the pools;
// and kernels without an NFS client exist (this test machine's has none).
// Through libnfs a volume is a URL: a VM's disk is the same description on
// every host, which live migration and HA need, and a server that goes
// away fails that VM's I/O, not the host. The price: the NFS server sees
// each QEMU as a client, and qcow2 files on NFS have no lock (libnfs does
// no NLM), so nothing but the agent stops two hosts opening one volume.
//
// Files, all in the export's top directory (libnfs mounts a file's
// directory, so a file in a subdirectory would need its own export):
//
//	hearth-img-<sha256 hex>.qcow2   an imported image, standalone
//	hearth-vol-<id>.qcow2           a volume: blank, or backed by an image or snapshot
//	hearth-snap-<id>.qcow2          a snapshot: a flattened copy, standalone
//	.hearth-tmp-<random>            a file being made, linked to its name when done
//
// A clone records its backing file as an nfs:// URL with the server as
// configured, so every host must name the server the same way.
type NFS struct {
	cfg NFSConfig

	mu     sync.Mutex
	client *nfs3.Client
}

// NFSConfig says where an NFS share is.
type NFSConfig struct {
	// Server is the server's host name or IPv4 address.
	Server string
	// Export is the exported path, as clients mount it ("/srv/hearth").
	Export string
}

var (
	nfsServer = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$`)
	nfsExport = regexp.MustCompile(`^(/[A-Za-z0-9._-]+)+$|^/$`)
)

// Validate checks the configuration, whose values go into URLs.
func (c NFSConfig) Validate() error {
	var errs []error
	if !nfsServer.MatchString(c.Server) || (net.ParseIP(c.Server) != nil && net.ParseIP(c.Server).To4() == nil) {
		errs = append(errs, fmt.Errorf("server %q is not a host name or IPv4 address", c.Server))
	}
	if !nfsExport.MatchString(c.Export) || strings.Contains(c.Export, "/../") || strings.HasSuffix(c.Export, "/..") || path.Clean(c.Export) != c.Export {
		errs = append(errs, fmt.Errorf("export %q is not an absolute, clean path (letters, digits, '.', '_', '-' between slashes)", c.Export))
	}
	return errors.Join(errs...)
}

// NewNFS returns the driver for the share cfg describes. It does not
// contact the server.
func NewNFS(cfg NFSConfig) (*NFS, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("nfs pool: %w", err)
	}
	return &NFS{cfg: cfg}, nil
}

func (n *NFS) Kind() string { return "nfs" }
func (n *NFS) Shared() bool { return true }

// url is the nfs:// URL of a file in the export.
func (n *NFS) url(name string) string {
	return "nfs://" + n.cfg.Server + path.Join(n.cfg.Export, name)
}

func nfsVolume(id string) string   { return "hearth-vol-" + id + ".qcow2" }
func nfsSnapshot(id string) string { return "hearth-snap-" + id + ".qcow2" }

// share runs fn with a client of the export, connecting first if need be
// and once more if the connection broke.
func (n *NFS) share(fn func(*nfs3.Client) error) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for try := 0; ; try++ {
		if n.client == nil {
			c, err := nfs3.Dial(n.cfg.Server, n.cfg.Export)
			if err != nil {
				return err
			}
			n.client = c
		}
		err := fn(n.client)
		var nerr nfs3.Error
		if err == nil || errors.As(err, &nerr) || try > 0 {
			return err
		}
		// Not an answer from the server: the connection broke.
		n.client.Close()
		n.client = nil
	}
}

// exists reports whether name is in the export.
func (n *NFS) exists(name string) (bool, error) {
	err := n.share(func(c *nfs3.Client) error {
		_, err := c.Lookup(name)
		return err
	})
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// install makes a file under name with build, which writes it to the URL
// it is given: a temporary file, linked to name once complete, so that
// name never holds a half-made file. If name was made meanwhile, install
// returns an error wrapping fs.ErrExist and leaves it alone.
func (n *NFS) install(name string, build func(url string) error) error {
	tmp := ".hearth-tmp-" + randomHex(6)
	defer n.share(func(c *nfs3.Client) error { return c.Remove(tmp) })
	if err := build(n.url(tmp)); err != nil {
		return err
	}
	return n.share(func(c *nfs3.Client) error { return c.Link(tmp, name) })
}

// info runs qemu-img info on a qcow2 file of the export; a missing file
// is an error wrapping fs.ErrNotExist.
func (n *NFS) info(ctx context.Context, name string) (Info, error) {
	ok, err := n.exists(name)
	if err != nil {
		return Info{}, err
	}
	if !ok {
		return Info{}, fmt.Errorf("%s: %w", n.url(name), fs.ErrNotExist)
	}
	return qemuImgInfo(ctx, n.url(name), FormatQCOW2)
}

func (n *NFS) CreateVolume(ctx context.Context, id string, size int64) error {
	if err := ValidID(id); err != nil {
		return err
	}
	size, err := checkSize("create volume "+id, size)
	if err != nil {
		return err
	}
	if size == 0 {
		return fmt.Errorf("create volume %s: a blank volume needs a size", n.url(nfsVolume(id)))
	}
	return n.create(ctx, nfsVolume(id), size, "")
}

// create makes the qcow2 volume name of size bytes, backed by the file
// backing of the export if that is not "", unless it is there as asked.
func (n *NFS) create(ctx context.Context, name string, size int64, backing string) error {
	var backingURL string
	if backing != "" {
		backingURL = n.url(backing)
	}
	check := func() error {
		i, err := n.info(ctx, name)
		if err != nil {
			return fmt.Errorf("create volume %s: %w", n.url(name), err)
		}
		if i.Format == FormatQCOW2 && i.VirtualSize == size && i.BackingFile == backingURL {
			return nil
		}
		return fmt.Errorf("create volume %s: it already exists as %s, not %s; delete it or choose another id",
			n.url(name), describe(i), describe(Info{Format: FormatQCOW2, VirtualSize: size, BackingFile: backingURL}))
	}
	if ok, err := n.exists(name); err != nil {
		return fmt.Errorf("create volume %s: %w", n.url(name), err)
	} else if ok {
		return check()
	}
	err := n.install(name, func(url string) error {
		args := []string{"create", "-q", "-f", FormatQCOW2}
		if backing != "" {
			args = append(args, "-b", backingURL, "-F", FormatQCOW2)
		}
		_, err := qemuImg(ctx, append(args, url, strconv.FormatInt(size, 10))...)
		return err
	})
	if errors.Is(err, fs.ErrExist) {
		return check()
	}
	if err != nil {
		return fmt.Errorf("create volume %s: %w", n.url(name), err)
	}
	return nil
}

func (n *NFS) CloneImage(ctx context.Context, img Image, id string, size int64) error {
	if err := ValidID(id); err != nil {
		return err
	}
	base, baseSize, err := n.ensureImage(ctx, img)
	if err != nil {
		return err
	}
	return n.clone(ctx, base, baseSize, nfsVolume(id), size)
}

// ensureImage copies img to the share, as qcow2, unless it is there, and
// returns its name and size.
func (n *NFS) ensureImage(ctx context.Context, img Image) (string, int64, error) {
	hex, err := img.id()
	if err != nil {
		return "", 0, err
	}
	name := "hearth-img-" + hex + ".qcow2"
	if i, err := n.info(ctx, name); err == nil {
		return name, i.VirtualSize, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", 0, fmt.Errorf("image %s on %s: %w", img.Checksum, n.url(""), err)
	}
	src, err := Inspect(ctx, img.Path)
	if err != nil {
		return "", 0, fmt.Errorf("import image %s: %w", img.Path, err)
	}
	if src.BackingFile != "" || src.DataFile != "" {
		return "", 0, fmt.Errorf("import image %s: it refers to another file (%s); only standalone images can be imported",
			img.Path, src.BackingFile+src.DataFile)
	}
	err = n.install(name, func(url string) error {
		_, err := qemuImg(ctx, "convert", "-q", "-f", src.Format, "-O", FormatQCOW2, img.Path, url)
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrExist) { // another host copied it meanwhile
		return "", 0, fmt.Errorf("import image %s to %s: %w", img.Path, n.url(name), err)
	}
	return name, src.VirtualSize, nil
}

// clone makes volume name a thin clone of base (baseSize bytes) of size
// bytes (0: baseSize).
func (n *NFS) clone(ctx context.Context, base string, baseSize int64, name string, size int64) error {
	size, err := checkSize("clone "+base+" to "+name, size)
	if err != nil {
		return err
	}
	switch {
	case size == 0:
		size = baseSize
	case size < baseSize:
		return fmt.Errorf("clone %s to volume %s: size %s is smaller than the %s it is cloned from; make the volume at least that big",
			n.url(base), n.url(name), sizeString(size), sizeString(baseSize))
	}
	return n.create(ctx, name, size, base)
}

func (n *NFS) Snapshot(ctx context.Context, vol, snap string) error {
	if err := validIDs(vol, snap); err != nil {
		return err
	}
	name := nfsSnapshot(snap)
	if ok, err := n.exists(name); err != nil || ok {
		return err
	}
	src := n.url(nfsVolume(vol))
	err := n.install(name, func(url string) error {
		_, err := qemuImg(ctx, "convert", "-q", "-f", FormatQCOW2, "-O", FormatQCOW2, src, url)
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("snapshot %s to %s: %w", src, n.url(name), err)
	}
	return nil
}

func (n *NFS) CloneSnapshot(ctx context.Context, vol, snap, id string, size int64) error {
	if err := validIDs(vol, snap, id); err != nil {
		return err
	}
	name := nfsSnapshot(snap)
	i, err := n.info(ctx, name)
	if err != nil {
		return fmt.Errorf("clone snapshot %s: %w", n.url(name), err)
	}
	return n.clone(ctx, name, i.VirtualSize, nfsVolume(id), size)
}

func (n *NFS) Resize(ctx context.Context, id string, size int64) error {
	if err := ValidID(id); err != nil {
		return err
	}
	url := n.url(nfsVolume(id))
	i, err := n.info(ctx, nfsVolume(id))
	if err != nil {
		return fmt.Errorf("resize volume %s: %w", url, err)
	}
	size = roundUp(size)
	switch {
	case size == i.VirtualSize:
		return nil
	case size < i.VirtualSize:
		return fmt.Errorf("resize volume %s: cannot shrink it from %s to %s; volumes only grow", url, sizeString(i.VirtualSize), sizeString(size))
	}
	if _, err := qemuImg(ctx, "resize", "-q", "-f", FormatQCOW2, url, strconv.FormatInt(size, 10)); err != nil {
		return fmt.Errorf("resize volume %s: %w", url, err)
	}
	return nil
}

// remove deletes a file of the export; a missing one is not an error.
func (n *NFS) remove(name string) error {
	err := n.share(func(c *nfs3.Client) error { return c.Remove(name) })
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (n *NFS) DeleteVolume(ctx context.Context, id string) error {
	if err := ValidID(id); err != nil {
		return err
	}
	return n.remove(nfsVolume(id))
}

// DeleteSnapshot removes the snapshot's file whether or not volumes are
// cloned from it: the caller must not delete one that still backs a
// volume (as with the local driver).
func (n *NFS) DeleteSnapshot(ctx context.Context, vol, snap string) error {
	if err := validIDs(vol, snap); err != nil {
		return err
	}
	return n.remove(nfsSnapshot(snap))
}

// DeleteImage removes the image's copy on the share whether or not
// volumes are cloned from it, as DeleteSnapshot.
func (n *NFS) DeleteImage(ctx context.Context, img Image) error {
	hex, err := img.id()
	if err != nil {
		return err
	}
	return n.remove("hearth-img-" + hex + ".qcow2")
}

func (n *NFS) Stat(ctx context.Context, id string) (VolumeStat, error) {
	if err := ValidID(id); err != nil {
		return VolumeStat{}, err
	}
	i, err := n.info(ctx, nfsVolume(id))
	if err != nil {
		return VolumeStat{}, fmt.Errorf("volume %s: %w", n.url(nfsVolume(id)), err)
	}
	return VolumeStat{Size: i.VirtualSize, Allocated: i.ActualSize}, nil
}

func (n *NFS) Attachment(id string) (Attachment, error) {
	if err := ValidID(id); err != nil {
		return Attachment{}, err
	}
	return Attachment{
		Format: FormatQCOW2,
		Protocol: map[string]any{
			"driver": "nfs",
			"server": map[string]string{"type": "inet", "host": n.cfg.Server},
			"path":   path.Join(n.cfg.Export, nfsVolume(id)),
		},
		Shared: true,
	}, nil
}

func (n *NFS) Capacity(ctx context.Context) (Capacity, error) {
	var st nfs3.Stat
	err := n.share(func(c *nfs3.Client) error {
		var err error
		st, err = c.FSStat()
		return err
	})
	if err != nil {
		return Capacity{}, fmt.Errorf("capacity of %s: %w", n.url(""), err)
	}
	return Capacity{Total: int64(st.Total), Used: int64(st.Total - st.Free), Available: int64(st.Avail)}, nil
}
