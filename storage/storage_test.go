package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// requireQemuImg skips a test that needs qemu-img where it is not
// installed; everywhere Hearth runs, it is.
func requireQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not found in PATH; install qemu-utils to run the storage tests")
	}
}

// testImage is a small qcow2 image whose disk holds a recognisable pattern.
type testImage struct {
	path        string
	data        []byte // the qcow2 file's bytes
	sum         string
	virtualSize int64
}

func makeImage(t *testing.T, virtualSize int64, fill byte) testImage {
	t.Helper()
	requireQemuImg(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	disk := make([]byte, virtualSize)
	for i := range 64 << 10 { // a pattern at the start, zeroes after
		disk[i] = fill + byte(i%7)
	}
	if err := os.WriteFile(raw, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "image.qcow2")
	run(t, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, path)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return testImage{path: path, data: data, sum: checksumOf(data), virtualSize: virtualSize}
}

func checksumOf(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// imageServer serves one file, counting requests. It can refuse ranges,
// break the first response after some bytes, and hold every response
// until released.
type imageServer struct {
	data       []byte
	ranges     bool
	abortAfter int           // > 0: the first response breaks after this many bytes
	gate       chan struct{} // if set, responses wait for it to be closed

	mu       sync.Mutex
	requests []http.Header
}

func (s *imageServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := len(s.requests)
	s.requests = append(s.requests, r.Header.Clone())
	s.mu.Unlock()
	if r.URL.Path == "/missing" {
		http.NotFound(w, r)
		return
	}
	if s.gate != nil {
		<-s.gate
	}
	if s.ranges {
		w.Header().Set("ETag", `"v1"`)
	}
	if n == 0 && s.abortAfter > 0 {
		if s.ranges {
			w.Header().Set("Accept-Ranges", "bytes")
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(s.data)))
		w.Write(s.data[:s.abortAfter])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // cut the connection mid-body
	}
	if s.ranges {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(s.data))
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(s.data)))
	w.Write(s.data)
}

func (s *imageServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

func (s *imageServer) request(i int) http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[i]
}

func serve(t *testing.T, s *imageServer) string {
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv.URL
}

// progressLog records Progress calls.
type progressLog struct {
	mu    sync.Mutex
	calls [][2]int64
}

func (p *progressLog) record(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, [2]int64{done, total})
}

func (p *progressLog) first() [2]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[0]
}

func (p *progressLog) last() [2]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[len(p.calls)-1]
}

// dirFiles lists the files under dir, relative to it.
func dirFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			files = append(files, rel)
		}
		return nil
	})
	return files
}

func TestEnsureDownloadsVerifiesAndCaches(t *testing.T) {
	img := makeImage(t, 8<<20, 1)
	srv := &imageServer{data: img.data, ranges: true}
	base := serve(t, srv)
	c := &ImageCache{Dir: t.TempDir()}
	ctx := t.Context()

	var prog progressLog
	path, sum, err := c.Ensure(ctx, base+"/a.qcow2", img.sum, prog.record)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(c.Dir, "sha256", strings.TrimPrefix(img.sum, "sha256:")); path != want {
		t.Errorf("path = %s, want %s", path, want)
	}
	if sum != img.sum {
		t.Errorf("sum = %s, want %s", sum, img.sum)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, img.data) {
		t.Errorf("cached file differs from the image (%d bytes, want %d)", len(got), len(img.data))
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("cached image mode = %v (%v), want read-only", fi.Mode(), err)
	}
	n := int64(len(img.data))
	if got, want := prog.first(), [2]int64{0, n}; got != want {
		t.Errorf("first progress = %v, want %v", got, want)
	}
	if got, want := prog.last(), [2]int64{n, n}; got != want {
		t.Errorf("last progress = %v, want %v", got, want)
	}
	info, err := Inspect(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != FormatQCOW2 || info.VirtualSize != img.virtualSize {
		t.Errorf("Inspect = %+v, want qcow2 of %d bytes", info, img.virtualSize)
	}

	// Cached: the same URL is not fetched again. Another URL with the
	// same checksum is, once: knowing a checksum must not be enough to get
	// the bytes of another tenant's image out of the host's cache.
	for i, u := range []string{base + "/a.qcow2", base + "/mirror/a.qcow2", base + "/mirror/a.qcow2"} {
		p, s, err := c.Ensure(ctx, u, img.sum, nil)
		if err != nil || p != path || s != img.sum {
			t.Errorf("Ensure(%s) again = %s, %s, %v; want %s, %s", u, p, s, err, path, img.sum)
		}
		if want := min(i+1, 2); srv.count() != want {
			t.Errorf("after Ensure(%s): server saw %d requests, want %d", u, srv.count(), want)
		}
	}
	if got := dirFiles(t, filepath.Join(c.Dir, "partial")); len(got) != 0 {
		t.Errorf("partial files left: %v", got)
	}
}

func TestEnsureWithoutChecksum(t *testing.T) {
	img := makeImage(t, 1<<20, 2)
	srv := &imageServer{data: img.data}
	u := serve(t, srv) + "/img"
	c := &ImageCache{Dir: t.TempDir()}

	path, sum, err := c.Ensure(t.Context(), u, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum != img.sum {
		t.Errorf("sum = %s, want the image's %s", sum, img.sum)
	}
	// The first download is trusted; later calls reuse it without asking.
	p2, s2, err := c.Ensure(t.Context(), u, "", nil)
	if err != nil || p2 != path || s2 != sum {
		t.Errorf("second Ensure = %s, %s, %v; want %s, %s", p2, s2, err, path, sum)
	}
	// And so do calls that now pass the checksum.
	if _, _, err := c.Ensure(t.Context(), u, sum, nil); err != nil {
		t.Fatal(err)
	}
	if got := srv.count(); got != 1 {
		t.Errorf("server saw %d requests, want 1", got)
	}
}

func TestEnsureRejectsWrongChecksum(t *testing.T) {
	img := makeImage(t, 1<<20, 3)
	for _, ranges := range []bool{true, false} {
		t.Run(fmt.Sprintf("ranges=%v", ranges), func(t *testing.T) {
			srv := &imageServer{data: img.data, ranges: ranges}
			u := serve(t, srv) + "/img"
			c := &ImageCache{Dir: t.TempDir()}
			wrong := "sha256:" + strings.Repeat("0", 64)

			_, _, err := c.Ensure(t.Context(), u, wrong, nil)
			if err == nil {
				t.Fatal("Ensure with a wrong checksum succeeded")
			}
			for _, s := range []string{"mismatch", wrong, img.sum} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			for _, d := range []string{"sha256", "partial"} {
				if got := dirFiles(t, filepath.Join(c.Dir, d)); len(got) != 0 {
					t.Errorf("files left in %s: %v", d, got)
				}
			}
			// Nothing was kept, so a second try fetches again (and fails again).
			if _, _, err := c.Ensure(t.Context(), u, wrong, nil); err == nil {
				t.Error("second Ensure with a wrong checksum succeeded")
			}
			if got := srv.count(); got != 2 {
				t.Errorf("server saw %d requests, want 2", got)
			}
		})
	}
}

func TestEnsureRejectsBadInput(t *testing.T) {
	c := &ImageCache{Dir: t.TempDir()}
	srv := &imageServer{data: []byte("x")}
	base := serve(t, srv)
	for _, tc := range []struct{ url, checksum, want string }{
		{base + "/missing", "", "404"},
		{base + "/img", "md5:abc", "not a checksum"},
		{"ftp://example.com/img", "", `cannot fetch "ftp" URLs`},
		{"file://host/img", "", "file:///absolute/path"},
		{"file:///nonexistent/img", "", "not allowed here"},
	} {
		_, _, err := c.Ensure(t.Context(), tc.url, tc.checksum, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Ensure(%q, %q) = %v, want an error containing %q", tc.url, tc.checksum, err, tc.want)
		}
	}
	if got := dirFiles(t, filepath.Join(c.Dir, "partial")); len(got) != 0 {
		t.Errorf("partial files left: %v", got)
	}
}

// waitFor polls cond until it holds or the test has waited too long.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *ImageCache) waiters(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.flights[key]; f != nil {
		return f.waiters
	}
	return 0
}

func TestEnsureConcurrentCallsShareOneDownload(t *testing.T) {
	img := makeImage(t, 1<<20, 4)
	srv := &imageServer{data: img.data, ranges: true, gate: make(chan struct{})}
	u := serve(t, srv) + "/img"
	c := &ImageCache{Dir: t.TempDir()}

	const n = 8
	var wg sync.WaitGroup
	paths := make([]string, n)
	errs := make([]error, n)
	progs := make([]progressLog, n)
	for i := range n {
		wg.Go(func() {
			paths[i], _, errs[i] = c.Ensure(t.Context(), u, img.sum, progs[i].record)
		})
	}
	key := imageKey(u, img.sum)
	waitFor(t, "every caller to join the download", func() bool { return c.waiters(key) == n })
	close(srv.gate)
	wg.Wait()

	for i := range n {
		if errs[i] != nil || paths[i] != paths[0] {
			t.Errorf("caller %d: %s, %v; want %s", i, paths[i], errs[i], paths[0])
		}
		if got, want := progs[i].last(), [2]int64{int64(len(img.data)), int64(len(img.data))}; got != want {
			t.Errorf("caller %d: last progress = %v, want %v", i, got, want)
		}
	}
	if got := srv.count(); got != 1 {
		t.Errorf("server saw %d requests, want 1", got)
	}
}

func TestEnsureLockFileStopsSecondProcess(t *testing.T) {
	// Two caches on one directory stand for two processes: they share no
	// memory, only the lock file.
	img := makeImage(t, 1<<20, 5)
	srv := &imageServer{data: img.data, gate: make(chan struct{})}
	u := serve(t, srv) + "/img"
	dir := t.TempDir()
	a, b := &ImageCache{Dir: dir}, &ImageCache{Dir: dir}

	errc := make(chan error, 2)
	go func() { _, _, err := a.Ensure(t.Context(), u, img.sum, nil); errc <- err }()
	waitFor(t, "the first download to start", func() bool { return srv.count() == 1 })
	go func() { _, _, err := b.Ensure(t.Context(), u, img.sum, nil); errc <- err }()
	key := imageKey(u, img.sum)
	waitFor(t, "the second process to wait", func() bool { return b.waiters(key) == 1 })
	time.Sleep(2 * lockPoll) // let it find the lock taken
	close(srv.gate)
	for range 2 {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
	if got := srv.count(); got != 1 {
		t.Errorf("server saw %d requests, want 1", got)
	}
}

func TestEnsureCallerGivingUpDoesNotStopOthers(t *testing.T) {
	img := makeImage(t, 1<<20, 6)
	srv := &imageServer{data: img.data, gate: make(chan struct{})}
	u := serve(t, srv) + "/img"
	c := &ImageCache{Dir: t.TempDir()}

	impatient, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 2)
	go func() { _, _, err := c.Ensure(impatient, u, img.sum, nil); errc <- err }()
	go func() { _, _, err := c.Ensure(t.Context(), u, img.sum, nil); errc <- err }()
	key := imageKey(u, img.sum)
	waitFor(t, "both callers to join", func() bool { return c.waiters(key) == 2 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("the impatient caller got %v, want context.Canceled", err)
	}
	close(srv.gate)
	if err := <-errc; err != nil {
		t.Errorf("the patient caller got %v", err)
	}
}

func TestEnsureResumesInterruptedDownload(t *testing.T) {
	img := makeImage(t, 4<<20, 7)
	half := len(img.data) / 2
	for _, tc := range []struct {
		ranges      bool
		wantRange   string // Range header of the second request
		wantPartial int64  // bytes kept after the break
	}{
		{ranges: true, wantRange: fmt.Sprintf("bytes=%d-", half), wantPartial: int64(half)},
		{ranges: false, wantRange: "", wantPartial: -1},
	} {
		t.Run(fmt.Sprintf("ranges=%v", tc.ranges), func(t *testing.T) {
			srv := &imageServer{data: img.data, ranges: tc.ranges, abortAfter: half}
			u := serve(t, srv) + "/img"
			c := &ImageCache{Dir: t.TempDir()}
			part := filepath.Join(c.Dir, "partial", imageKey(u, img.sum)+".part")

			if _, _, err := c.Ensure(t.Context(), u, img.sum, nil); err == nil {
				t.Fatal("Ensure succeeded through a broken download")
			}
			size := int64(-1)
			if fi, err := os.Stat(part); err == nil {
				size = fi.Size()
			}
			if size != tc.wantPartial {
				t.Errorf("partial file size = %d, want %d (-1: none)", size, tc.wantPartial)
			}

			var prog progressLog
			path, _, err := c.Ensure(t.Context(), u, img.sum, prog.record)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, img.data) {
				t.Error("resumed image differs from the original")
			}
			if got := srv.request(1).Get("Range"); got != tc.wantRange {
				t.Errorf("second request Range = %q, want %q", got, tc.wantRange)
			}
			if got := srv.request(1).Get("Accept-Encoding"); got != "identity" {
				t.Errorf("Accept-Encoding = %q, want identity", got)
			}
			if tc.ranges {
				if got := prog.first()[0]; got != int64(half) {
					t.Errorf("resumed progress starts at %d, want %d", got, half)
				}
			}
			if got := dirFiles(t, filepath.Join(c.Dir, "partial")); len(got) != 0 {
				t.Errorf("partial files left: %v", got)
			}
		})
	}
}

func TestEnsureRestartsWhenResumedBytesAreStale(t *testing.T) {
	// A partial file from an older image at the same place: the resumed
	// download fails the checksum, and Ensure fetches it whole once more.
	img := makeImage(t, 1<<20, 8)
	srv := &imageServer{data: img.data, ranges: true}
	u := serve(t, srv) + "/img"
	c := &ImageCache{Dir: t.TempDir()}
	if err := c.makeDirs(); err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(c.Dir, "partial", imageKey(u, img.sum)+".part")
	if err := os.WriteFile(part, bytes.Repeat([]byte{0xee}, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	path, _, err := c.Ensure(t.Context(), u, img.sum, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, img.data) {
		t.Error("image differs from the original")
	}
	if got := srv.count(); got != 2 {
		t.Errorf("server saw %d requests, want 2 (a resume, then a full fetch)", got)
	}
}

func TestEnsureFileURL(t *testing.T) {
	img := makeImage(t, 1<<20, 9)
	c := &ImageCache{Dir: t.TempDir(), AllowedFileDirs: []string{filepath.Dir(img.path)}}
	u := "file://" + img.path

	var prog progressLog
	path, sum, err := c.Ensure(t.Context(), u, img.sum, prog.record)
	if err != nil {
		t.Fatal(err)
	}
	if path != img.path || sum != img.sum {
		t.Errorf("Ensure = %s, %s; want the file in place, %s, %s", path, sum, img.path, img.sum)
	}
	if got, want := prog.last(), [2]int64{int64(len(img.data)), int64(len(img.data))}; got != want {
		t.Errorf("last progress = %v, want %v", got, want)
	}
	if got := dirFiles(t, c.Dir); len(got) != 0 {
		t.Errorf("a file image was copied into the cache: %v", got)
	}
	if _, sum, err := c.Ensure(t.Context(), u, "", nil); err != nil || sum != img.sum {
		t.Errorf("Ensure without checksum = %s, %v; want %s", sum, err, img.sum)
	}
	wrong := "sha256:" + strings.Repeat("1", 64)
	if _, _, err := c.Ensure(t.Context(), u, wrong, nil); err == nil || !strings.Contains(err.Error(), "mismatch") {
		t.Errorf("Ensure with a wrong checksum = %v, want a mismatch", err)
	}

	// A changed file is hashed again, not remembered.
	if err := os.WriteFile(img.path, []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Ensure(t.Context(), u, img.sum, nil); err == nil {
		t.Error("Ensure accepted a file that changed since it was checked")
	}
}

func TestRemoveAndGC(t *testing.T) {
	a, b := makeImage(t, 1<<20, 10), makeImage(t, 1<<20, 11)
	base := serve(t, &imageServer{data: a.data})
	baseB := serve(t, &imageServer{data: b.data})
	c := &ImageCache{Dir: t.TempDir()}
	pa, _, err := c.Ensure(t.Context(), base+"/a", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	pb, _, err := c.Ensure(t.Context(), baseB+"/b", b.sum, nil)
	if err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(c.Dir, "partial", "url-"+strings.Repeat("2", 64)+".part")
	if err := os.WriteFile(stale, []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}

	removed, err := c.GC(map[string]bool{b.sum: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{a.sum}) {
		t.Errorf("GC removed %v, want [%s]", removed, a.sum)
	}
	if exists(pa) || !exists(pb) || exists(stale) {
		t.Errorf("after GC: a exists %v (want false), b exists %v (want true), stale partial exists %v (want false)",
			exists(pa), exists(pb), exists(stale))
	}
	if got := dirFiles(t, filepath.Join(c.Dir, "urls")); len(got) != 1 {
		t.Errorf("URL records after GC = %v, want only b's", got)
	}

	if err := c.Remove(b.sum); err != nil || exists(pb) {
		t.Errorf("Remove = %v, image exists %v", err, exists(pb))
	}
	if err := c.Remove(b.sum); err != nil {
		t.Errorf("Remove of a removed image = %v, want nil", err)
	}
	if _, err := (&ImageCache{Dir: filepath.Join(t.TempDir(), "none")}).GC(nil); err != nil {
		// GC of a cache never used has nothing to do.
		t.Errorf("GC of an empty cache: %v", err)
	}
}

func TestCreateVolumeBlank(t *testing.T) {
	requireQemuImg(t)
	ctx := t.Context()
	for _, tc := range []struct {
		format, wantFormat string
		size, wantSize     int64
	}{
		{"", FormatQCOW2, 10 << 20, 10 << 20},
		{FormatQCOW2, FormatQCOW2, 10<<20 + 1, 10<<20 + 512},
		{FormatRaw, FormatRaw, 3 << 20, 3 << 20},
	} {
		t.Run(fmt.Sprintf("%q", tc.format), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "vol")
			if err := CreateVolume(ctx, path, tc.format, tc.size, ""); err != nil {
				t.Fatal(err)
			}
			info, err := VolumeInfo(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			if info.Format != tc.wantFormat || info.VirtualSize != tc.wantSize || info.BackingFile != "" {
				t.Errorf("VolumeInfo = %+v, want %s of %d bytes, no backing file", info, tc.wantFormat, tc.wantSize)
			}
			if err := CreateVolume(ctx, path, tc.format, tc.size, ""); err != nil {
				t.Errorf("CreateVolume again with the same arguments: %v", err)
			}
			if err := CreateVolume(ctx, path, tc.format, tc.size*2, ""); err == nil || !strings.Contains(err.Error(), "already exists") {
				t.Errorf("CreateVolume again with another size = %v, want an error", err)
			}
			if got := dirFiles(t, dir); !slices.Equal(got, []string{"vol"}) {
				t.Errorf("files = %v, want only the volume", got)
			}
		})
	}
}

func TestCreateVolumeRejectsBadArguments(t *testing.T) {
	requireQemuImg(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		format string
		size   int64
		want   string
	}{
		{"vmdk", 1 << 20, "not qcow2 or raw"},
		{FormatQCOW2, 0, "needs a size"},
		{FormatQCOW2, -1, "negative"},
	} {
		err := CreateVolume(t.Context(), filepath.Join(dir, "vol"), tc.format, tc.size, "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CreateVolume(%q, %d) = %v, want an error containing %q", tc.format, tc.size, err, tc.want)
		}
	}
	if got := dirFiles(t, dir); len(got) != 0 {
		t.Errorf("files left: %v", got)
	}
}

// cachedImage puts a fresh test image in a cache over HTTP, the way the
// agent gets one, and returns its cached path.
func cachedImage(t *testing.T, virtualSize int64) (string, testImage) {
	t.Helper()
	img := makeImage(t, virtualSize, 12)
	u := serve(t, &imageServer{data: img.data}) + "/img"
	path, _, err := (&ImageCache{Dir: t.TempDir()}).Ensure(t.Context(), u, img.sum, nil)
	if err != nil {
		t.Fatal(err)
	}
	return path, img
}

// sameContents says whether two images hold the same disk.
func sameContents(t *testing.T, a, fa, b, fb string) bool {
	t.Helper()
	return exec.Command("qemu-img", "compare", "-q", "-f", fa, "-F", fb, a, b).Run() == nil
}

func TestCreateVolumeFromImage(t *testing.T) {
	ctx := t.Context()
	image, img := cachedImage(t, 8<<20)
	dir := t.TempDir()

	t.Run("thin clone of the image's size", func(t *testing.T) {
		path := filepath.Join(dir, "clone")
		if err := CreateVolume(ctx, path, FormatQCOW2, 0, image); err != nil {
			t.Fatal(err)
		}
		info, err := VolumeInfo(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		want := Info{Format: FormatQCOW2, VirtualSize: img.virtualSize, BackingFile: image, BackingFormat: FormatQCOW2}
		info.ActualSize = 0
		if info != want {
			t.Errorf("VolumeInfo = %+v, want %+v", info, want)
		}
		if !sameContents(t, path, FormatQCOW2, image, FormatQCOW2) {
			t.Error("the clone does not read the image's contents")
		}
		if err := CreateVolume(ctx, path, FormatQCOW2, 0, image); err != nil {
			t.Errorf("CreateVolume again: %v", err)
		}
		if err := CreateVolume(ctx, path, FormatQCOW2, 0, ""); err == nil {
			t.Error("CreateVolume of a blank volume over a clone succeeded")
		}
		// A clone's clone would chain to files the caller did not name.
		err = CreateVolume(ctx, filepath.Join(dir, "clone2"), FormatQCOW2, 0, path)
		if err == nil || !strings.Contains(err.Error(), "refers to another file") {
			t.Errorf("clone of a clone = %v, want it refused", err)
		}
	})

	t.Run("bigger thin clone", func(t *testing.T) {
		path := filepath.Join(dir, "big")
		if err := CreateVolume(ctx, path, FormatQCOW2, 64<<20, image); err != nil {
			t.Fatal(err)
		}
		if info, err := VolumeInfo(ctx, path); err != nil || info.VirtualSize != 64<<20 || info.BackingFile != image {
			t.Errorf("VolumeInfo = %+v, %v; want 64Mi backed by %s", info, err, image)
		}
	})

	t.Run("raw copy", func(t *testing.T) {
		path := filepath.Join(dir, "copy.raw")
		if err := CreateVolume(ctx, path, FormatRaw, 16<<20, image); err != nil {
			t.Fatal(err)
		}
		info, err := VolumeInfo(ctx, path)
		if err != nil || info.Format != FormatRaw || info.VirtualSize != 16<<20 || info.BackingFile != "" {
			t.Errorf("VolumeInfo = %+v, %v; want a raw 16Mi standalone volume", info, err)
		}
		if !sameContents(t, path, FormatRaw, image, FormatQCOW2) {
			t.Error("the copy does not hold the image's contents")
		}
	})

	t.Run("too small", func(t *testing.T) {
		path := filepath.Join(dir, "small")
		err := CreateVolume(ctx, path, FormatQCOW2, 4<<20, image)
		if err == nil {
			t.Fatal("CreateVolume smaller than its image succeeded")
		}
		for _, s := range []string{"4Mi", "8Mi", image} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not mention %q", err, s)
			}
		}
		if exists(path) {
			t.Error("a failed CreateVolume left the volume behind")
		}
	})

	if got := dirFiles(t, dir); !slices.Equal(got, []string{"big", "clone", "copy.raw"}) {
		t.Errorf("files = %v, want only the volumes", got)
	}
}

func TestCreateVolumeFailureLeavesNothing(t *testing.T) {
	requireQemuImg(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "vol")

	// qemu-img itself fails, after the temporary file was made.
	if err := CreateVolume(t.Context(), path, FormatQCOW2, 1<<62, ""); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("CreateVolume of 4 EiB = %v, want qemu-img's complaint", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := CreateVolume(ctx, path, FormatQCOW2, 1<<20, ""); err == nil {
		t.Error("CreateVolume with a cancelled context succeeded")
	}
	if err := CreateVolume(t.Context(), path, FormatQCOW2, 0, filepath.Join(dir, "no-such-image")); err == nil {
		t.Error("CreateVolume from a missing image succeeded")
	}
	if err := Snapshot(ctx, path, filepath.Join(dir, "snap")); err == nil {
		t.Error("Snapshot of a missing volume succeeded")
	}
	if got := dirFiles(t, dir); len(got) != 0 {
		t.Errorf("files left: %v", got)
	}
	if err := CreateVolume(t.Context(), filepath.Join(dir, "missing-dir", "vol"), FormatQCOW2, 1<<20, ""); err == nil {
		t.Error("CreateVolume in a missing directory succeeded")
	}
}

func TestResizeVolume(t *testing.T) {
	requireQemuImg(t)
	ctx := t.Context()
	for _, format := range []string{FormatQCOW2, FormatRaw} {
		t.Run(format, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vol")
			if err := CreateVolume(ctx, path, format, 8<<20, ""); err != nil {
				t.Fatal(err)
			}
			if err := ResizeVolume(ctx, path, 32<<20); err != nil {
				t.Fatal(err)
			}
			if info, err := VolumeInfo(ctx, path); err != nil || info.VirtualSize != 32<<20 {
				t.Errorf("after growing: %+v, %v; want 32Mi", info, err)
			}
			if err := ResizeVolume(ctx, path, 32<<20); err != nil {
				t.Errorf("resize to the same size: %v", err)
			}
			err := ResizeVolume(ctx, path, 16<<20)
			if err == nil || !strings.Contains(err.Error(), "cannot shrink") || !strings.Contains(err.Error(), "32Mi") {
				t.Errorf("shrinking = %v, want it refused naming the sizes", err)
			}
			if info, _ := VolumeInfo(ctx, path); info.VirtualSize != 32<<20 {
				t.Errorf("after refused shrink: %d bytes, want 32Mi", info.VirtualSize)
			}
		})
	}
	if err := ResizeVolume(ctx, filepath.Join(t.TempDir(), "none"), 1<<20); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("resize of a missing volume = %v, want fs.ErrNotExist", err)
	}
}

func TestSnapshot(t *testing.T) {
	ctx := t.Context()
	image, _ := cachedImage(t, 8<<20)
	dir := t.TempDir()
	vol := filepath.Join(dir, "vol")
	snap := filepath.Join(dir, "snap")
	if err := CreateVolume(ctx, vol, FormatQCOW2, 16<<20, image); err != nil {
		t.Fatal(err)
	}
	if err := Snapshot(ctx, vol, snap); err != nil {
		t.Fatal(err)
	}
	info, err := VolumeInfo(ctx, snap)
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != FormatQCOW2 || info.VirtualSize != 16<<20 || info.BackingFile != "" {
		t.Errorf("snapshot = %+v, want a standalone qcow2 of 16Mi", info)
	}
	if !sameContents(t, vol, FormatQCOW2, snap, FormatQCOW2) {
		t.Error("snapshot differs from the volume")
	}
	if err := Snapshot(ctx, vol, snap); err != nil {
		t.Errorf("Snapshot again: %v", err)
	}

	// A snapshot is a restore source: a new volume can start from it.
	restored := filepath.Join(dir, "restored")
	if err := CreateVolume(ctx, restored, FormatQCOW2, 0, snap); err != nil {
		t.Fatal(err)
	}
	if !sameContents(t, restored, FormatQCOW2, vol, FormatQCOW2) {
		t.Error("volume restored from the snapshot differs from the original")
	}
	if got := dirFiles(t, dir); !slices.Equal(got, []string{"restored", "snap", "vol"}) {
		t.Errorf("files = %v", got)
	}
}

func TestRawVolumeIsNotProbed(t *testing.T) {
	// A guest writes a qcow2 header naming a host file as its backing file
	// onto its raw disk. Snapshotting the disk must copy those bytes, not
	// the host file.
	requireQemuImg(t)
	ctx := t.Context()
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, bytes.Repeat([]byte("secret!!"), 1<<17), 0o600); err != nil {
		t.Fatal(err)
	}
	evil := filepath.Join(dir, "evil.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", evil, "1M")
	header, err := os.ReadFile(evil)
	if err != nil {
		t.Fatal(err)
	}

	vol := filepath.Join(dir, "vol")
	if err := CreateVolume(ctx, vol, FormatRaw, 4<<20, ""); err != nil {
		t.Fatal(err)
	}
	if recordedFormat(vol) == "" {
		t.Skip("the filesystem under the test directory keeps no user extended attributes")
	}
	f, err := os.OpenFile(vol, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt(header, 0)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if probed, err := Inspect(ctx, vol); err != nil || probed.BackingFile != secret {
		t.Fatalf("probing the volume = %+v, %v; the test expects it to see the planted header", probed, err)
	}

	info, err := VolumeInfo(ctx, vol)
	if err != nil || info.Format != FormatRaw || info.BackingFile != "" || info.VirtualSize != 4<<20 {
		t.Errorf("VolumeInfo = %+v, %v; want raw 4Mi with no backing file", info, err)
	}
	snap := filepath.Join(dir, "snap")
	if err := Snapshot(ctx, vol, snap); err != nil {
		t.Fatal(err)
	}
	if !sameContents(t, vol, FormatRaw, snap, FormatQCOW2) {
		t.Error("the snapshot does not hold the raw disk's bytes")
	}
	if err := ResizeVolume(ctx, vol, 8<<20); err != nil {
		t.Fatal(err)
	}
	if info, err := VolumeInfo(ctx, vol); err != nil || info.VirtualSize != 8<<20 {
		t.Errorf("after resize: %+v, %v; want raw 8Mi", info, err)
	}
}

func TestDeleteVolume(t *testing.T) {
	requireQemuImg(t)
	path := filepath.Join(t.TempDir(), "vol")
	if err := CreateVolume(t.Context(), path, FormatQCOW2, 1<<20, ""); err != nil {
		t.Fatal(err)
	}
	if err := DeleteVolume(path); err != nil {
		t.Fatal(err)
	}
	if exists(path) {
		t.Error("volume still exists")
	}
	if err := DeleteVolume(path); err != nil {
		t.Errorf("deleting a deleted volume: %v", err)
	}
	if _, err := VolumeInfo(t.Context(), path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("VolumeInfo of a deleted volume = %v, want fs.ErrNotExist", err)
	}
}

func TestEnsureProgressIsThrottled(t *testing.T) {
	data := bytes.Repeat([]byte("hearth"), 100_000)
	sum := checksumOf(data)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Unknown length, in ten pieces over a second.
		for chunk := range slices.Chunk(data, len(data)/10) {
			w.Write(chunk)
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	}))
	t.Cleanup(srv.Close)

	var mu sync.Mutex
	var at []time.Time
	var calls [][2]int64
	c := &ImageCache{Dir: t.TempDir()}
	if _, _, err := c.Ensure(t.Context(), srv.URL, sum, func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		at = append(at, time.Now())
		calls = append(calls, [2]int64{done, total})
	}); err != nil {
		t.Fatal(err)
	}
	n := int64(len(data))
	if calls[0] != [2]int64{0, -1} || calls[len(calls)-1] != [2]int64{n, n} {
		t.Errorf("progress = %v; want it to start at 0 of unknown (-1) and end at %d of %d", calls, n, n)
	}
	if len(calls) < 4 {
		t.Errorf("progress = %v; want reports while the download ran", calls)
	}
	// Every report but the last (the end) waits out the interval.
	for i := 1; i < len(at)-1; i++ {
		if d := at[i].Sub(at[i-1]); d < ProgressInterval {
			t.Errorf("progress reports %d and %d came %v apart, want at least %v", i-1, i, d, ProgressInterval)
		}
	}
}
