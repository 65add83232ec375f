package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

func init() { commands = append(commands, newImageCmd) }

func newImageCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Work with disk images",
	}
	cmd.AddCommand(newImageUploadCmd(g))
	return cmd
}

func newImageUploadCmd(g *globals) *cobra.Command {
	var format, checksum string
	cmd := &cobra.Command{
		Use:   "upload NAME FILE",
		Short: "Upload a disk image's bytes through the API",
		Long: `Upload FILE as the content of the Image NAME: a tenant's own image with
--tenant, else a shared one (cluster admins only). An Image that does not
exist yet is created with spec.source.upload set; an existing one must have
it set. The server checks the bytes against spec.source.checksum when the
image has one, and records their checksum; hosts then fetch the image from
the server the first time a volume needs it (` + "`hearth get image NAME -w`" + `
shows their progress).

An image's content never changes once uploaded, since volumes are clones of
it: uploading other bytes to it is refused; create a new image instead.`,
		Example: `  hearth image upload debian-12 debian-12-genericcloud-amd64.qcow2
  hearth image upload my-appliance appliance.qcow2 -t lab --checksum sha256:…
  hearth image upload installer debian-12.iso --format iso`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImageUpload(cmd.Context(), g, args[0], args[1], format, checksum)
		},
	}
	f := cmd.Flags()
	f.StringVar(&format, "format", "", "format of an image that does not exist yet: qcow2, raw or iso (default from the file name: iso for .iso, raw for .raw, else qcow2)")
	f.StringVar(&checksum, "checksum", "", `checksum ("sha256:…") of an image that does not exist yet, checked by the server`)
	return cmd
}

func runImageUpload(ctx context.Context, g *globals, name, file, format, checksum string) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	k, _ := api.KindByName("Image")
	tenant := g.readTenant(k)
	ref := "shared image " + name
	if tenant != "" {
		ref = "image " + name + " in tenant " + tenant
	}

	_, err = c.Get(ctx, "Image", tenant, name)
	if api.IsNotFound(err) {
		img := &api.Image{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Image"},
			Metadata: api.ObjectMeta{Name: name, Tenant: tenant},
			Spec:     api.ImageSpec{Format: imageFormat(format, file), Source: api.ImageSource{Upload: true, Checksum: checksum}}}
		if _, err := c.Create(ctx, img); err != nil {
			return err
		}
		fmt.Fprintf(g.out, "image/%s created\n", name)
	} else if err != nil {
		return err
	} else if format != "" || checksum != "" {
		return fmt.Errorf("%s exists: --format and --checksum only apply to a new image (an image's source cannot change)", ref)
	}

	bar := newProgressBar(g.errOut, fi.Size())
	img, err := c.UploadImage(ctx, tenant, name, client.WithSize(io.TeeReader(f, bar), fi.Size()))
	bar.finish(err == nil)
	if err != nil {
		return fmt.Errorf("uploading %s to %s: %w", file, ref, err)
	}
	fmt.Fprintf(g.out, "image/%s uploaded: %s, %s\n", name, humanBytes(int64(img.Status.Size)), img.Status.Checksum)
	return nil
}

// imageFormat is --format, or a guess from the file's name.
func imageFormat(flag, file string) string {
	if flag != "" {
		return flag
	}
	switch strings.ToLower(filepath.Ext(file)) {
	case ".iso":
		return api.FormatISO
	case ".raw":
		return api.FormatRaw
	}
	return api.FormatQCOW2
}

// progressBar draws how much of an upload has been sent, at what rate, and
// how long the rest will take, on one line of a terminal. Where the output
// is not a terminal (a log, a pipe) it writes only the final line.
type progressBar struct {
	w        io.Writer
	tty      bool
	total    int64
	start    time.Time
	interval time.Duration

	mu    sync.Mutex
	done  int64
	drawn time.Time
}

func newProgressBar(w io.Writer, total int64) *progressBar {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &progressBar{w: w, tty: tty, total: total, start: time.Now(), interval: 200 * time.Millisecond}
}

// Write counts bytes sent (it sits behind an io.TeeReader).
func (p *progressBar) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += int64(len(b))
	if now := time.Now(); p.tty && now.Sub(p.drawn) >= p.interval {
		p.drawn = now
		fmt.Fprint(p.w, "\r"+p.line(now)+"\x1b[K")
	}
	return len(b), nil
}

// finish draws the last state and ends the line.
func (p *progressBar) finish(ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !ok && !p.tty {
		return // the error says it all
	}
	prefix := ""
	if p.tty {
		prefix = "\r"
	}
	fmt.Fprint(p.w, prefix+p.line(time.Now())+"\x1b[K\n")
}

// line is the bar's text at now, such as
// " 42% [========>           ] 420.0Mi/1000.0Mi  85.3Mi/s  ETA 7s".
func (p *progressBar) line(now time.Time) string {
	const width = 24
	elapsed := now.Sub(p.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(p.done) / elapsed
	}
	pct, eta := 100, ""
	if p.total > 0 {
		pct = int(min(p.done*100/p.total, 100))
	}
	filled := pct * width / 100
	bar := strings.Repeat("=", filled)
	if filled < width {
		bar += ">" + strings.Repeat(" ", width-filled-1)
	}
	if p.done < p.total && rate > 0 {
		eta = "  ETA " + time.Duration(float64(p.total-p.done)/rate*float64(time.Second)).Round(time.Second).String()
	}
	return fmt.Sprintf("%3d%% [%s] %s/%s  %s/s%s", pct, bar, humanBytes(p.done), humanBytes(p.total), humanBytes(int64(rate)), eta)
}

// humanBytes writes a size with one decimal in binary units ("1.5Gi").
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 5 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f%ci", v, "KMGTPE"[i])
}
