package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/atomicfile"
	"hearth.dev/hearth/flock"
)

// ImageCache keeps the images this host's volumes are cloned from. It
// fetches an image the first time it is needed and keeps it, under the
// SHA-256 of its bytes, for as long as GC is told to keep it.
//
// The cache directory holds:
//
//	sha256/<hex>       images, complete and checked, read-only
//	partial/<key>.part downloads under way or interrupted, resumed later
//	locks/<key>.lock   one per image, so two processes never fetch it twice
//	urls/<hash of url> the checksum a URL gave when fetched without one
//
// An ImageCache is safe for concurrent use and must not be copied.
type ImageCache struct {
	// Dir is the cache directory. It is created when first needed.
	Dir string
	// Client fetches http(s) images; nil means http.DefaultClient. It
	// should have no overall timeout (images are large); Ensure's context
	// bounds a download. Agents and the boot service use NewFetchClient,
	// which never connects to their own machine.
	Client *http.Client
	// AllowedFileDirs are the directories file:// images may be in (the
	// agent's and the boot service's --allow-file-dir). A file's path is
	// cleaned and its symbolic links resolved before it is compared, so
	// neither ".." nor a link leads out of them. With none, file:// is
	// refused.
	AllowedFileDirs []string

	mu      sync.Mutex
	flights map[string]*flight // downloads under way, by flightKey
	hashed  map[string]hashed  // file:// images already hashed, by path
}

// Progress is told how many bytes of an image have arrived (done) of how
// many there are (total, -1 if unknown). It is called when a fetch starts,
// at most every ProgressInterval while it runs, and when it ends.
type Progress func(done, total int64)

// ProgressInterval is the least time between two Progress calls.
const ProgressInterval = 250 * time.Millisecond

// Ensure returns the local path of the image at rawURL and the checksum
// ("sha256:<hex>") of its bytes, fetching it if this host does not have it.
// rawURL is http(s)://… or file:///absolute/path.
//
// An http(s) image is downloaded to a partial file, hashed as it arrives,
// and moved to DIR/sha256/<hex> only once it is complete and matches
// checksum; on a mismatch the partial file is deleted and the error names
// both checksums. Concurrent calls for the same image share one download,
// in this process and, through a lock file, across processes. A download
// that is cut off is resumed from where it stopped (HTTP Range) by the next
// call, if the server supports ranges.
//
// A cached copy is used without asking the server anything when this URL
// gave it on this host: every file in the cache was hashed as it was
// written, and its name is its checksum. Another URL with the same
// checksum is fetched (and checked) once itself: the cache is shared by
// every tenant on the host, and knowing an image's checksum must not be
// enough to get its bytes. Without a checksum (the image's author gave
// none) the first download on this host is trusted, the checksum of what
// arrived is returned, and later calls with the same URL and no checksum
// reuse that copy rather than fetching the URL again, because an Image's
// content is fixed once volumes are cloned from it. Callers should record
// the returned checksum (image status) and pass it on later calls and on
// other hosts, so every host clones the same bytes.
//
// A file:// image is used where it is, not copied, and only when it lies
// under one of AllowedFileDirs once its path is cleaned and its links
// resolved; the path returned is the resolved one. It is hashed (again
// only when the file changes) so that Ensure can check it against
// checksum, or return its checksum when none was given.
//
// progress, if not nil, hears how the fetch or hashing goes. It is not
// called for an image already here, nor after Ensure returns.
func (c *ImageCache) Ensure(ctx context.Context, rawURL, checksum string, progress Progress) (path, sum string, err error) {
	return c.ensure(ctx, rawURL, checksum, nil, progress)
}

// Getter requests an image's bytes from byte offset on (0: all of them),
// sending ifRange as If-Range when it is not empty, and returns the
// response: 200, 206 for a range, or another status the download judges.
type Getter func(ctx context.Context, offset int64, ifRange string) (*http.Response, error)

// EnsureFrom is Ensure for an image whose bytes come from get rather than
// from a plain GET: an upload, which only the API server's content
// endpoint of that one Image may be asked for, with a credential that
// must go nowhere else. source is the image's URL as errors, resuming and
// the cache's records of what each source gave know it.
func (c *ImageCache) EnsureFrom(ctx context.Context, source, checksum string, get Getter, progress Progress) (path, sum string, err error) {
	if get == nil {
		return "", "", fmt.Errorf("image %s: no getter", source)
	}
	return c.ensure(ctx, source, checksum, get, progress)
}

func (c *ImageCache) ensure(ctx context.Context, rawURL, checksum string, get Getter, progress Progress) (path, sum string, err error) {
	if checksum != "" {
		if es := v1alpha1.ValidateChecksum("checksum", checksum); len(es) > 0 {
			return "", "", fmt.Errorf("image %s: %w", rawURL, es)
		}
	}
	if progress == nil {
		progress = func(int64, int64) {}
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", "", fmt.Errorf("image %s: %w", rawURL, err)
	}
	switch {
	case u.Scheme == "file" && get == nil:
		if u.Host != "" || !filepath.IsAbs(u.Path) {
			return "", "", fmt.Errorf("image %s: a file URL must be file:///absolute/path", rawURL)
		}
		path, err := c.allowedFile(u.Path)
		if err != nil {
			return "", "", fmt.Errorf("image %s: %w", rawURL, err)
		}
		return c.ensureLocal(ctx, path, checksum, progress)
	case u.Scheme == "http" || u.Scheme == "https":
	default:
		return "", "", fmt.Errorf("image %s: cannot fetch %q URLs (use http, https or file:///absolute/path)", rawURL, u.Scheme)
	}
	if get == nil {
		get = func(ctx context.Context, offset int64, ifRange string) (*http.Response, error) {
			return c.get(ctx, rawURL, offset, ifRange)
		}
	}

	// The common case: this URL gave the image before, and nothing needs
	// a lock.
	if checksum != "" && c.urlSum(rawURL) == checksum {
		return c.imagePath(checksum), checksum, nil
	}
	key := imageKey(rawURL, checksum)
	return c.join(ctx, key, progress, func(ctx context.Context, report Progress) (string, string, error) {
		return c.fetch(ctx, key, rawURL, checksum, get, report)
	})
}

// imageKey names one fetch: its flight, lock file and partial file. It
// holds the URL as well as the checksum, so that a fetch of the same
// bytes from another URL is a fetch of its own rather than a way to wait
// for, and share, what the first one gets. A key that starts with the
// checksum's hex digits lets GC keep an interrupted download of an image
// still needed.
func imageKey(rawURL, checksum string) string {
	if checksum == "" {
		return "url-" + hashString(rawURL)
	}
	return hexOf(checksum) + "-" + hashString(rawURL)[:16]
}

// allowedFile resolves the path of a file:// image (cleaned, symbolic
// links followed) and returns it if it lies under one of
// AllowedFileDirs, which are resolved the same way.
func (c *ImageCache) allowedFile(p string) (string, error) {
	if len(c.AllowedFileDirs) == 0 {
		return "", errors.New("file:// images are not allowed here: no directory is allowed for them (--allow-file-dir); serve the file over http(s), or upload it")
	}
	resolved, err := filepath.EvalSymlinks(filepath.Clean(p))
	if err != nil {
		return "", fmt.Errorf("image file: %w", err)
	}
	for _, d := range c.AllowedFileDirs {
		dir, err := filepath.EvalSymlinks(filepath.Clean(d))
		if err != nil {
			continue // not there (yet): nothing is under it
		}
		if rel, err := filepath.Rel(dir, resolved); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && rel != "." {
			return resolved, nil
		}
	}
	return "", fmt.Errorf("%s (resolved: %s) is not under a directory allowed for file:// images (%s)", p, resolved, strings.Join(c.AllowedFileDirs, ", "))
}

// fetch makes the image with the given key be in the cache. It runs once
// at a time per key in this process (join) and holds the key's lock file,
// so that it also runs once at a time across processes.
func (c *ImageCache) fetch(ctx context.Context, key, rawURL, checksum string, get Getter, report Progress) (string, string, error) {
	if err := c.makeDirs(); err != nil {
		return "", "", err
	}
	unlock, err := lockFile(ctx, filepath.Join(c.Dir, "locks", key+".lock"))
	if err != nil {
		return "", "", fmt.Errorf("image %s: %w", rawURL, err)
	}
	defer unlock()

	// Another process may have fetched it while we waited for the lock.
	if sum := c.urlSum(rawURL); sum != "" && (checksum == "" || sum == checksum) {
		return c.imagePath(sum), sum, nil
	}

	part := filepath.Join(c.Dir, "partial", key+".part")
	var sum string
	for attempt := 0; ; attempt++ {
		var resumed bool
		sum, resumed, err = c.download(ctx, rawURL, get, part, checksum != "", report)
		if err != nil {
			return "", "", fmt.Errorf("image %s: %w", rawURL, err)
		}
		if checksum == "" || sum == checksum {
			break
		}
		removePartial(part)
		// The bytes kept from an earlier try may have been of an older
		// file at the same URL: try once more, from the start.
		if resumed && attempt == 0 {
			continue
		}
		return "", "", fmt.Errorf("image %s: checksum mismatch: expected %s, got %s; the download was deleted (check the image's checksum and URL)",
			rawURL, checksum, sum)
	}

	final := c.imagePath(sum)
	if err := c.keep(part, final, rawURL, sum); err != nil {
		return "", "", fmt.Errorf("image %s: store download: %w", rawURL, err)
	}
	return final, sum, nil
}

// keep moves the checked download part to its place in the cache, final,
// read-only, and records that rawURL gave it.
func (c *ImageCache) keep(part, final, rawURL, sum string) error {
	if exists(final) {
		// Fetched without a checksum, and the same bytes were already here.
		removePartial(part)
	} else {
		if err := os.Chmod(part, 0o444); err != nil {
			return err
		}
		if err := syncFile(part); err != nil {
			return err
		}
		if err := os.Rename(part, final); err != nil {
			return err
		}
		os.Remove(part + ".meta")
		if err := syncFile(filepath.Dir(final)); err != nil {
			return err
		}
	}
	return c.setURLSum(rawURL, sum)
}

// Remove deletes the cached image with checksum sum ("sha256:<hex>"). A
// missing image is not an error. Volumes cloned from the image need it:
// remove only images no volume on this host uses.
func (c *ImageCache) Remove(sum string) error {
	if es := v1alpha1.ValidateChecksum("checksum", sum); len(es) > 0 {
		return es
	}
	if err := os.Remove(c.imagePath(sum)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove image %s: %w", sum, err)
	}
	return nil
}

// GC deletes every cached image whose checksum ("sha256:<hex>") is not in
// keep, and returns the checksums it deleted. It also deletes interrupted
// downloads of images not in keep (those being downloaded are left alone)
// and forgets URLs whose image is gone. keep must hold every image a volume
// on this host is cloned from, and every image being fetched for one.
func (c *ImageCache) GC(keep map[string]bool) (removed []string, err error) {
	var errs []error
	images, err := os.ReadDir(filepath.Join(c.Dir, "sha256"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range images {
		sum := "sha256:" + e.Name()
		if keep[sum] || !isHex(e.Name()) {
			continue
		}
		if err := c.Remove(sum); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, sum)
	}

	parts, _ := filepath.Glob(filepath.Join(c.Dir, "partial", "*.part"))
	for _, part := range parts {
		key := strings.TrimSuffix(filepath.Base(part), ".part")
		// Keys of fetches with a checksum are "<hex>-<url hash>" (imageKey).
		if sumHex, _, ok := strings.Cut(key, "-"); ok && isHex(sumHex) && keep["sha256:"+sumHex] {
			continue
		}
		unlock, err := flock.TryLock(filepath.Join(c.Dir, "locks", key+".lock"))
		if err != nil {
			continue // being downloaded
		}
		removePartial(part)
		unlock()
	}

	urls, _ := filepath.Glob(filepath.Join(c.Dir, "urls", "*"))
	for _, f := range urls {
		if sum := readURLSum(f); sum == "" || !exists(c.imagePath(sum)) {
			os.Remove(f)
		}
	}
	return removed, errors.Join(errs...)
}

func (c *ImageCache) imagePath(sum string) string {
	return filepath.Join(c.Dir, "sha256", hexOf(sum))
}

func (c *ImageCache) makeDirs() error {
	for _, d := range []string{"sha256", "partial", "locks", "urls"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o755); err != nil {
			return fmt.Errorf("image cache: %w", err)
		}
	}
	return nil
}

// urlSum returns the checksum of what rawURL gave when it was fetched, if
// that image is still here.
func (c *ImageCache) urlSum(rawURL string) string {
	sum := readURLSum(filepath.Join(c.Dir, "urls", hashString(rawURL)))
	if sum == "" || !exists(c.imagePath(sum)) {
		return ""
	}
	return sum
}

// setURLSum records that rawURL gave the image sum. The file holds the
// checksum and, for people reading the cache, the URL.
func (c *ImageCache) setURLSum(rawURL, sum string) error {
	return atomicfile.Write(filepath.Join(c.Dir, "urls", hashString(rawURL)), []byte(sum+"\n"+rawURL+"\n"), 0o600)
}

func readURLSum(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sum, _, _ := strings.Cut(string(b), "\n")
	if len(v1alpha1.ValidateChecksum("", sum)) > 0 {
		return ""
	}
	return sum
}

// hashed is a file:// image's checksum and the identity of the file it was
// computed from: a file with the same identity has not been written since.
type hashed struct {
	id  fileID
	sum string
}

type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime syscall.Timespec
}

func fileIDOf(fi fs.FileInfo) fileID {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{size: fi.Size()}
	}
	return fileID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}
}

// ensureLocal checks (or just hashes) a file:// image in place.
func (c *ImageCache) ensureLocal(ctx context.Context, path, checksum string, progress Progress) (string, string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", "", fmt.Errorf("image file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", "", fmt.Errorf("image file %s is not a regular file", path)
	}
	id := fileIDOf(fi)
	c.mu.Lock()
	h, ok := c.hashed[path]
	c.mu.Unlock()
	if !ok || h.id != id {
		sum, err := hashFile(ctx, path, progress)
		if err != nil {
			return "", "", fmt.Errorf("image file %s: %w", path, err)
		}
		// Remember the checksum only if the file did not change while it
		// was read.
		if fi2, err := os.Stat(path); err == nil && fileIDOf(fi2) == id {
			c.mu.Lock()
			if c.hashed == nil {
				c.hashed = make(map[string]hashed)
			}
			c.hashed[path] = hashed{id: id, sum: sum}
			c.mu.Unlock()
		}
		h.sum = sum
	}
	if checksum != "" && h.sum != checksum {
		return "", "", fmt.Errorf("image file %s: checksum mismatch: expected %s, got %s (check the image's checksum, or whether the file was changed)",
			path, checksum, h.sum)
	}
	return path, h.sum, nil
}

func hashFile(ctx context.Context, path string, progress Progress) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	p := newProgressWriter(fi.Size(), 0, progress)
	if _, err := copyContext(ctx, io.MultiWriter(h, p), f); err != nil {
		return "", err
	}
	p.finish()
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func hexOf(sum string) string { return strings.TrimPrefix(sum, "sha256:") }

func hashString(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func isHex(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
