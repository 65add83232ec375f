package storage

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFileURLOnlyUnderAllowedDirs: a file:// image is read only under a
// directory the cache allows, judged on its cleaned path with symbolic
// links resolved, so ".." and links cannot lead out; with no directory
// allowed, file:// is refused outright.
func TestFileURLOnlyUnderAllowedDirs(t *testing.T) {
	root := t.TempDir()
	allowed := filepath.Join(root, "images")
	secret := filepath.Join(root, "secret")
	for _, d := range []string{allowed, secret, filepath.Join(allowed, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	kernel := []byte("a kernel the administrator offers")
	for path, data := range map[string][]byte{
		filepath.Join(allowed, "vmlinuz"):         kernel,
		filepath.Join(allowed, "sub", "initrd"):   []byte("an initrd"),
		filepath.Join(secret, "credentials.json"): []byte(`{"token":"hearth-host-secret"}`),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Links out of the allowed directory, to a file and to a directory.
	if err := os.Symlink(filepath.Join(secret, "credentials.json"), filepath.Join(allowed, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(allowed, "dirlink")); err != nil {
		t.Fatal(err)
	}
	// A link to the allowed directory may name it in the allow list.
	viaLink := filepath.Join(root, "images-link")
	if err := os.Symlink(allowed, viaLink); err != nil {
		t.Fatal(err)
	}

	c := &ImageCache{Dir: t.TempDir(), AllowedFileDirs: []string{viaLink}}
	for _, tc := range []struct {
		path, want string // want: the path returned, or part of the error
		ok         bool
	}{
		{path: filepath.Join(allowed, "vmlinuz"), want: filepath.Join(allowed, "vmlinuz"), ok: true},
		{path: filepath.Join(viaLink, "sub", "initrd"), want: filepath.Join(allowed, "sub", "initrd"), ok: true},
		{path: filepath.Join(allowed, "sub", "..", "vmlinuz"), want: filepath.Join(allowed, "vmlinuz"), ok: true},
		{path: allowed + "/../secret/credentials.json", want: "not under a directory allowed"},
		{path: allowed + "/sub/../../secret/credentials.json", want: "not under a directory allowed"},
		{path: filepath.Join(allowed, "link"), want: "not under a directory allowed"},
		{path: filepath.Join(allowed, "dirlink", "credentials.json"), want: "not under a directory allowed"},
		{path: "/etc/shadow", want: "not under a directory allowed"},
		{path: allowed, want: "not under a directory allowed"},
	} {
		// url.Parse would clean nothing: the raw path goes in as written.
		path, _, err := c.Ensure(t.Context(), "file://"+tc.path, "", nil)
		switch {
		case tc.ok && (err != nil || path != tc.want):
			t.Errorf("Ensure(file://%s) = %s, %v; want %s", tc.path, path, err, tc.want)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Ensure(file://%s) = %s, %v; want an error containing %q", tc.path, path, err, tc.want)
		}
	}

	none := &ImageCache{Dir: t.TempDir()}
	if _, _, err := none.Ensure(t.Context(), "file://"+filepath.Join(allowed, "vmlinuz"), "", nil); err == nil || !strings.Contains(err.Error(), "--allow-file-dir") {
		t.Errorf("file:// with no allowed directory: %v, want a refusal naming --allow-file-dir", err)
	}
}

// listenOn starts h on a loopback address of its own (Linux answers on
// all of 127.0.0.0/8).
func listenOn(t *testing.T, addr string, h http.Handler) *httptest.Server {
	t.Helper()
	l, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// TestFetchClientRefusesLocalAddresses: downloads through NewFetchClient
// never connect to the machine itself, whether the URL names a loopback
// address, a name that resolves to one, or a server that redirects there;
// nor to the machine's own addresses. The local service is never asked.
func TestFetchClientRefusesLocalAddresses(t *testing.T) {
	var mu sync.Mutex
	var local []string // requests the "etcd" on 127.0.0.1 saw
	etcd := listenOn(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		local = append(local, r.URL.Path)
		w.Write([]byte("secrets of the control plane"))
	}))
	_, etcdPort, _ := net.SplitHostPort(etcd.Listener.Addr().String())

	// A server the policy lets through (it stands for a web server of the
	// lab) that redirects to the local one.
	redirector := listenOn(t, "127.0.0.2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, etcd.URL+"/v3/kv/range", http.StatusFound)
	}))
	lab := netip.MustParsePrefix("127.0.0.2/32")

	for _, tc := range []struct {
		name, url string
		policy    FetchPolicy
		want      string
	}{
		{"loopback address", etcd.URL + "/img", FetchPolicy{}, "127.0.0.1:" + etcdPort + ": refusing to connect"},
		{"a name for loopback", "http://localhost:" + etcdPort + "/img", FetchPolicy{}, "loopback"},
		{"redirect to loopback", redirector.URL + "/img", FetchPolicy{Allow: []netip.Prefix{lab}}, "127.0.0.1:" + etcdPort + ": refusing to connect"},
		{"metadata address", "http://169.254.169.254/latest/meta-data/", FetchPolicy{}, "metadata"},
		{"own address", redirector.URL + "/img", FetchPolicy{Allow: []netip.Prefix{lab}, Refuse: []netip.Addr{netip.MustParseAddr("127.0.0.2")}},
			"this machine's own address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &ImageCache{Dir: t.TempDir(), Client: NewFetchClient(tc.policy)}
			_, _, err := c.Ensure(t.Context(), tc.url, "", nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Ensure(%s) = %v, want a refusal containing %q", tc.url, err, tc.want)
			}
		})
	}
	mu.Lock()
	if len(local) > 0 {
		t.Errorf("the local service was asked for %v", local)
	}
	mu.Unlock()

	// The same client reaches what the policy allows.
	img := []byte("an image of the lab")
	web := listenOn(t, "127.0.0.2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(img) }))
	c := &ImageCache{Dir: t.TempDir(), Client: NewFetchClient(FetchPolicy{Allow: []netip.Prefix{lab}})}
	if _, sum, err := c.Ensure(t.Context(), web.URL+"/img", "", nil); err != nil || sum != checksumOf(img) {
		t.Errorf("Ensure from an allowed address = %s, %v; want %s", sum, err, checksumOf(img))
	}
}

// TestEnsureFrom: an image fetched through a Getter is verified, cached,
// and resumed with a range, like one fetched by URL; and the source it
// came from finds it in the cache again without asking.
func TestEnsureFrom(t *testing.T) {
	data := bytes.Repeat([]byte("uploaded image "), 100000)
	sum := checksumOf(data)
	var calls []string
	get := func(ctx context.Context, offset int64, ifRange string) (*http.Response, error) {
		calls = append(calls, strconv.FormatInt(offset, 10)+" "+ifRange)
		rec := httptest.NewRecorder()
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/content", nil)
		if offset > 0 {
			req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
			req.Header.Set("If-Range", ifRange)
		}
		rec.Header().Set("ETag", `"v1"`)
		http.ServeContent(rec, req, "", time.Time{}, bytes.NewReader(data))
		return rec.Result(), nil
	}
	c := &ImageCache{Dir: t.TempDir()}
	if err := c.makeDirs(); err != nil {
		t.Fatal(err)
	}
	const source = "https://api.lab:8443/apis/hearth.dev/v1alpha1/tenants/a/images/up/content"
	// Half of it arrived before a break.
	part := filepath.Join(c.Dir, "partial", imageKey(source, sum)+".part")
	if err := os.WriteFile(part, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeMeta(part, partMeta{URL: source, ETag: `"v1"`}); err != nil {
		t.Fatal(err)
	}
	path, got, err := c.EnsureFrom(t.Context(), source, sum, get, nil)
	if err != nil || got != sum {
		t.Fatalf("EnsureFrom = %s, %v; want %s", got, err, sum)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, data) {
		t.Error("the cached image differs from what the getter served")
	}
	if want := strconv.Itoa(len(data)/2) + ` "v1"`; len(calls) != 1 || calls[0] != want {
		t.Errorf("getter calls %q, want one resuming: %q", calls, want)
	}
	if _, _, err := c.EnsureFrom(t.Context(), source, sum, get, nil); err != nil || len(calls) != 1 {
		t.Errorf("EnsureFrom again: %v, %d getter calls; want the cached copy", err, len(calls))
	}
}
