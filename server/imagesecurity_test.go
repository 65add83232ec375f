package server_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server"
	"hearth.dev/hearth/server/servertest"
)

func urlImage(tenant, name, u string) *api.Image {
	return &api.Image{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Image"},
		Metadata: api.ObjectMeta{Name: name, Tenant: tenant},
		Spec:     api.ImageSpec{Format: api.FormatRaw, Source: api.ImageSource{URL: u}}}
}

func kernelVM(tenant, name string, kernel api.BootFile) *api.VirtualMachine {
	return &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
		Metadata: api.ObjectMeta{Name: name, Tenant: tenant},
		Spec:     api.VirtualMachineSpec{Boot: api.VMBoot{From: api.BootFromKernel, Kernel: &kernel, Cmdline: "console=ttyS0"}}}
}

func kernelProfile(name, kernelURL string) *api.MachineProfile {
	return &api.MachineProfile{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "MachineProfile"},
		Metadata: api.ObjectMeta{Name: name},
		Spec:     api.MachineProfileSpec{ProfileBoot: api.ProfileBoot{Kernel: &api.BootFile{URL: kernelURL}}}}
}

// wantInvalid checks a refusal: 422 naming exactly the field, with detail
// in its message, and the object not written.
func wantInvalid(t *testing.T, c *client.Client, obj api.Object, err error, field, detail string) {
	t.Helper()
	st, ok := err.(*api.Status)
	if !ok || st.Code != http.StatusUnprocessableEntity || len(st.Fields) != 1 || st.Fields[0].Field != field ||
		!strings.Contains(st.Fields[0].Detail, detail) {
		t.Errorf("writing %s: got %v, want 422 at %s saying %q", api.Ref(obj), err, field, detail)
		return
	}
	m := obj.GetMetadata()
	if _, err := c.Get(servertest.Ctx(t), obj.GetTypeMeta().Kind, m.Tenant, m.Name); !api.IsNotFound(err) {
		t.Errorf("%s was written anyway (get: %v)", api.Ref(obj), err)
	}
}

// TestFileURLsOnlyForClusterAdmins: file:// names a file on the hosts
// (their token, admin.conf, /etc/shadow), so only cluster admins' objects
// may use it: a shared Image or a MachineProfile. A tenant's Image is
// refused whoever writes it, and a VM's kernel and initrd always; a VM
// boots an administrator's file through a shared Image instead.
func TestFileURLsOnlyForClusterAdmins(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	member := env.User("mallory", "lab", api.RoleTenantMember)
	steal := "file:///var/lib/hearth-agent/credentials.json"

	for _, c := range []struct {
		who    string
		c      *client.Client
		obj    api.Object
		field  string
		detail string
	}{
		{"member", member, urlImage("lab", "creds", steal), "spec.source.url", "only cluster admins' objects"},
		{"cluster admin", env.Admin, urlImage("lab", "creds", steal), "spec.source.url", "only cluster admins' objects"},
		{"member", member, kernelVM("lab", "vm1", api.BootFile{URL: "file:///etc/shadow"}), "spec.boot.kernel.url", "cannot boot a file of its host"},
		{"cluster admin", env.Admin, kernelVM("lab", "vm1", api.BootFile{URL: "file:///etc/shadow"}), "spec.boot.kernel.url", "cannot boot a file of its host"},
		{"member", member, &api.VirtualMachineSet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachineSet"},
			Metadata: api.ObjectMeta{Name: "set", Tenant: "lab"},
			Spec: api.VirtualMachineSetSpec{Selector: api.LabelSelector{"app": "x"}, Template: api.VMTemplate{
				Metadata: api.TemplateMeta{Labels: map[string]string{"app": "x"}},
				Spec:     kernelVM("lab", "", api.BootFile{URL: "file:///var/lib/hearth/admin.conf"}).Spec}}},
			"spec.template.spec.boot.kernel.url", "cannot boot a file of its host"},
		{"member", member, kernelVM("lab", "vm2", api.BootFile{Image: "Kernel"}), "spec.boot.kernel.image", "lowercase"},
	} {
		_, err := c.c.Create(ctx, c.obj)
		wantInvalid(t, env.Admin, c.obj, err, c.field, c.detail)
	}

	// What cluster admins may do: a shared Image and a profile with a
	// file:// URL (the agents and the boot service still read only under
	// the directories they allow); and a tenant's VM boots the shared
	// Image by name.
	if _, err := env.Admin.Create(ctx, urlImage("", "testguest-kernel", "file:///srv/testguest/vmlinuz")); err != nil {
		t.Errorf("a shared image with a file:// URL: %v", err)
	}
	if _, err := env.Admin.Create(ctx, kernelProfile("installer", "file:///srv/testguest/vmlinuz")); err != nil {
		t.Errorf("a profile with a file:// URL: %v", err)
	}
	if _, err := member.Create(ctx, kernelVM("lab", "vm3", api.BootFile{Image: "testguest-kernel"})); err != nil {
		t.Errorf("a VM booting a shared image: %v", err)
	}
}

// TestFetchURLsNotAtTheControlPlane: URLs that hosts fetch may not point
// at the API server (its addresses and names, its etcd) nor at loopback,
// unspecified or link-local addresses, the metadata address or a name for
// this host, whoever writes them, wherever they are (an image, a VM's
// kernel, a profile's variant); a lab's own servers are fine.
func TestFetchURLsNotAtTheControlPlane(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers(), func(c *server.Config) {
		c.TLSSANs = []string{"api.lab.example", "192.0.2.10"}
	})
	env.Tenant("a")
	env.Tenant("evil")
	ctx := servertest.Ctx(t)
	evil := env.User("eve", "evil", api.RoleTenantAdmin)
	api0 := env.Server.URL() // https://127.0.0.1:PORT

	refused := []struct{ url, detail string }{
		{api0 + "/apis/hearth.dev/v1alpha1/tenants/a/virtualmachines/db", "loopback"},
		{"https://api.lab.example:8443/apis/hearth.dev/v1alpha1/tenants/a/images/private/content", "points at the API server (api.lab.example is its name)"},
		{"https://192.0.2.10:9999/anything", "points at the API server (192.0.2.10 is its address)"},
		{"http://127.0.0.1:2379/v3/kv/range", "loopback"},
		{"http://localhost:2379/version", "points at this host"},
		{"http://etcd.localhost/", "points at this host"},
		{"http://[::1]:9443/", "loopback"},
		{"http://[::ffff:127.0.0.1]/", "loopback"},
		{"http://0.0.0.0:9443/", "unspecified"},
		{"http://169.254.169.254/latest/meta-data/iam/", "metadata"},
		{"http://169.254.10.20/", "link-local"},
		{"http://[fe80::1]/", "link-local"},
		{"http://127.1/", "neither a name nor an IP address"},
		{"http://2130706433/", "neither a name nor an IP address"},
		{"http://0x7f000001/", "neither a name nor an IP address"},
	}
	for i, r := range refused {
		img := urlImage("evil", fmt.Sprintf("steal-%d", i), r.url)
		_, err := evil.Create(ctx, img)
		wantInvalid(t, env.Admin, img, err, "spec.source.url", r.detail)
	}
	// Cluster admins are held to it too, and so are kernels and
	// profiles' variants.
	_, err := env.Admin.Create(ctx, urlImage("", "shared", "http://127.0.0.1:2379/v3/kv/range"))
	wantInvalid(t, env.Admin, urlImage("", "shared", ""), err, "spec.source.url", "loopback")
	vm := kernelVM("evil", "vm", api.BootFile{URL: "http://169.254.169.254/latest/user-data"})
	_, err = evil.Create(ctx, vm)
	wantInvalid(t, env.Admin, vm, err, "spec.boot.kernel.url", "metadata")
	p := kernelProfile("arm", "http://boot.lab.example/linux")
	p.Spec.Variants = map[string]api.ProfileBoot{"arm64": {Kernel: &api.BootFile{URL: "http://boot.lab.example/arm/linux"},
		Initrds: []api.BootFile{{URL: "http://localhost/initrd"}}}}
	_, err = env.Admin.Create(ctx, p)
	wantInvalid(t, env.Admin, p, err, "spec.variants.arm64.initrds[0].url", "points at this host")

	for i, ok := range []string{"https://cloud.debian.org/images/debian-12.qcow2", "http://192.168.1.10/images/x.img", "http://nas/images/x.img"} {
		if _, err := evil.Create(ctx, urlImage("evil", fmt.Sprintf("ok-%d", i), ok)); err != nil {
			t.Errorf("an image from %s: %v", ok, err)
		}
	}
}

// TestStatusIsNotTenants: tenant users, whatever their role, write no
// status (PUT or PATCH /status): it is what hosts and controllers
// observed, and an image's checksum decides which bytes its readers get.
func TestStatusIsNotTenants(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	admin := env.User("ta", "lab", api.RoleTenantAdmin)
	member := env.User("tm", "lab", api.RoleTenantMember)
	if _, err := member.Create(ctx, uploadImage("lab", "disk", "")); err != nil {
		t.Fatal(err)
	}
	sum := "sha256:" + strings.Repeat("e", 64)
	for who, c := range map[string]*client.Client{"tenant admin": admin, "member": member} {
		if _, err := c.Patch(ctx, "Image", "lab", "disk", map[string]any{"status": map[string]any{"checksum": sum, "phase": "Ready"}}, true); !api.IsForbidden(err) {
			t.Errorf("%s patching the image's status: got %v, want Forbidden", who, err)
		}
		o, err := c.Get(ctx, "Image", "lab", "disk")
		if err != nil {
			t.Fatal(err)
		}
		o.(*api.Image).Status.Checksum = sum
		if _, err := c.UpdateStatus(ctx, o); !api.IsForbidden(err) {
			t.Errorf("%s replacing the image's status: got %v, want Forbidden", who, err)
		}
	}
	o, err := env.Admin.Get(ctx, "Image", "lab", "disk")
	if err != nil {
		t.Fatal(err)
	}
	if st := o.(*api.Image).Status; st.Checksum != "" || st.Phase == api.ImageReady {
		t.Errorf("the status changed anyway: %+v", st)
	}
}

// TestUploadServedOnlyToItsImage: content is served only for the Image it
// was uploaded to. Another tenant's image whose status.checksum is made
// to name it (a host may not; a cluster admin can) gets nothing of it.
func TestUploadServedOnlyToItsImage(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("a")
	env.Tenant("evil")
	ctx := servertest.Ctx(t)
	alice := env.User("alice", "a", api.RoleTenantMember)
	eve := env.User("eve", "evil", api.RoleTenantMember)
	host := env.Host("h1")
	placeVM(t, env, "a", "h1")
	placeVM(t, env, "evil", "h1")
	secret := bytes.Repeat([]byte("tenant a's private disk\n"), 500)
	sum := sumOf(secret)
	if _, err := alice.Create(ctx, uploadImage("a", "private", "")); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.UploadImage(ctx, "a", "private", bytes.NewReader(secret)); err != nil {
		t.Fatal(err)
	}
	if _, err := eve.Create(ctx, uploadImage("evil", "steal", "")); err != nil {
		t.Fatal(err)
	}
	// Eve may not write the status; nor may a host name other bytes for
	// an uploaded image.
	patch := map[string]any{"status": map[string]any{"checksum": sum, "size": len(secret), "phase": "Ready"}}
	if _, err := eve.Patch(ctx, "Image", "evil", "steal", patch, true); !api.IsForbidden(err) {
		t.Fatalf("eve setting her image's checksum: got %v, want Forbidden", err)
	}
	hostPatch := map[string]any{"status": map[string]any{"checksum": sum, "size": len(secret), "phase": "Ready",
		"hosts": []any{map[string]any{"host": "h1", "phase": "Ready", "progress": 100}}}}
	if _, err := host.Patch(ctx, "Image", "evil", "steal", hostPatch, true); !api.IsForbidden(err) {
		t.Fatalf("a host setting an uploaded image's checksum: got %v, want Forbidden", err)
	}
	// A cluster admin may write status, but that hands out nothing.
	if _, err := env.Admin.Patch(ctx, "Image", "evil", "steal", patch, true); err != nil {
		t.Fatal(err)
	}
	path := client.ImageContentPath("evil", "steal")
	for who, c := range map[string]*client.Client{"eve": eve, "a host": host, "a cluster admin": env.Admin} {
		resp, body := get(t, env, c, path, nil)
		if resp.StatusCode != http.StatusNotFound || bytes.Contains(body, secret[:20]) {
			t.Errorf("%s reading evil/steal: %s, %d bytes; want 404", who, resp.Status, len(body))
		}
	}
	// Tenant a's image still serves its own content.
	if resp, body := get(t, env, host, client.ImageContentPath("a", "private"), nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, secret) {
		t.Errorf("the host reading a/private: %s, %d bytes", resp.Status, len(body))
	}
}

// chunked hides a reader's size, so an upload goes without a
// Content-Length and the server finds out as the bytes arrive.
type chunked struct{ io.Reader }

// TestUploadBounds: an upload over --max-upload-size is refused (413),
// as is one past the tenant's imageStorage quota (403 QuotaExceeded),
// whether or not the size was announced; nothing of it is kept.
func TestUploadBounds(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers(), func(c *server.Config) { c.MaxUploadSize = 4 << 20 })
	ctx := servertest.Ctx(t)
	tn := &api.Tenant{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tenant"}, Metadata: api.ObjectMeta{Name: "lab"},
		Spec: api.TenantSpec{Quota: api.Quota{ImageStorage: 3 << 20}}}
	if _, err := env.Admin.Create(ctx, tn); err != nil {
		t.Fatal(err)
	}
	alice := env.User("alice", "lab", api.RoleTenantMember)
	for _, name := range []string{"big", "one", "two"} {
		if _, err := alice.Create(ctx, uploadImage("lab", name, "")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.Admin.Create(ctx, uploadImage("", "shared", "")); err != nil {
		t.Fatal(err)
	}
	five, two := bytes.Repeat([]byte{1}, 5<<20), bytes.Repeat([]byte{2}, 2<<20)
	for _, body := range []io.Reader{bytes.NewReader(five), chunked{bytes.NewReader(five)}} {
		_, err := env.Admin.UploadImage(ctx, "", "shared", body)
		if st, ok := err.(*api.Status); !ok || st.Code != http.StatusRequestEntityTooLarge || !strings.Contains(st.Message, "--max-upload-size") {
			t.Errorf("uploading 5Mi over a 4Mi limit (%T): got %v, want 413 naming --max-upload-size", body, err)
		}
	}
	if _, err := alice.UploadImage(ctx, "lab", "one", bytes.NewReader(two)); err != nil {
		t.Fatal(err)
	}
	// Uploading the same content again does not count it twice.
	if _, err := alice.UploadImage(ctx, "lab", "one", bytes.NewReader(two)); err != nil {
		t.Errorf("uploading the same bytes again: %v", err)
	}
	want := "tenant lab: quota exceeded for imageStorage: requested 2Mi, used 2Mi of 3Mi"
	if _, err := alice.UploadImage(ctx, "lab", "two", bytes.NewReader(two)); !api.IsQuotaExceeded(err) || err.Error() != want {
		t.Errorf("uploading past the quota: got %v, want %q", err, want)
	}
	want = "tenant lab: quota exceeded for imageStorage: requested more than the 1Mi left, used 2Mi of 3Mi"
	if _, err := alice.UploadImage(ctx, "lab", "two", chunked{bytes.NewReader(two)}); !api.IsQuotaExceeded(err) || err.Error() != want {
		t.Errorf("uploading past the quota without a size: got %v, want %q", err, want)
	}
	o, err := env.Admin.Get(ctx, "Image", "lab", "two")
	if err != nil {
		t.Fatal(err)
	}
	if st := o.(*api.Image).Status; st.Checksum != "" || st.Size != 0 {
		t.Errorf("a refused upload was recorded: %+v", st)
	}
	files, _ := os.ReadDir(filepath.Join(env.DataDir, "images"))
	if len(files) != 1 || files[0].Name() != strings.TrimPrefix(sumOf(two), "sha256:") {
		t.Errorf("files kept: %v, want only the accepted upload", files)
	}
}

// TestUploadKeepsEtcdsReserve: an upload that would leave less than
// --upload-reserve free on the data directory's file system is refused
// (507), up front when its size is announced and while it streams when
// not, and leaves nothing behind. The data directory is a small tmpfs of
// the test's own, so the free space is known.
func TestUploadKeepsEtcdsReserve(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs for the data directory needs root; CI runs as root")
	}
	dataDir := t.TempDir()
	if err := unix.Mount("tmpfs", dataDir, "tmpfs", 0, "size=48m,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dataDir, unix.MNT_DETACH) }) // after the server stops
	etcdDir := t.TempDir()
	env := servertest.Start(t, servertest.WithoutControllers(), func(c *server.Config) {
		c.DataDir, c.Etcd.DataDir, c.UploadReserve = dataDir, etcdDir, 24<<20
	})
	ctx := servertest.Ctx(t)
	for _, name := range []string{"small", "large"} {
		if _, err := env.Admin.Create(ctx, uploadImage("", name, "")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.Admin.UploadImage(ctx, "", "small", bytes.NewReader(bytes.Repeat([]byte{1}, 8<<20))); err != nil {
		t.Fatalf("an upload that leaves the reserve: %v", err)
	}
	large := bytes.Repeat([]byte{2}, 32<<20)
	for _, body := range []io.Reader{bytes.NewReader(large), chunked{bytes.NewReader(large)}} {
		_, err := env.Admin.UploadImage(ctx, "", "large", body)
		if st, ok := err.(*api.Status); !ok || st.Code != http.StatusInsufficientStorage || !strings.Contains(st.Message, "--upload-reserve") {
			t.Errorf("uploading into the reserve (%T): got %v, want 507 naming --upload-reserve", body, err)
		}
	}
	files, _ := os.ReadDir(filepath.Join(dataDir, "images"))
	if len(files) != 1 {
		t.Errorf("files kept: %v, want only the small upload", files)
	}
}
