package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/storage"
)

// Images are fetched into the host's cache (storage.ImageCache) the first
// time a volume or VM disk here is cloned from them. Each host reports its
// copy in the Image's status.hosts: Downloading with a percentage while the
// fetch runs (at most every imageReportEvery), then Ready or Failed with a
// message. The first host to fetch an image also fills in status.checksum,
// size and virtualSize, and sets status.phase Ready, so that every later
// host checks its copy against the same checksum. The server lets a host
// write nothing else of an Image's status (auth.imageStatusByHost).
//
// Uploaded images are fetched from the API server's content endpoint of
// their own Image with the host's credential (client.DownloadImage, the
// only download that carries it); they are keyed by the checksum the
// server recorded, like any other image. Every other image is fetched
// from its URL with no credential, by a client that never connects to
// this machine or link-local addresses (storage.NewFetchClient).
//
// file:// images are a cluster administrator's: the agent reads one only
// for a shared Image (no tenant), and only under --allow-file-dir
// (storage.ImageCache.AllowedFileDirs). A tenant's Image with a file://
// URL is refused here too, should one ever reach etcd, and so is a VM
// whose kernel or initrd URL is file://: the API refuses both, and the
// agent does not rely on it.

// imageReportEvery is the least time between two progress reports of one
// fetch: each is an etcd write, and people read percentages no faster.
const imageReportEvery = time.Second

// imageRetryAfter is how long a failed fetch of an image (its checksum did
// not match, say) is not tried again, so that resyncs of the volumes that
// need it do not download it again and again.
const imageRetryAfter = 2 * time.Minute

// errWaiting marks an error that is a wait, not a failure: an uploaded
// image whose bytes have not arrived yet, a snapshot not yet taken
// (errors.Is(err, errWaiting)).
var errWaiting = errors.New("waiting")

// waitError is a wait, said in its own words.
type waitError struct{ msg string }

func (e *waitError) Error() string        { return e.msg }
func (e *waitError) Is(target error) bool { return target == errWaiting }

func waiting(format string, args ...any) error {
	return &waitError{msg: fmt.Sprintf(format, args...)}
}

// errFetch marks an error that is a failed fetch of an image: its URL
// refused, unreachable, or the bytes not what its checksum says
// (errors.Is(err, errFetch)).
var errFetch = errors.New("fetching an image failed")

type fetchError struct{ err error }

func (e *fetchError) Error() string        { return e.err.Error() }
func (e *fetchError) Unwrap() error        { return e.err }
func (e *fetchError) Is(target error) bool { return target == errFetch }

// waitMessage is the text of a waiting error.
func waitMessage(err error) string { return err.Error() }

// notFoundError is a name in a spec that names no object where its
// tenant would find one. It says so in the words of the ResolvedRefs
// condition and the API's warnings (api.MissingMessage).
type notFoundError struct{ kind, tenant, name string }

func (e *notFoundError) Error() string { return api.MissingMessage(e.kind, e.tenant, e.name) }

// missingKind returns the kind of the object err says is missing, or "".
func missingKind(err error) string {
	var nf *notFoundError
	if errors.As(err, &nf) {
		return nf.kind
	}
	return ""
}

// imageState is what the agent keeps about images between reconciles.
type imageState struct {
	// mu is held for reading while an image is fetched and cloned, and
	// for writing by the cache sweep, so the sweep never removes an image
	// between its fetch and the clone that makes it needed.
	mu sync.RWMutex

	failMu   sync.Mutex
	failures map[string]imageFailure // by image uid

	bootMu   sync.Mutex
	bootSums map[string]string // kernel and initrd URL (or "image UID") → checksum fetched

	backingMu sync.Mutex
	backing   map[string]string // disk file → its backing file ("" for none)
}

type imageFailure struct {
	sum string
	err error
	at  time.Time
}

func newImageState() *imageState {
	return &imageState{failures: map[string]imageFailure{}, bootSums: map[string]string{}, backing: map[string]string{}}
}

// image finds an Image by name: the tenant's own first, then a shared one.
// It reads the cache, and asks the API only for an image the cache does
// not have (yet). An image that does not exist is a *notFoundError.
func (a *Agent) image(ctx context.Context, tenant, name string) (*api.Image, error) {
	for _, key := range []string{tenant + "/" + name, name} {
		if o, ok := a.cache.images.Get(key); ok {
			return api.DeepCopy(o).(*api.Image), nil
		}
	}
	obj, err := a.c.Get(ctx, "Image", tenant, name)
	if api.IsNotFound(err) {
		obj, err = a.c.Get(ctx, "Image", "", name)
	}
	if api.IsNotFound(err) {
		return nil, &notFoundError{kind: "Image", tenant: tenant, name: name}
	}
	if err != nil {
		return nil, err
	}
	return obj.(*api.Image), nil
}

// imageSource returns where to fetch an image and the checksum to check
// it against ("" when nobody knows it yet).
func (a *Agent) imageSource(img *api.Image) (url, sum string, err error) {
	src := img.Spec.Source
	if src.Upload {
		if img.Status.Checksum == "" {
			return "", "", waiting("image %s has not been uploaded yet (hearth image upload %s FILE)", img.Metadata.Name, img.Metadata.Name)
		}
		return a.c.Server() + client.ImageContentPath(img.Metadata.Tenant, img.Metadata.Name), img.Status.Checksum, nil
	}
	sum = src.Checksum
	if sum == "" {
		sum = img.Status.Checksum
	}
	return src.URL, sum, nil
}

// imageAllowed says why this host will not fetch img from src, or nil:
// a file:// URL is for shared images only.
func imageAllowed(img *api.Image, src string) error {
	u, err := url.Parse(src)
	if err != nil {
		return fmt.Errorf("spec.source.url %q is not a URL", src)
	}
	if u.Scheme == "file" && img.Metadata.Tenant != "" {
		return fmt.Errorf("spec.source.url %s: a tenant's image cannot name a file on the hosts (only shared images, made by cluster admins, may); refusing it: upload the image or serve it over http(s)", src)
	}
	return nil
}

// ensureImage makes img be in this host's cache and returns the cached
// file. It reports on the Image's status.hosts as it goes, and tells
// progress (if not nil) the percentage fetched, or -1 while the size is
// unknown. Call it with a.imgs.mu held for reading, and clone from the
// file before letting go.
func (a *Agent) ensureImage(ctx context.Context, img *api.Image, progress func(pct int)) (string, error) {
	src, sum, err := a.imageSource(img)
	if err != nil {
		return "", err
	}
	uid := img.Metadata.UID
	a.imgs.failMu.Lock()
	f, failed := a.imgs.failures[uid]
	a.imgs.failMu.Unlock()
	if failed && f.sum == sum && time.Since(f.at) < imageRetryAfter {
		return "", &fetchError{f.err}
	}
	if err := imageAllowed(img, src); err != nil {
		a.imageFailed(ctx, img, sum, err)
		return "", &fetchError{err}
	}
	// An upload comes from its own Image's content endpoint, with the
	// host's credential; anything else from its URL, without.
	var get storage.Getter
	if img.Spec.Source.Upload {
		tenant, name := img.Metadata.Tenant, img.Metadata.Name
		get = func(ctx context.Context, offset int64, ifRange string) (*http.Response, error) {
			return a.c.DownloadImage(ctx, tenant, name, offset, ifRange)
		}
	}

	// The cache calls report from the download itself; the status is
	// written from here, so a slow API never slows the download.
	var done, total atomic.Int64
	var started atomic.Bool
	report := func(d, t int64) { done.Store(d); total.Store(t); started.Store(true) }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		last := -2
		tick := time.NewTicker(imageReportEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if !started.Load() {
				continue
			}
			pct := percent(done.Load(), total.Load())
			if pct == last {
				continue
			}
			last = pct
			if progress != nil {
				progress(pct)
			}
			a.setImageHost(ctx, img, api.ImageHostStatus{Host: a.cfg.Name, Phase: api.ImageDownloading, Progress: max(pct, 0)}, nil)
		}
	})
	var path, got string
	if get != nil {
		path, got, err = a.images.EnsureFrom(ctx, src, sum, get, report)
	} else {
		path, got, err = a.images.Ensure(ctx, src, sum, report)
	}
	close(stop)
	wg.Wait()
	if err != nil {
		if ctx.Err() == nil {
			a.imageFailed(ctx, img, sum, err)
		}
		return "", &fetchError{err}
	}
	a.imgs.failMu.Lock()
	delete(a.imgs.failures, uid)
	a.imgs.failMu.Unlock()
	a.setImageHost(ctx, img, api.ImageHostStatus{Host: a.cfg.Name, Phase: api.ImageReady, Progress: 100}, func(st *api.ImageStatus) {
		if st.Checksum == "" {
			st.Checksum = got
		}
		if fi, err := os.Stat(path); err == nil && st.Size == 0 {
			st.Size = api.Bytes(fi.Size())
		}
		if st.VirtualSize == 0 {
			if info, err := storage.Inspect(ctx, path); err == nil {
				st.VirtualSize = api.Bytes(info.VirtualSize)
			}
		}
		st.Phase = api.ImageReady
	})
	return path, nil
}

// imageFailed remembers that fetching img failed, so it is not tried
// again at once, and reports it on the Image.
func (a *Agent) imageFailed(ctx context.Context, img *api.Image, sum string, err error) {
	a.imgs.failMu.Lock()
	a.imgs.failures[img.Metadata.UID] = imageFailure{sum: sum, err: err, at: time.Now()}
	a.imgs.failMu.Unlock()
	a.setImageHost(ctx, img, api.ImageHostStatus{Host: a.cfg.Name, Phase: api.ImageFailed, Message: err.Error()}, nil)
}

func percent(done, total int64) int {
	if total <= 0 {
		return -1
	}
	return int(min(done*100/total, 100))
}

// setImageHost writes this host's entry of the image's status.hosts, and
// lets fill (if not nil) fill in image-wide fields, unless that changes
// nothing. Hosts share the list: client.WriteStatus reads again and
// re-applies after a conflict, so no host drops another's entry. A
// failure is logged, not returned: the report is for people, and the
// next one repairs it.
func (a *Agent) setImageHost(ctx context.Context, img *api.Image, entry api.ImageHostStatus, fill func(*api.ImageStatus)) {
	cur := img
	if o, ok := a.cache.images.Get(client.Key(img)); ok && o.GetMetadata().UID == img.Metadata.UID {
		cur = o.(*api.Image)
	}
	_, _, err := client.WriteStatus(ctx, a.c, a.cache.images, cur, func(img *api.Image) {
		st := &img.Status
		i := slices.IndexFunc(st.Hosts, func(h api.ImageHostStatus) bool { return h.Host == entry.Host })
		if i < 0 {
			st.Hosts = append(st.Hosts, entry)
		} else {
			st.Hosts[i] = entry
		}
		if fill != nil {
			fill(st)
		}
	})
	if err != nil && !api.IsNotFound(err) {
		slog.Warn("reporting image status", "image", client.Key(img), "err", err)
	}
}

// fetchBoot returns a local path for a VM's kernel or initrd: the cached
// copy of the Image it names (the VM tenant's own, else a shared one), or
// of its http(s) URL, whose checksum it remembers so the cache sweep
// keeps it. A file:// URL is refused: a VM boots a host's file only
// through a shared Image.
func (a *Agent) fetchBoot(ctx context.Context, vm *api.VirtualMachine, f *api.BootFile, field string) (string, error) {
	if f == nil {
		return "", fmt.Errorf("%s is not set", field)
	}
	if f.Image != "" {
		img, err := a.image(ctx, vm.Metadata.Tenant, f.Image)
		if err != nil {
			return "", fmt.Errorf("%s.image: %w", field, err)
		}
		a.imgs.mu.RLock()
		defer a.imgs.mu.RUnlock()
		path, err := a.ensureImage(ctx, img, nil)
		if err != nil {
			return "", fmt.Errorf("%s.image %s: %w", field, f.Image, err)
		}
		// Nothing is cloned from a kernel to hold it in the cache: keep
		// it for the sweep as a URL's is kept, even before the Image's
		// status names its checksum.
		if filepath.Dir(path) == filepath.Join(a.images.Dir, "sha256") {
			a.imgs.bootMu.Lock()
			a.imgs.bootSums["image "+img.Metadata.UID] = "sha256:" + filepath.Base(path)
			a.imgs.bootMu.Unlock()
		}
		return path, nil
	}
	if u, err := url.Parse(f.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("%s.url %s: a VM's kernel and initrd come from an http(s) URL or an Image; refusing it (a file of the host is offered as a shared Image)", field, f.URL)
	}
	a.imgs.mu.RLock()
	defer a.imgs.mu.RUnlock()
	path, sum, err := a.images.Ensure(ctx, f.URL, f.Checksum, nil)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", field, f.URL, &fetchError{err})
	}
	a.imgs.bootMu.Lock()
	a.imgs.bootSums[f.URL] = sum
	a.imgs.bootMu.Unlock()
	return path, nil
}

// collectImages deletes the cached images nothing needs any more: not an
// Image that still exists, nor the backing file of a volume or VM disk
// on this host, nor a kernel or initrd of a VM here. It does nothing while
// an image is being fetched, and tries again at the next sweep.
func (a *Agent) collectImages(ctx context.Context) {
	if !a.imgs.mu.TryLock() {
		return
	}
	defer a.imgs.mu.Unlock()
	keep := map[string]bool{}
	for _, o := range a.cache.images.List() {
		img := o.(*api.Image)
		keep[img.Spec.Source.Checksum] = true
		keep[img.Status.Checksum] = true
	}
	for _, o := range a.cache.vms.List() {
		b := o.(*api.VirtualMachine).Spec.Boot
		for _, f := range []*api.BootFile{b.Kernel, b.Initrd} {
			if f != nil {
				keep[f.Checksum] = true
			}
		}
	}
	a.imgs.bootMu.Lock()
	for _, sum := range a.imgs.bootSums {
		keep[sum] = true
	}
	a.imgs.bootMu.Unlock()
	backings, err := a.backingFiles(ctx)
	if err != nil {
		slog.Warn("not cleaning the image cache: a disk on this host cannot be read, and may need any image", "err", err)
		return
	}
	cached := filepath.Join(a.images.Dir, "sha256")
	for _, backing := range backings {
		if filepath.Dir(backing) == cached {
			keep["sha256:"+filepath.Base(backing)] = true
		}
	}
	delete(keep, "")
	removed, err := a.images.GC(keep)
	for _, sum := range removed {
		slog.Info("removed cached image no longer used", "checksum", sum)
	}
	if err != nil {
		slog.Warn("cleaning the image cache", "err", err)
	}
}

// backingFiles returns the backing file of every volume and VM disk on
// this host. A file's backing never changes, so each file is asked once.
func (a *Agent) backingFiles(ctx context.Context) ([]string, error) {
	var files []string
	patterns := []string{
		filepath.Join(a.cfg.DataDir, "volumes", "*"),
		filepath.Join(a.cfg.DataDir, "vms", "*", "disk*.qcow2"),
		// Local pools' volumes are clones of cached images too.
		filepath.Join(a.cfg.DataDir, "pools", "*", "volumes", "*"),
	}
	for _, o := range a.cache.pools.List() {
		if l := o.(*api.StoragePool).Spec.Local; l != nil && l.Path != "" {
			patterns = append(patterns, filepath.Join(l.Path, "volumes", "*"))
		}
	}
	for _, pattern := range patterns {
		m, _ := filepath.Glob(pattern)
		files = append(files, m...)
	}
	a.imgs.backingMu.Lock()
	defer a.imgs.backingMu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), ".") {
			continue // a volume being made; its image is held by the fetch lock
		}
		seen[f] = true
		b, ok := a.imgs.backing[f]
		if !ok {
			info, err := storage.VolumeInfo(ctx, f)
			if errors.Is(err, os.ErrNotExist) {
				continue // deleted meanwhile
			}
			if err != nil {
				return nil, err
			}
			b = info.BackingFile
			a.imgs.backing[f] = b
		}
		if b != "" {
			out = append(out, b)
		}
	}
	for f := range a.imgs.backing {
		if !seen[f] {
			delete(a.imgs.backing, f)
		}
	}
	return out, nil
}
