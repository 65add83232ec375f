package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

func fileImage(tenant, name, path string) *api.Image {
	return &api.Image{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Image"},
		Metadata: api.ObjectMeta{Name: name, Tenant: tenant},
		Spec:     api.ImageSpec{Format: api.FormatRaw, Source: api.ImageSource{URL: "file://" + path}}}
}

// refused waits until the volume made from an image is refused for why,
// and the image shows this host's copy Failed.
func (l *lab) refused(t *testing.T, vol, imgTenant, img, why string) {
	t.Helper()
	l.waitVolume(t, vol, func(v *api.Volume) error {
		if c := v.Status.Condition("Ready"); v.Status.Phase == api.VolumeAvailable || c == nil || !strings.Contains(c.Message, why) {
			return fmt.Errorf("want it refused: %q", why)
		}
		return nil
	})
	servertest.Eventually(t, 10*time.Second, func() error {
		o, err := l.env.Admin.Get(servertest.Ctx(t), "Image", imgTenant, img)
		if err != nil {
			return err
		}
		st := o.(*api.Image).Status
		if len(st.Hosts) != 1 || st.Hosts[0].Phase != api.ImageFailed || st.Checksum != "" {
			return fmt.Errorf("image %s status %+v, want h1 Failed and no checksum", img, st)
		}
		return nil
	})
}

// TestAgentRefusesHostFiles: should a file:// image or kernel get into
// etcd past the API (which refuses them), the agent still reads no file
// of its host for a tenant: not for a tenant's Image, even under an
// allowed directory, and not for a VM's kernel; and a shared Image's
// file only under --allow-file-dir, ".." and symbolic links resolved
// first. Nothing is cached, and the guest never gets the bytes.
func TestAgentRefusesHostFiles(t *testing.T) {
	needQEMUImg(t)
	allowed, secret := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(allowed, "vmlinuz"), []byte("an administrator's kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secret, "shadow"), []byte("root:$6$secret:19000:0:99999:7:::\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(secret, "shadow"), filepath.Join(allowed, "link")); err != nil {
		t.Fatal(err)
	}
	l := newLab(t, func(c *agent.Config) { c.AllowFileDirs = append(c.AllowFileDirs, allowed) })

	// A tenant's images: the agent's own credential, and a file in a
	// directory the agent allows (for shared images).
	l.store(t, fileImage("lab", "creds", filepath.Join(l.dataDir, "credentials.json")))
	l.store(t, fileImage("lab", "kernel", filepath.Join(allowed, "vmlinuz")))
	// Shared images that try to leave the allowed directory.
	l.store(t, fileImage("", "dotdot", allowed+"/../"+filepath.Base(secret)+"/shadow"))
	l.store(t, fileImage("", "symlink", filepath.Join(allowed, "link")))
	for _, c := range []struct{ vol, tenant, img, why string }{
		{"creds", "lab", "creds", "a tenant's image cannot name a file on the hosts"},
		{"kernel", "lab", "kernel", "a tenant's image cannot name a file on the hosts"},
		{"dotdot", "", "dotdot", "is not under a directory allowed for file:// images"},
		{"symlink", "", "symlink", "is not under a directory allowed for file:// images"},
	} {
		l.create(t, volume(c.vol, 0, api.VolumeSource{Image: c.img}))
		l.refused(t, c.vol, c.tenant, c.img, c.why)
	}

	// A VM whose kernel is a host file.
	vm := l.vm("peek")
	vm.Spec.Boot.Kernel = &api.BootFile{URL: "file://" + filepath.Join(allowed, "vmlinuz")}
	l.storeInvalid(t, vm)
	servertest.Eventually(t, 60*time.Second, func() error {
		vm := l.get(t, "peek")
		if c := vm.Status.Condition("Running"); vm.Status.Phase != api.VMFailed || c == nil || !strings.Contains(c.Message, "spec.boot.kernel.url") ||
			!strings.Contains(c.Message, "refusing it") {
			return fmt.Errorf("want the VM Failed, its kernel refused: phase %s, conditions %+v", vm.Status.Phase, vm.Status.Conditions)
		}
		return nil
	})
	if files, _ := os.ReadDir(filepath.Join(l.dataDir, "images", "sha256")); len(files) > 0 {
		t.Errorf("the image cache holds %d files (%s, …)", len(files), files[0].Name())
	}
}

// TestAgentFetchesNothingFromItsMachine: an image whose URL is the API
// server's path of another tenant's VM (or anything else on the agent's
// own machine), should it get into etcd, is not fetched: the agent's
// downloads refuse loopback after resolving, and carry no credential.
// Tenant lab's VM, with its user data, never becomes tenant evil's disk.
func TestAgentFetchesNothingFromItsMachine(t *testing.T) {
	needQEMUImg(t)
	l := newLab(t)
	ctx := servertest.Ctx(t)
	secret := l.vm("db")
	secret.Spec.PowerState = api.PowerStopped
	secret.Spec.CloudInit.UserData = "#cloud-config\npassword: tenant-lab-secret\n"
	l.create(t, secret)
	l.env.Tenant("evil")
	k, _ := api.KindByName("VirtualMachine")
	for name, u := range map[string]string{
		"vm":        l.env.Server.URL() + api.ObjectPath(k, "lab", "db"),
		"localhost": strings.Replace(l.env.Server.URL(), "127.0.0.1", "localhost", 1) + api.ObjectPath(k, "lab", "db"),
	} {
		img := &api.Image{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Image"},
			Metadata: api.ObjectMeta{Name: "steal-" + name, Tenant: "evil"},
			Spec:     api.ImageSpec{Format: api.FormatRaw, Source: api.ImageSource{URL: u}}}
		l.store(t, img)
		vol := volume("stolen-"+name, 0, api.VolumeSource{Image: img.Metadata.Name})
		vol.Metadata.Tenant = "evil"
		if _, err := l.env.Admin.Create(ctx, vol); err != nil {
			t.Fatal(err)
		}
		servertest.Eventually(t, 60*time.Second, func() error {
			o, err := l.env.Admin.Get(ctx, "Volume", "evil", vol.Metadata.Name)
			if err != nil {
				return err
			}
			v := o.(*api.Volume)
			if c := v.Status.Condition("Ready"); v.Status.Phase == api.VolumeAvailable || c == nil || !strings.Contains(c.Message, "refusing to connect") {
				return fmt.Errorf("want volume %s refused (status %+v)", vol.Metadata.Name, v.Status)
			}
			return nil
		})
	}
	if files, _ := os.ReadDir(filepath.Join(l.dataDir, "images", "sha256")); len(files) > 0 {
		t.Errorf("the image cache holds %d files (%s, …)", len(files), files[0].Name())
	}
}
