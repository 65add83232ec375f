package doctor

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// Condition types of the disk's findings.
const (
	condDataDir = "DataDir"
	condFsync   = "DiskLatency"
)

// space is how much free space a role wants under its data directory.
type space struct {
	warn, fail uint64
	why        string
}

var (
	// etcd's database may grow to 2 GiB (its default quota) before it
	// refuses writes; uploaded images live beside it.
	serverSpace = space{2 << 30, 256 << 20, "etcd's database (up to 2 GiB) and uploaded images"}
	// Images are cached and volumes live here.
	agentSpace   = space{20 << 30, 1 << 30, "cached images and volumes"}
	bootSpace    = space{1 << 30, 64 << 20, "cached kernels and initrds"}
	sandboxSpace = space{4 << 30, 512 << 20, "the sandbox's server, test guest and VM disks"}
)

// Filesystem magic numbers (statfs f_type) worth a word.
const (
	tmpfsMagic   = 0x01021994
	nfsMagic     = 0x6969
	overlayMagic = 0x794c7630
	cifsMagic    = 0xff534d42
	smb2Magic    = 0xfe534d42
	fuseMagic    = 0x65735546
	ext4Magic    = 0xef53
	xfsMagic     = 0x58465342
	btrfsMagic   = 0x9123683e
	zfsMagic     = 0x2fc12fc1
)

func fsName(t int64) string {
	switch t {
	case tmpfsMagic:
		return "tmpfs"
	case nfsMagic:
		return "nfs"
	case overlayMagic:
		return "overlayfs"
	case cifsMagic, smb2Magic:
		return "cifs"
	case fuseMagic:
		return "fuse"
	case ext4Magic:
		return "ext4"
	case xfsMagic:
		return "xfs"
	case btrfsMagic:
		return "btrfs"
	case zfsMagic:
		return "zfs"
	default:
		return fmt.Sprintf("filesystem type %#x", t)
	}
}

// dataDir checks a role's data directory: that it is (or can be) a
// directory only its owner enters, when private, the filesystem under it,
// and its free space.
func dataDir(dir string, private bool, want space) []Finding {
	var out []Finding
	mode := Finding{Check: "data-dir", Condition: condDataDir, Status: OK}
	fi, err := os.Stat(dir)
	switch {
	case os.IsNotExist(err):
		parent := existingDir(dir)
		mode.Message = fmt.Sprintf("%s does not exist yet; it is made at the first start (in %s)", dir, parent)
		if unix.Access(parent, unix.W_OK) != nil {
			mode.Status, mode.Message = Fail, fmt.Sprintf("%s does not exist and %s is not writable", dir, parent)
			mode.Fix = fmt.Sprintf("run as root, or give --data-dir a directory you can write (or: install -d -m 0700 %s)", dir)
		}
	case err != nil:
		mode.Status, mode.Message, mode.Fix = Fail, err.Error(), "run hearth doctor as the user the role runs as"
	case !fi.IsDir():
		mode.Status, mode.Message, mode.Fix = Fail, dir+" is not a directory", "give --data-dir a directory"
	case unix.Access(dir, unix.W_OK) != nil:
		mode.Status, mode.Message = Fail, dir+" is not writable by this user"
		mode.Fix = "run as the user the role runs as (root, or hearth for the server of the Debian package)"
	case private && fi.Mode().Perm()&0o077 != 0 && !emptyDir(dir):
		mode.Status = Fail
		mode.Message = fmt.Sprintf("%s has mode %#o: other users may enter it, and the server refuses it (it holds keys and etcd)", dir, fi.Mode().Perm())
		mode.Fix = "chmod 0700 " + dir
	default:
		mode.Message = fmt.Sprintf("%s is a directory (mode %#o)", dir, fi.Mode().Perm())
	}
	out = append(out, mode)

	var st unix.Statfs_t
	at := existingDir(dir)
	if err := unix.Statfs(at, &st); err != nil {
		return append(out, Finding{Check: "disk-space", Condition: condDataDir, Status: Skipped, Message: err.Error()})
	}
	free := st.Bavail * uint64(st.Bsize)
	fs := Finding{Check: "disk-space", Condition: condDataDir, Status: OK,
		Message: fmt.Sprintf("%s free on %s (%s)", human(free), at, fsName(int64(st.Type)))}
	switch {
	case free < want.fail:
		fs.Status = Fail
		fs.Message = fmt.Sprintf("only %s free on %s, for %s", human(free), at, want.why)
		fs.Fix = fmt.Sprintf("free space, or give --data-dir a filesystem with at least %s free", human(want.warn))
	case free < want.warn:
		fs.Status = Warn
		fs.Message = fmt.Sprintf("%s free on %s, little for %s", human(free), at, want.why)
		fs.Fix = fmt.Sprintf("free space, or give --data-dir a filesystem with at least %s free", human(want.warn))
	}
	out = append(out, fs)
	switch st.Type {
	case tmpfsMagic:
		out = append(out, Finding{Check: "filesystem", Condition: condDataDir, Status: Warn,
			Message: at + " is on tmpfs: its contents are lost at every reboot, and take RAM",
			Fix:     "give --data-dir a directory on a disk"})
	case nfsMagic, cifsMagic, smb2Magic, fuseMagic:
		out = append(out, Finding{Check: "filesystem", Condition: condDataDir, Status: Warn,
			Message: at + " is on a network or FUSE filesystem (" + fsName(int64(st.Type)) + "): etcd and qcow2 volumes need local fsync and locks",
			Fix:     "give --data-dir a directory on a local disk"})
	}
	return out
}

func emptyDir(dir string) bool {
	entries, err := os.ReadDir(dir)
	return err == nil && len(entries) == 0
}

func human(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

// Fsync measurement: etcd appends each write to its write-ahead log and
// fdatasyncs it before it answers, so the latency of a small append plus
// fdatasync bounds every API write. etcd's own guidance is a 99th
// percentile under 10 ms; past it, heartbeats time out and leaders change
// under load.
const (
	fsyncSamples = 60
	fsyncRecord  = 2300 // bytes, about a WAL entry of a small object
	fsyncBudget  = 5 * time.Second
	// FsyncWarn is the 99th percentile past which the disk is called slow.
	FsyncWarn = 10 * time.Millisecond
)

// fsyncLatency appends records to a file in the data directory (or the
// closest existing parent) and fdatasyncs each, as etcd's WAL does, and
// reports the 99th percentile.
func fsyncLatency(ctx context.Context, dir string) []Finding {
	f := Finding{Check: "fsync", Condition: condFsync, Status: OK}
	at := existingDir(dir)
	file, err := os.CreateTemp(at, ".hearth-doctor-fsync-")
	if err != nil {
		f.Status, f.Message, f.Fix = Skipped, "not measured: "+err.Error(), "run hearth doctor as the user the server runs as"
		return []Finding{f}
	}
	defer os.Remove(file.Name())
	defer file.Close()
	lat, err := measureFsync(ctx, file)
	if err != nil {
		f.Status, f.Message = Fail, fmt.Sprintf("fdatasync in %s: %v", at, err)
		f.Fix = "give --data-dir a filesystem that supports fsync"
		return []Finding{f}
	}
	p99 := percentile(lat, 0.99)
	f.Message = fmt.Sprintf("fdatasync of a %d-byte append in %s: 99th percentile %s, median %s (%d samples); etcd wants under %s",
		fsyncRecord, at, since(p99), since(percentile(lat, 0.5)), len(lat), since(FsyncWarn))
	if p99 > FsyncWarn {
		f.Status = Warn
		f.Message = fmt.Sprintf("slow disk: fdatasync of a %d-byte append in %s takes %s at the 99th percentile (median %s, %d samples); etcd wants under %s, "+
			"and every API write waits for one", fsyncRecord, at, since(p99), since(percentile(lat, 0.5)), len(lat), since(FsyncWarn))
		f.Fix = "put the server's --data-dir on an SSD (not an SD card, USB stick or network share), or expect slow writes and leader changes under load"
	}
	return []Finding{f}
}

func measureFsync(ctx context.Context, file *os.File) ([]time.Duration, error) {
	rec := make([]byte, fsyncRecord)
	var lat []time.Duration
	deadline := time.Now().Add(fsyncBudget)
	for i := 0; i < fsyncSamples && ctx.Err() == nil; i++ {
		if _, err := file.Write(rec); err != nil {
			return nil, err
		}
		start := time.Now()
		if err := unix.Fdatasync(int(file.Fd())); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(start))
		if time.Now().After(deadline) && len(lat) >= 10 {
			break // a slow disk: enough samples to say so
		}
	}
	if len(lat) == 0 {
		return nil, ctx.Err()
	}
	return lat, nil
}

// percentile returns the q-th quantile (0..1) of ds, nearest rank.
func percentile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
