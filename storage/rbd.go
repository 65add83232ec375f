package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"hearth.dev/hearth/atomicfile"
)

// RBD is the driver for a Ceph RBD pool. It drives Ceph with the rbd and
// ceph programs (Debian's ceph-common) and qemu-img (qemu-block-extra's
// rbd driver), and QEMU opens volumes through librbd directly: no kernel
// mapping, so a host needs no rbd kernel module and a VM's disk follows it
// to another host with nothing to unmap.
//
// In the pool, names are:
//
//	hearth-img-<sha256 hex>            an imported image, read through its snapshot
//	hearth-img-<sha256 hex>@base       a protected snapshot every clone of it reads from
//	hearth-vol-<id>                    a volume: a blank image or a clone
//	hearth-vol-<id>@hearth-snap-<id>   a snapshot, protected so it can be cloned
//
// An image is imported once per pool (qemu-img writes it, as raw, into a
// temporary image that is snapshotted and protected and then renamed into
// place, so every host sees either the whole image or none); each volume
// made from it is a copy-on-write clone of its snapshot. Snapshots of a
// volume live inside the volume, as Ceph keeps them: a volume with
// snapshots, and a snapshot with clones, cannot be deleted (ErrBusy) until
// those are gone.
//
// The user's key is written, mode 0600, to files in Dir that the rbd
// program (--keyring, through the configuration file) and QEMU (a secret
// object) read: it is never on a command line, where any user of the host
// could read it in /proc.
type RBD struct {
	// imported remembers the images found or imported in the pool (their
	// snapshot's spec → size), so that a clone of one costs one rbd call.
	imported sync.Map

	cfg     RBDConfig
	conf    string // ceph.conf: monitors, and the keyring
	keyring string // the keyring, for the rbd and ceph programs
	keyFile string // the bare key, for QEMU's secret object
}

// RBDConfig says where an RBD pool is and how to reach it.
type RBDConfig struct {
	// Pool is the Ceph pool's name.
	Pool string
	// Monitors are the monitors' addresses, host or host:port (port
	// 3300, msgr2, when left out).
	Monitors []string
	// User is the cephx user, without "client." (default "admin").
	User string
	// Key is the user's cephx key (base64, as `ceph auth get-key` prints
	// it), or "" for a cluster without cephx.
	Key string
	// Dir is a directory for the files the driver writes (configuration,
	// keyring, key), which it creates with mode 0700. It must be the
	// pool's own: the files are named the same for every pool.
	Dir string
}

var (
	cephName   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)
	cephHost   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$|^\[[0-9A-Fa-f:.]+\]$`)
	cephKeyB64 = regexp.MustCompile(`^[A-Za-z0-9+/]+={0,2}$`)
)

// Validate checks the configuration; every value goes into a Ceph
// configuration file, so none may hold anything but its own syntax.
func (c RBDConfig) Validate() error {
	var errs []error
	if !cephName.MatchString(c.Pool) {
		errs = append(errs, fmt.Errorf("pool %q is not a Ceph pool name (letters, digits, '_', '.', '-')", c.Pool))
	}
	if len(c.Monitors) == 0 {
		errs = append(errs, errors.New("monitors: at least one monitor address is required"))
	}
	for i, m := range c.Monitors {
		if _, _, err := splitMonitor(m); err != nil {
			errs = append(errs, fmt.Errorf("monitors[%d]: %w", i, err))
		}
	}
	if c.User != "" && !cephName.MatchString(c.User) {
		errs = append(errs, fmt.Errorf("user %q is not a Ceph user name (without \"client.\")", c.User))
	}
	if c.Key != "" {
		if b, err := base64.StdEncoding.DecodeString(c.Key); err != nil || !cephKeyB64.MatchString(c.Key) || len(b) < 16 {
			errs = append(errs, errors.New("key is not a cephx key (base64, as `ceph auth get-key` prints it)"))
		}
	}
	if c.Dir == "" || !filepath.IsAbs(c.Dir) {
		errs = append(errs, fmt.Errorf("dir %q is not an absolute path", c.Dir))
	}
	return errors.Join(errs...)
}

// splitMonitor splits a monitor address into host and port (3300 when
// left out), and checks both.
func splitMonitor(m string) (host, port string, err error) {
	host, port = m, "3300"
	if h, p, err := net.SplitHostPort(m); err == nil {
		host, port = h, p
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("%q: port %q is not a number from 1 to 65535", m, port)
	}
	if !cephHost.MatchString(host) {
		return "", "", fmt.Errorf("%q is not a monitor address (host or host:port)", m)
	}
	return host, port, nil
}

// NewRBD returns the driver for the pool cfg describes, writing its
// configuration and key files. It does not contact the cluster.
func NewRBD(cfg RBDConfig) (*RBD, error) {
	if cfg.User == "" {
		cfg.User = "admin"
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rbd pool: %w", err)
	}
	r := &RBD{cfg: cfg,
		conf:    filepath.Join(cfg.Dir, "ceph.conf"),
		keyring: filepath.Join(cfg.Dir, "keyring"),
		keyFile: filepath.Join(cfg.Dir, "key"),
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("rbd pool %s: %w", cfg.Pool, err)
	}
	if err := os.Chmod(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("rbd pool %s: %w", cfg.Pool, err)
	}
	mons := make([]string, len(cfg.Monitors))
	for i, m := range cfg.Monitors {
		h, p, _ := splitMonitor(m)
		mons[i] = h + ":" + p
	}
	auth := "none"
	if cfg.Key != "" {
		auth = "cephx"
	}
	// The configuration names the keyring rather than holding the key,
	// so it could be shown; it is 0600 all the same.
	conf := "[global]\n" +
		"mon host = " + strings.Join(mons, ",") + "\n" +
		"auth client required = " + auth + "\n" +
		"keyring = " + r.keyring + "\n" +
		"log to stderr = false\n" +
		// Unreachable monitors, or a key they refuse, fail a command
		// (and QEMU's open) in seconds rather than the default 5 minutes.
		"client mount timeout = 15\n" +
		"err to stderr = true\n"
	files := map[string]string{r.conf: conf}
	if cfg.Key != "" {
		files[r.keyring] = "[client." + cfg.User + "]\n\tkey = " + cfg.Key + "\n"
		files[r.keyFile] = cfg.Key
	}
	for path, data := range files {
		if err := writeSecretFile(path, []byte(data)); err != nil {
			return nil, fmt.Errorf("rbd pool %s: %w", cfg.Pool, err)
		}
	}
	return r, nil
}

// writeSecretFile writes data to path, mode 0600, replacing the file
// whole: a reader sees the old contents or the new, never a mix, and
// never a file others may read.
func writeSecretFile(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return os.Chmod(path, 0o600)
	}
	return atomicfile.Write(path, data, 0o600)
}

func (r *RBD) Kind() string { return "rbd" }
func (r *RBD) Shared() bool { return true }

const (
	rbdImagePrefix  = "hearth-img-"
	rbdVolumePrefix = "hearth-vol-"
	rbdSnapPrefix   = "hearth-snap-"
	rbdBaseSnap     = "base"
)

func (r *RBD) spec(image string) string { return r.cfg.Pool + "/" + image }
func rbdVolume(id string) string        { return rbdVolumePrefix + id }

// rbdError is a failed rbd or ceph command: its exit status (the errno
// of what failed) and its message.
type rbdError struct {
	args []string
	code int
	msg  string
}

func (e *rbdError) Error() string {
	return fmt.Sprintf("%s: %s", strings.Join(e.args, " "), e.msg)
}

func (e *rbdError) Is(target error) bool {
	switch target {
	case fs.ErrNotExist:
		return e.code == 2 // ENOENT
	case fs.ErrExist:
		return e.code == 17 // EEXIST
	case ErrBusy:
		return e.code == 16 || e.code == 39 // EBUSY, ENOTEMPTY
	}
	return false
}

// cli runs the rbd or ceph program against the pool's cluster.
func (r *RBD) cli(ctx context.Context, prog string, args ...string) ([]byte, error) {
	full := append([]string{"--conf", r.conf, "--id", r.cfg.User}, args...)
	cmd := exec.CommandContext(ctx, prog, full...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	if errors.Is(err, exec.ErrNotFound) {
		return nil, fmt.Errorf("%s is not installed (install the ceph-common package): %w", prog, err)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%s %s: %w", prog, strings.Join(args, " "), ctx.Err())
	}
	e := &rbdError{args: append([]string{prog}, args...), code: -1, msg: lastLines(stderr.String())}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		e.code = exit.ExitCode()
	}
	if e.msg == "" {
		e.msg = err.Error()
	}
	return nil, e
}

// lastLines is the useful end of the rbd program's stderr: its own
// "rbd: …" line, without librbd's timestamped log lines before it.
func lastLines(s string) string {
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || (len(l) > 4 && l[4] == '-' && l[0] >= '0' && l[0] <= '9') || strings.Contains(l, "% complete") {
			continue // "2026-01-02T…" log lines, progress
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "; ")
}

// rbdInfo is what `rbd info --format json` says about an image.
type rbdInfo struct {
	Size   int64 `json:"size"`
	Parent *struct {
		Pool     string `json:"pool"`
		Image    string `json:"image"`
		Snapshot string `json:"snapshot"`
	} `json:"parent"`
}

func (r *RBD) info(ctx context.Context, spec string) (rbdInfo, error) {
	out, err := r.cli(ctx, "rbd", "info", "--format", "json", spec)
	if err != nil {
		return rbdInfo{}, err
	}
	var i rbdInfo
	if err := json.Unmarshal(out, &i); err != nil {
		return rbdInfo{}, fmt.Errorf("rbd info %s: unexpected output: %w", spec, err)
	}
	return i, nil
}

func (r *RBD) CreateVolume(ctx context.Context, id string, size int64) error {
	if err := ValidID(id); err != nil {
		return err
	}
	name := rbdVolume(id)
	size, err := checkSize("create volume "+name, size)
	if err != nil {
		return err
	}
	if size == 0 {
		return fmt.Errorf("create volume %s: a blank volume needs a size", name)
	}
	_, err = r.cli(ctx, "rbd", "create", "--size", bytesArg(size), r.spec(name))
	if errors.Is(err, fs.ErrExist) {
		return r.checkVolume(ctx, name, size, "")
	}
	if err != nil {
		return fmt.Errorf("create volume %s: %w", r.spec(name), err)
	}
	return nil
}

// checkVolume compares the existing volume name with what was asked for:
// size, and parent ("" for none, else pool/image@snap).
func (r *RBD) checkVolume(ctx context.Context, name string, size int64, parent string) error {
	i, err := r.info(ctx, r.spec(name))
	if err != nil {
		return fmt.Errorf("volume %s: %w", r.spec(name), err)
	}
	have := ""
	if i.Parent != nil {
		have = i.Parent.Pool + "/" + i.Parent.Image + "@" + i.Parent.Snapshot
	}
	if have != parent || i.Size != size {
		return fmt.Errorf("volume %s already exists as %s cloned from %q, not %s cloned from %q; delete it or choose another id",
			r.spec(name), sizeString(i.Size), have, sizeString(size), parent)
	}
	return nil
}

func (r *RBD) CloneImage(ctx context.Context, img Image, id string, size int64) error {
	if err := ValidID(id); err != nil {
		return err
	}
	hex, err := img.id()
	if err != nil {
		return err
	}
	if v, ok := r.imported.Load(hex); ok {
		known := v.(rbdImage)
		err := r.clone(ctx, known.base, known.size, rbdVolume(id), size)
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		// Deleted since (by another host's DeleteImage): import it again.
		r.imported.Delete(hex)
	}
	base, baseSize, err := r.ensureImage(ctx, img)
	if err != nil {
		return err
	}
	r.imported.Store(hex, rbdImage{base, baseSize})
	return r.clone(ctx, base, baseSize, rbdVolume(id), size)
}

// rbdImage is an image known to be in the pool.
type rbdImage struct {
	base string // pool/image@snap
	size int64
}

// ensureImage imports img into the pool unless it is there, and returns
// its snapshot's spec and size.
func (r *RBD) ensureImage(ctx context.Context, img Image) (string, int64, error) {
	hex, err := img.id()
	if err != nil {
		return "", 0, err
	}
	name := rbdImagePrefix + hex
	base := r.spec(name) + "@" + rbdBaseSnap
	if i, err := r.info(ctx, base); err == nil {
		return base, i.Size, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", 0, fmt.Errorf("image %s in pool %s: %w", img.Checksum, r.cfg.Pool, err)
	}

	src, err := Inspect(ctx, img.Path)
	if err != nil {
		return "", 0, fmt.Errorf("import image %s: %w", img.Path, err)
	}
	if src.BackingFile != "" || src.DataFile != "" {
		return "", 0, fmt.Errorf("import image %s: it refers to another file (%s); only standalone images can be imported",
			img.Path, src.BackingFile+src.DataFile)
	}
	tmp := name + ".tmp-" + randomHex(4)
	if err := r.importImage(ctx, img.Path, src, tmp); err != nil {
		r.removeImage(context.WithoutCancel(ctx), tmp)
		return "", 0, fmt.Errorf("import image %s into pool %s: %w", img.Path, r.cfg.Pool, err)
	}
	_, err = r.cli(ctx, "rbd", "rename", r.spec(tmp), r.spec(name))
	if errors.Is(err, fs.ErrExist) {
		// Another host imported it meanwhile: use theirs.
		r.removeImage(context.WithoutCancel(ctx), tmp)
		err = nil
	}
	if err != nil {
		r.removeImage(context.WithoutCancel(ctx), tmp)
		return "", 0, fmt.Errorf("import image %s into pool %s: %w", img.Path, r.cfg.Pool, err)
	}
	return base, src.VirtualSize, nil
}

// importImage writes the image at path, in src's format, into a new
// image tmp as raw, and snapshots and protects it.
func (r *RBD) importImage(ctx context.Context, path string, src Info, tmp string) error {
	if _, err := r.cli(ctx, "rbd", "create", "--size", bytesArg(roundUp(src.VirtualSize)), r.spec(tmp)); err != nil {
		return err
	}
	a := r.attachment(tmp)
	target, err := json.Marshal(map[string]any{"driver": FormatRaw, "file": a.Protocol})
	if err != nil {
		return err
	}
	// A new RBD image reads as zeroes: qemu-img need not write them.
	args := []string{"convert", "-q", "-n", "--target-is-zero", "-f", src.Format, "-O", FormatRaw}
	for i := 0; i < len(a.ObjectArgs()); i += 2 {
		args = append(args, "--object", a.ObjectArgs()[i+1])
	}
	if _, err := qemuImg(ctx, append(args, path, "json:"+string(target))...); err != nil {
		return err
	}
	if _, err := r.cli(ctx, "rbd", "snap", "create", r.spec(tmp)+"@"+rbdBaseSnap); err != nil {
		return err
	}
	_, err = r.cli(ctx, "rbd", "snap", "protect", r.spec(tmp)+"@"+rbdBaseSnap)
	return err
}

// removeImage deletes an image and its base snapshot, as far as it got.
func (r *RBD) removeImage(ctx context.Context, name string) error {
	snap := r.spec(name) + "@" + rbdBaseSnap
	if _, err := r.cli(ctx, "rbd", "snap", "unprotect", snap); err != nil && !errors.Is(err, fs.ErrNotExist) && !alreadyUnprotected(err) {
		return r.busy(ctx, err, snap)
	}
	if _, err := r.cli(ctx, "rbd", "snap", "rm", snap); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if _, err := r.cli(ctx, "rbd", "rm", r.spec(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// alreadyUnprotected tells the EINVAL of unprotecting an unprotected
// snapshot from other errors.
func alreadyUnprotected(err error) bool {
	var e *rbdError
	return errors.As(err, &e) && e.code == 22 && strings.Contains(e.msg, "unprotect")
}

// busy explains an EBUSY from unprotecting snap: it names the clones.
func (r *RBD) busy(ctx context.Context, err error, snap string) error {
	if !errors.Is(err, ErrBusy) {
		return err
	}
	out, cerr := r.cli(ctx, "rbd", "children", "--format", "json", snap)
	if cerr != nil {
		return fmt.Errorf("%s has clones: %w", snap, ErrBusy)
	}
	var kids []struct {
		Image string `json:"image"`
	}
	json.Unmarshal(out, &kids)
	names := make([]string, len(kids))
	for i, k := range kids {
		names[i] = strings.TrimPrefix(k.Image, rbdVolumePrefix)
	}
	return fmt.Errorf("%s has clones (volumes %s): delete them or flatten them first: %w", snap, strings.Join(names, ", "), ErrBusy)
}

// clone makes volume name a clone of parent (pool/image@snap, parentSize
// bytes) of size bytes (0: parentSize).
func (r *RBD) clone(ctx context.Context, parent string, parentSize int64, name string, size int64) error {
	size, err := checkSize("clone "+parent+" to "+name, size)
	if err != nil {
		return err
	}
	switch {
	case size == 0:
		size = parentSize
	case size < parentSize:
		return fmt.Errorf("clone %s to volume %s: size %s is smaller than the %s it is cloned from; make the volume at least that big",
			parent, r.spec(name), sizeString(size), sizeString(parentSize))
	}
	_, err = r.cli(ctx, "rbd", "clone", parent, r.spec(name))
	if errors.Is(err, fs.ErrExist) {
		// Made before: by a call that may have stopped before growing it.
		if i, ierr := r.info(ctx, r.spec(name)); ierr == nil && i.Size == parentSize && size > parentSize {
			err = nil
		} else {
			return r.checkVolume(ctx, name, size, parent)
		}
	}
	if err != nil {
		return fmt.Errorf("clone %s to volume %s: %w", parent, r.spec(name), err)
	}
	if size > parentSize {
		if err := r.grow(ctx, r.spec(name), size); err != nil {
			return fmt.Errorf("clone %s to volume %s: growing it to %s: %w", parent, r.spec(name), sizeString(size), err)
		}
	}
	return nil
}

// grow resizes the image at spec to size. Two callers growing one volume
// at once (its VM's start and its own reconcile) both find it smaller,
// and the second's `rbd resize` fails with "new size is equal to
// original size": an image that has the size asked for is grown.
func (r *RBD) grow(ctx context.Context, spec string, size int64) error {
	_, err := r.cli(ctx, "rbd", "resize", "--size", bytesArg(size), spec)
	if err != nil {
		if i, ierr := r.info(ctx, spec); ierr == nil && i.Size == size {
			return nil
		}
	}
	return err
}

func (r *RBD) Snapshot(ctx context.Context, vol, snap string) error {
	if err := validIDs(vol, snap); err != nil {
		return err
	}
	spec := r.spec(rbdVolume(vol)) + "@" + rbdSnapPrefix + snap
	_, err := r.cli(ctx, "rbd", "snap", "create", spec)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("snapshot %s: %w", spec, err)
	}
	// Protected, so that it can be cloned from on any cluster (clone v1).
	if _, err := r.cli(ctx, "rbd", "snap", "protect", spec); err != nil && !errors.Is(err, ErrBusy) {
		return fmt.Errorf("snapshot %s: protecting it: %w", spec, err)
	}
	return nil
}

func (r *RBD) CloneSnapshot(ctx context.Context, vol, snap, id string, size int64) error {
	if err := validIDs(vol, snap, id); err != nil {
		return err
	}
	parent := r.spec(rbdVolume(vol)) + "@" + rbdSnapPrefix + snap
	i, err := r.info(ctx, parent)
	if err != nil {
		return fmt.Errorf("clone snapshot %s: %w", parent, err)
	}
	return r.clone(ctx, parent, i.Size, rbdVolume(id), size)
}

func (r *RBD) Resize(ctx context.Context, id string, size int64) error {
	if err := ValidID(id); err != nil {
		return err
	}
	spec := r.spec(rbdVolume(id))
	i, err := r.info(ctx, spec)
	if err != nil {
		return fmt.Errorf("resize volume %s: %w", spec, err)
	}
	size = roundUp(size)
	switch {
	case size == i.Size:
		return nil
	case size < i.Size:
		return fmt.Errorf("resize volume %s: cannot shrink it from %s to %s; volumes only grow", spec, sizeString(i.Size), sizeString(size))
	}
	if err := r.grow(ctx, spec, size); err != nil {
		return fmt.Errorf("resize volume %s: %w", spec, err)
	}
	return nil
}

func (r *RBD) DeleteVolume(ctx context.Context, id string) error {
	if err := ValidID(id); err != nil {
		return err
	}
	spec := r.spec(rbdVolume(id))
	_, err := r.cli(ctx, "rbd", "rm", spec)
	switch {
	case err == nil, errors.Is(err, fs.ErrNotExist):
		return nil
	case errors.Is(err, ErrBusy):
		if snaps := r.snapshots(ctx, spec); len(snaps) > 0 {
			return fmt.Errorf("delete volume %s: it has snapshots (%s); delete them first: %w", spec, strings.Join(snaps, ", "), ErrBusy)
		}
		return fmt.Errorf("delete volume %s: a VM has it open: %w", spec, ErrBusy)
	}
	return fmt.Errorf("delete volume %s: %w", spec, err)
}

// snapshots lists the ids of Hearth's snapshots of the image spec.
func (r *RBD) snapshots(ctx context.Context, spec string) []string {
	out, err := r.cli(ctx, "rbd", "snap", "ls", "--format", "json", spec)
	if err != nil {
		return nil
	}
	var snaps []struct {
		Name string `json:"name"`
	}
	json.Unmarshal(out, &snaps)
	var ids []string
	for _, s := range snaps {
		ids = append(ids, strings.TrimPrefix(s.Name, rbdSnapPrefix))
	}
	slices.Sort(ids)
	return ids
}

func (r *RBD) DeleteSnapshot(ctx context.Context, vol, snap string) error {
	if err := validIDs(vol, snap); err != nil {
		return err
	}
	spec := r.spec(rbdVolume(vol)) + "@" + rbdSnapPrefix + snap
	if _, err := r.cli(ctx, "rbd", "snap", "unprotect", spec); err != nil && !alreadyUnprotected(err) {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("delete snapshot: %w", r.busy(ctx, err, spec))
	}
	if _, err := r.cli(ctx, "rbd", "snap", "rm", spec); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete snapshot %s: %w", spec, err)
	}
	return nil
}

func (r *RBD) DeleteImage(ctx context.Context, img Image) error {
	hex, err := img.id()
	if err != nil {
		return err
	}
	r.imported.Delete(hex)
	if err := r.removeImage(ctx, rbdImagePrefix+hex); err != nil {
		return fmt.Errorf("delete image %s from pool %s: %w", img.Checksum, r.cfg.Pool, err)
	}
	return nil
}

func (r *RBD) Stat(ctx context.Context, id string) (VolumeStat, error) {
	if err := ValidID(id); err != nil {
		return VolumeStat{}, err
	}
	spec := r.spec(rbdVolume(id))
	out, err := r.cli(ctx, "rbd", "du", "--format", "json", spec)
	if err != nil {
		return VolumeStat{}, fmt.Errorf("volume %s: %w", spec, err)
	}
	var du struct {
		Images []struct {
			Name        string `json:"name"`
			Snapshot    string `json:"snapshot"`
			Provisioned int64  `json:"provisioned_size"`
			Used        int64  `json:"used_size"`
		} `json:"images"`
	}
	if err := json.Unmarshal(out, &du); err != nil {
		return VolumeStat{}, fmt.Errorf("rbd du %s: unexpected output: %w", spec, err)
	}
	var st VolumeStat
	for _, i := range du.Images {
		// One line for the image itself and one per snapshot, whose
		// blocks the volume also holds.
		st.Allocated += i.Used
		if i.Snapshot == "" {
			st.Size = i.Provisioned
		}
	}
	return st, nil
}

func (r *RBD) Attachment(id string) (Attachment, error) {
	if err := ValidID(id); err != nil {
		return Attachment{}, err
	}
	return r.attachment(rbdVolume(id)), nil
}

// attachment describes image name for QEMU (and qemu-img). The servers
// are listed, not left to the configuration file, so that the description
// says where the disk is; conf is still given so that librbd reads no
// /etc/ceph/ceph.conf of some other cluster.
func (r *RBD) attachment(name string) Attachment {
	servers := make([]map[string]string, len(r.cfg.Monitors))
	for i, m := range r.cfg.Monitors {
		h, p, _ := splitMonitor(m)
		servers[i] = map[string]string{"host": strings.Trim(h, "[]"), "port": p}
	}
	proto := map[string]any{
		"driver": "rbd",
		"pool":   r.cfg.Pool,
		"image":  name,
		"conf":   r.conf,
		"user":   r.cfg.User,
		"server": servers,
	}
	a := Attachment{Format: FormatRaw, Protocol: proto, Shared: true}
	if r.cfg.Key != "" {
		sum := sha256.Sum256([]byte(r.keyFile))
		id := "rbd-" + hex.EncodeToString(sum[:6])
		proto["key-secret"] = id
		proto["auth-client-required"] = []string{"cephx"}
		a.Secrets = []SecretFile{{ID: id, File: r.keyFile}}
	} else {
		proto["auth-client-required"] = []string{"none"}
	}
	return a
}

func (r *RBD) Capacity(ctx context.Context) (Capacity, error) {
	out, err := r.cli(ctx, "ceph", "df", "--format", "json")
	if err != nil {
		return Capacity{}, fmt.Errorf("capacity of pool %s: %w", r.cfg.Pool, err)
	}
	var df struct {
		Pools []struct {
			Name  string `json:"name"`
			Stats struct {
				Stored   int64 `json:"stored"`
				MaxAvail int64 `json:"max_avail"`
			} `json:"stats"`
		} `json:"pools"`
	}
	if err := json.Unmarshal(out, &df); err != nil {
		return Capacity{}, fmt.Errorf("ceph df: unexpected output: %w", err)
	}
	for _, p := range df.Pools {
		if p.Name == r.cfg.Pool {
			s := p.Stats
			return Capacity{Total: s.Stored + s.MaxAvail, Used: s.Stored, Available: s.MaxAvail}, nil
		}
	}
	return Capacity{}, fmt.Errorf("capacity of pool %s: ceph df does not list it: %w", r.cfg.Pool, fs.ErrNotExist)
}

// bytesArg is a size as the rbd program takes it in bytes.
func bytesArg(n int64) string { return strconv.FormatInt(n, 10) + "B" }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ParseCephKey returns the cephx key in value, which is either the key
// itself (as `ceph auth get-key` prints it) or a keyring file (as `ceph
// auth get` prints it, "[client.NAME]\n\tkey = …"), for the key of user
// if it names several. A StoragePool's keyring Secret may hold either.
func ParseCephKey(value, user string) (string, error) {
	v := strings.TrimSpace(value)
	if !strings.ContainsAny(v, "[ \t\n") { // one word: the key itself
		if b, err := base64.StdEncoding.DecodeString(v); err == nil && len(b) >= 16 && cephKeyB64.MatchString(v) {
			return v, nil
		}
		return "", errors.New("the keyring secret holds neither a cephx key nor a keyring")
	}
	section, keys := "", map[string]string{}
	for _, line := range strings.Split(v, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.TrimSpace(line[1 : len(line)-1])
		case strings.HasPrefix(line, "key"):
			if k, val, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "key" {
				keys[section] = strings.TrimSpace(val)
			}
		}
	}
	key, ok := keys["client."+user]
	if !ok && len(keys) == 1 {
		for _, k := range keys {
			key, ok = k, true
		}
	}
	if !ok {
		return "", fmt.Errorf("the keyring holds no key for client.%s", user)
	}
	if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) < 16 || !cephKeyB64.MatchString(key) {
		return "", fmt.Errorf("the keyring's key for client.%s is not a cephx key", user)
	}
	return key, nil
}
