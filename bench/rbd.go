package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"hearth.dev/hearth/storage"
)

// RBDConfig says which pool to measure and how much.
type RBDConfig struct {
	// Pool is the pool to make volumes in, with a user that may. The
	// driver's files go to Pool.Dir (a temporary directory if "").
	Pool storage.RBDConfig
	// Ops is how many of each operation to time, through the driver and
	// through the rbd program each.
	Ops int
}

// RBDRow is one operation's latencies through Hearth's driver and
// through the bare rbd program doing the same.
type RBDRow struct {
	Op                string
	Driver, CLI       []time.Duration
	DriverP50, CLIP50 time.Duration
	DriverP95, CLIP95 time.Duration
}

// Overhead is how much slower the driver is than the bare program at the
// median, as a fraction (0.05 is 5%).
func (r RBDRow) Overhead() float64 {
	return float64(r.DriverP50-r.CLIP50) / float64(r.CLIP50)
}

// RunRBD times volume create, clone (from an image already in the pool)
// and snapshot through storage.RBD and through the rbd program run with
// the same configuration file and user doing the same thing — `rbd
// create`; `rbd clone` of the image's snapshot; `rbd snap create` then
// `rbd snap protect`, as a snapshot that volumes can be cloned from needs
// — alternating the two so that the cluster's drift hits both alike. What
// it made is deleted afterwards, untimed.
func RunRBD(ctx context.Context, cfg RBDConfig, w io.Writer) ([]RBDRow, error) {
	if cfg.Ops <= 0 {
		cfg.Ops = 20
	}
	if cfg.Pool.Dir == "" {
		dir, err := os.MkdirTemp("", "hearth-bench-rbd-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		cfg.Pool.Dir = dir
	}
	d, err := storage.NewRBD(cfg.Pool)
	if err != nil {
		return nil, err
	}
	user := cfg.Pool.User
	if user == "" {
		user = "admin"
	}
	rbd := func(args ...string) error {
		full := append([]string{"--conf", filepath.Join(cfg.Pool.Dir, "ceph.conf"), "--id", user}, args...)
		out, err := exec.CommandContext(ctx, "rbd", full...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("rbd %v: %v: %s", args, err, out)
		}
		return nil
	}
	pool := cfg.Pool.Pool

	// An image in the pool, imported (untimed) through the driver.
	img, err := benchImage(cfg.Pool.Dir)
	if err != nil {
		return nil, err
	}
	run := "bench-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	if err := d.CloneImage(ctx, img, run+"-seed", 0); err != nil {
		return nil, err
	}
	imgHex := img.Checksum[len("sha256:"):]
	parent := pool + "/hearth-img-" + imgHex + "@base"

	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		d.DeleteVolume(context.WithoutCancel(ctx), run+"-seed")
		d.DeleteImage(context.WithoutCancel(ctx), img)
	}()
	bg := context.WithoutCancel(ctx)

	type pair struct {
		op          string
		driver, cli func(i int) error
	}
	const size = 64 << 20
	ops := []pair{
		{"create",
			func(i int) error {
				id := fmt.Sprintf("%s-c%d", run, i)
				cleanups = append(cleanups, func() { d.DeleteVolume(bg, id) })
				return d.CreateVolume(ctx, id, size)
			},
			func(i int) error {
				name := fmt.Sprintf("%s/%s-cli-c%d", pool, run, i)
				cleanups = append(cleanups, func() {
					exec.Command("rbd", "--conf", filepath.Join(cfg.Pool.Dir, "ceph.conf"), "--id", user, "rm", name).Run()
				})
				return rbd("create", "--size", strconv.Itoa(size)+"B", name)
			}},
		{"clone",
			func(i int) error {
				id := fmt.Sprintf("%s-k%d", run, i)
				cleanups = append(cleanups, func() { d.DeleteVolume(bg, id) })
				return d.CloneImage(ctx, img, id, 0)
			},
			func(i int) error {
				name := fmt.Sprintf("%s/%s-cli-k%d", pool, run, i)
				cleanups = append(cleanups, func() {
					exec.Command("rbd", "--conf", filepath.Join(cfg.Pool.Dir, "ceph.conf"), "--id", user, "rm", name).Run()
				})
				return rbd("clone", parent, name)
			}},
		{"snapshot",
			func(i int) error {
				snap := fmt.Sprintf("s%d", i)
				cleanups = append(cleanups, func() { d.DeleteSnapshot(bg, run+"-c0", snap) })
				return d.Snapshot(ctx, run+"-c0", snap)
			},
			func(i int) error {
				spec := fmt.Sprintf("%s/%s-cli-c0@s%d", pool, run, i)
				cleanups = append(cleanups, func() {
					exec.Command("rbd", "--conf", filepath.Join(cfg.Pool.Dir, "ceph.conf"), "--id", user, "snap", "unprotect", spec).Run()
					exec.Command("rbd", "--conf", filepath.Join(cfg.Pool.Dir, "ceph.conf"), "--id", user, "snap", "rm", spec).Run()
				})
				if err := rbd("snap", "create", spec); err != nil {
					return err
				}
				return rbd("snap", "protect", spec)
			}},
	}
	var rows []RBDRow
	for _, p := range ops {
		row := RBDRow{Op: p.op}
		timed := func(f func(int) error, i int) (time.Duration, error) {
			start := time.Now()
			err := f(i)
			return time.Since(start), err
		}
		for i := range cfg.Ops {
			// Alternate which goes first.
			var dt, ct time.Duration
			var derr, cerr error
			if i%2 == 0 {
				dt, derr = timed(p.driver, i)
				ct, cerr = timed(p.cli, i)
			} else {
				ct, cerr = timed(p.cli, i)
				dt, derr = timed(p.driver, i)
			}
			if err := errors.Join(derr, cerr); err != nil {
				return nil, fmt.Errorf("%s: %w", p.op, err)
			}
			row.Driver = append(row.Driver, dt)
			row.CLI = append(row.CLI, ct)
		}
		row.DriverP50, row.DriverP95 = pct(row.Driver, 50), pct(row.Driver, 95)
		row.CLIP50, row.CLIP95 = pct(row.CLI, 50), pct(row.CLI, 95)
		rows = append(rows, row)
	}
	if w != nil {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "OPERATION\tN\tHEARTH P50\tRBD CLI P50\tHEARTH P95\tRBD CLI P95\tOVERHEAD (P50)\t\n")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%+.1f%%\t\n", r.Op, len(r.Driver), ms(r.DriverP50), ms(r.CLIP50), ms(r.DriverP95), ms(r.CLIP95), 100*r.Overhead())
		}
		tw.Flush()
	}
	return rows, nil
}

// benchImage writes a small raw disk image with some data on it to dir.
func benchImage(dir string) (storage.Image, error) {
	data := make([]byte, 16<<20)
	for i := range 1 << 20 {
		data[i] = byte(i % 251)
	}
	path := filepath.Join(dir, "bench.img")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return storage.Image{}, err
	}
	sum := sha256.Sum256(data)
	return storage.Image{Checksum: "sha256:" + hex.EncodeToString(sum[:]), Path: path}, nil
}
