package server_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

func uploadImage(tenant, name, checksum string) *api.Image {
	return &api.Image{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Image"},
		Metadata: api.ObjectMeta{Name: name, Tenant: tenant},
		Spec:     api.ImageSpec{Format: api.FormatRaw, Source: api.ImageSource{Upload: true, Checksum: checksum}}}
}

func sumOf(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

// get fetches a URL of the API with a client's credential.
func get(t *testing.T, env *servertest.Env, c *client.Client, path string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(servertest.Ctx(t), http.MethodGet, c.Server()+path, nil)
	req.Header.Set("Authorization", "Bearer "+tokenOf(t, c))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.Server.CAPEM())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// TestImageUpload: uploaded bytes are checked against the image's checksum
// and recorded in its status; they are served with ranges to hosts and
// readers; an image's content never changes; and the file goes with the
// last Image that names it.
func TestImageUpload(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	alice := env.User("alice", "lab", api.RoleTenantMember)
	host := env.Host("h1")
	placeVM(t, env, "lab", "h1") // a host reads the images of tenants it runs VMs of
	content := bytes.Repeat([]byte("hearth image bytes\n"), 1000)
	sum := sumOf(content)

	// A wrong checksum is refused, naming both, and nothing is kept.
	if _, err := alice.Create(ctx, uploadImage("lab", "bad", "sha256:"+strings.Repeat("0", 64))); err != nil {
		t.Fatal(err)
	}
	_, err := alice.UploadImage(ctx, "lab", "bad", bytes.NewReader(content))
	if api.ReasonOf(err) != api.ReasonInvalid || !strings.Contains(err.Error(), sum) || !strings.Contains(err.Error(), strings.Repeat("0", 64)) {
		t.Fatalf("upload with a wrong checksum: got %v, want Invalid naming both checksums", err)
	}
	if files, _ := os.ReadDir(filepath.Join(env.DataDir, "images")); len(files) != 0 {
		t.Fatalf("a refused upload left %d files", len(files))
	}

	// The right bytes are recorded.
	if _, err := alice.Create(ctx, uploadImage("lab", "disk", sum)); err != nil {
		t.Fatal(err)
	}
	img, err := alice.UploadImage(ctx, "lab", "disk", bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	if img.Status.Checksum != sum || img.Status.Size != api.Bytes(len(content)) || img.Status.Phase != api.ImageReady {
		t.Fatalf("status after upload: %+v", img.Status)
	}
	if _, err := alice.UploadImage(ctx, "lab", "disk", bytes.NewReader(content)); err != nil {
		t.Fatalf("uploading the same bytes again: %v", err)
	}

	// Hosts and the tenant read it, with ranges; hosts cannot upload, and a
	// tenant cannot upload a shared image.
	path := client.ImageContentPath("lab", "disk")
	resp, body := get(t, env, host, path, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, content) {
		t.Fatalf("host GET: %s, %d bytes", resp.Status, len(body))
	}
	resp, body = get(t, env, alice, path, map[string]string{"Range": "bytes=19-37"})
	if resp.StatusCode != http.StatusPartialContent || string(body) != "hearth image bytes\n" {
		t.Fatalf("ranged GET: %s, %q", resp.Status, body)
	}
	if _, err := host.UploadImage(ctx, "lab", "disk", bytes.NewReader(content)); !api.IsForbidden(err) {
		t.Fatalf("host upload: got %v, want Forbidden", err)
	}
	if _, err := env.Admin.Create(ctx, uploadImage("", "shared", "")); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.UploadImage(ctx, "", "shared", bytes.NewReader(content)); !api.IsForbidden(err) {
		t.Fatalf("tenant upload of a shared image: got %v, want Forbidden", err)
	}
	// Without a checksum in the spec, the first upload fixes the content.
	if _, err := env.Admin.UploadImage(ctx, "", "shared", bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Admin.UploadImage(ctx, "", "shared", strings.NewReader("other")); api.ReasonOf(err) != api.ReasonConflict {
		t.Fatalf("uploading other bytes: got %v, want Conflict", err)
	}
	if _, err := env.Admin.Delete(ctx, "Image", "", "shared"); err != nil {
		t.Fatal(err)
	}
	env.Tenant("other")
	bob := env.User("bob", "other", api.RoleTenantAdmin)
	if resp, _ := get(t, env, bob, path, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("another tenant's GET: %s, want 403", resp.Status)
	}

	// Deleting the image removes its file.
	if _, err := alice.Delete(ctx, "Image", "lab", "disk"); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(env.DataDir, "images", strings.TrimPrefix(sum, "sha256:"))
	servertest.Eventually(t, 10*time.Second, func() error {
		if _, err := os.Stat(file); err == nil {
			return fmt.Errorf("%s is still there", file)
		}
		return nil
	})
}

// TestImageHostStatus: a host reports its own copy of an image in
// status.hosts, and may fill in what it learned once, but may not touch
// other hosts' entries or change what is set.
func TestImageHostStatus(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	h1, h2 := env.Host("h1"), env.Host("h2")
	img := &api.Image{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Image"}, Metadata: api.ObjectMeta{Name: "deb"},
		Spec: api.ImageSpec{Source: api.ImageSource{URL: "https://example.com/deb.qcow2"}}}
	if _, err := env.Admin.Create(ctx, img); err != nil {
		t.Fatal(err)
	}
	sum := "sha256:" + strings.Repeat("a", 64)
	patch := func(c *client.Client, st map[string]any) error {
		_, err := c.Patch(ctx, "Image", "", "deb", map[string]any{"status": st}, true)
		return err
	}
	entry := func(host, phase string, pct int) map[string]any {
		return map[string]any{"host": host, "phase": phase, "progress": pct}
	}
	if err := patch(h1, map[string]any{"hosts": []any{entry("h1", api.ImageDownloading, 40)}}); err != nil {
		t.Fatalf("h1 reporting its download: %v", err)
	}
	if err := patch(h2, map[string]any{"hosts": []any{entry("h2", api.ImageDownloading, 10)}}); !api.IsForbidden(err) {
		t.Fatalf("h2 dropping h1's entry: got %v, want Forbidden", err)
	}
	if err := patch(h2, map[string]any{"hosts": []any{entry("h1", api.ImageDownloading, 40), entry("h2", api.ImageDownloading, 10)}}); err != nil {
		t.Fatalf("h2 adding its own entry: %v", err)
	}
	if err := patch(h2, map[string]any{"phase": api.ImageReady, "checksum": sum}); !api.IsForbidden(err) {
		t.Fatalf("h2 setting Ready before its copy is: got %v, want Forbidden", err)
	}
	if err := patch(h1, map[string]any{"hosts": []any{entry("h1", api.ImageReady, 100), entry("h2", api.ImageDownloading, 10)},
		"phase": api.ImageReady, "checksum": sum, "size": 1000}); err != nil {
		t.Fatalf("h1 finishing first: %v", err)
	}
	if err := patch(h2, map[string]any{"checksum": "sha256:" + strings.Repeat("b", 64)}); !api.IsForbidden(err) {
		t.Fatalf("h2 changing the checksum: got %v, want Forbidden", err)
	}
	if err := patch(h2, map[string]any{"conditions": []any{map[string]any{"type": "X", "status": "True"}}}); !api.IsForbidden(err) {
		t.Fatalf("h2 writing conditions: got %v, want Forbidden", err)
	}
	o, err := env.Admin.Get(ctx, "Image", "", "deb")
	if err != nil {
		t.Fatal(err)
	}
	st := o.(*api.Image).Status
	if st.Phase != api.ImageReady || st.Checksum != sum || len(st.Hosts) != 2 {
		t.Fatalf("status: %+v", st)
	}
	k, _ := api.KindByName("Image")
	if got := k.Columns[0].Get(o); got != "Ready (downloading 10%)" {
		t.Fatalf("STATUS column %q, want %q", got, "Ready (downloading 10%)")
	}
}

// TestImageContentHolders: a server records in etcd that it holds an
// upload, and deletes the record with the file; a server that lacks the
// content says which holders it tried, and answers another server from
// its own disk only.
func TestImageContentHolders(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	etcd := env.Server.Etcd()
	content := bytes.Repeat([]byte("held\n"), 1000)
	sum := sumOf(content)
	sumHex := strings.TrimPrefix(sum, "sha256:")
	if _, err := env.Admin.Create(ctx, uploadImage("", "held", sum)); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Admin.UploadImage(ctx, "", "held", bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	prefix := "/hearth/image-content/" + sumHex + "/"
	resp, err := etcd.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != env.Server.URL() ||
		string(resp.Kvs[0].Key) != prefix+url.QueryEscape(env.Server.URL()) {
		t.Fatalf("holder records after the upload: %v, want this server's", resp.Kvs)
	}
	// The record lives on a lease, so it goes when the server does.
	if lease := clientv3.LeaseID(resp.Kvs[0].Lease); lease == 0 {
		t.Fatalf("the holder record has no lease: it would outlive a server gone for good")
	} else if ttl, err := etcd.TimeToLive(ctx, lease); err != nil || ttl.TTL <= 0 {
		t.Fatalf("the holder record's lease: %+v, %v; want it alive", ttl, err)
	}

	// The file lost (as on a server that never had it): nobody else holds it.
	file := filepath.Join(env.DataDir, "images", sumHex)
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	path := client.ImageContentPath("", "held")
	if resp, body := get(t, env, env.Admin, path, nil); resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "no other server") {
		t.Fatalf("GET with no other holder: %s %s, want 404 saying no other server holds it", resp.Status, body)
	}
	// A holder that cannot be reached is named, with why.
	gone := fmt.Sprintf("https://127.0.0.1:%d", servertest.FreePort(t))
	if _, err := etcd.Put(ctx, prefix+url.QueryEscape(gone), gone); err != nil {
		t.Fatal(err)
	}
	if resp, body := get(t, env, env.Admin, path, nil); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), gone) {
		t.Fatalf("GET with an unreachable holder: %s %s, want 503 naming %s", resp.Status, body, gone)
	}
	// Another server asking is answered from this disk only.
	if resp, body := get(t, env, env.Admin, path, map[string]string{"Hearth-Peer-Fetch": "1"}); resp.StatusCode != http.StatusNotFound || strings.Contains(string(body), gone) {
		t.Fatalf("peer GET: %s %s, want a plain 404", resp.Status, body)
	}

	// Uploaded again, the file is back; deleting the Image removes the file
	// and this server's record (another server's is its own to delete).
	if _, err := env.Admin.UploadImage(ctx, "", "held", bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if resp, body := get(t, env, env.Admin, path, nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, content) {
		t.Fatalf("GET after uploading again: %s, %d bytes", resp.Status, len(body))
	}
	if _, err := env.Admin.Delete(ctx, "Image", "", "held"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		if _, err := os.Stat(file); err == nil {
			return fmt.Errorf("%s is still there", file)
		}
		resp, err := etcd.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != gone {
			return fmt.Errorf("holder records %v, want only %s's", resp.Kvs, gone)
		}
		return nil
	})
}
