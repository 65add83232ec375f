package client_test

import (
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth.dev/hearth/client"
	"hearth.dev/hearth/storage"
)

// TestCredentialOnlyToImageContent: of everything an agent fetches from
// the API server's origin, only the content of the one Image it asks for
// carries its credential. A redirect from there is not followed, and the
// general downloads (image URLs written by tenants, such as the path of
// another tenant's VM on the API server) carry none.
func TestCredentialOnlyToImageContent(t *testing.T) {
	const token = "hearth-host-secret"
	var mu sync.Mutex
	auths := map[string]string{} // path → Authorization it came with
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths[r.URL.Path] = r.Header.Get("Authorization")
		mu.Unlock()
		switch {
		case strings.HasSuffix(r.URL.Path, "/images/up/content"):
			http.ServeContent(w, r, "", time.Time{}, strings.NewReader("uploaded bytes"))
		case strings.HasSuffix(r.URL.Path, "/images/moved/content"):
			http.Redirect(w, r, "/apis/hearth.dev/v1alpha1/tenants/a/virtualmachines/db", http.StatusFound)
		default:
			w.Write([]byte(`{"kind":"VirtualMachine","spec":{"cloudInit":{"userData":"secret"}}}`))
		}
	}))
	defer api.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw})
	c, err := client.New(&client.Context{Name: "host", Server: api.URL, CertificateAuthority: string(ca), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	resp, err := c.DownloadImage(ctx, "evil", "up", 9, "")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || string(body) != "bytes" {
		t.Errorf("ranged download: %s %q, want 206 %q", resp.Status, body, "bytes")
	}
	if _, err := c.DownloadImage(ctx, "evil", "moved", 0, ""); err == nil {
		t.Error("a redirect from the content path was followed")
	}

	// An image URL a tenant wrote, pointing at the API server: fetched
	// (here the policy lets loopback through, to see what is sent) with
	// no credential.
	fetch := storage.NewFetchClient(storage.FetchPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}})
	fetch.Transport.(*http.Transport).TLSClientConfig = api.Client().Transport.(*http.Transport).TLSClientConfig
	cache := &storage.ImageCache{Dir: t.TempDir(), Client: fetch}
	if _, _, err := cache.Ensure(ctx, api.URL+"/apis/hearth.dev/v1alpha1/tenants/a/virtualmachines/db", "", nil); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	want := map[string]string{
		"/apis/hearth.dev/v1alpha1/tenants/evil/images/up/content":    "Bearer " + token,
		"/apis/hearth.dev/v1alpha1/tenants/evil/images/moved/content": "Bearer " + token,
		"/apis/hearth.dev/v1alpha1/tenants/a/virtualmachines/db":      "",
	}
	for path, got := range auths {
		if w, ok := want[path]; !ok || got != w {
			t.Errorf("%s was requested with Authorization %q, want %q", path, got, w)
		}
	}
	if len(auths) != len(want) {
		t.Errorf("requests %v, want %v", auths, want)
	}
}
