package server_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server"
	"hearth.dev/hearth/server/etcd"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/server/store"
)

func newSecret(name string, data map[string]string) *api.Secret {
	return &api.Secret{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Secret"},
		Metadata: api.ObjectMeta{Name: name}, Spec: api.SecretSpec{StringData: data}}
}

// TestSecrets: a Secret's stringData is stored as data and never shown;
// only cluster admins read or write Secrets (a cluster viewer, a tenant
// admin and a host get 403 on every verb, and see none in lists); an
// admin's watch gets them whole; etcd holds them sealed, so the value is
// nowhere in it, and a sealed value moved under another Secret's key does
// not open.
func TestSecrets(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	env.Tenant("lab")
	const value = "correct-horse-battery-staple"
	out, err := env.Admin.Create(ctx, newSecret("bmc", map[string]string{"password": value}))
	if err != nil {
		t.Fatal(err)
	}
	s := out.(*api.Secret)
	if string(s.Spec.Data["password"]) != value || s.Spec.StringData != nil || s.Spec.Type != api.SecretOpaque {
		t.Fatalf("created secret: %+v, want the value in data and no stringData", s.Spec)
	}

	for who, c := range map[string]*client.Client{
		"viewer":       env.User("auditor", "", api.RoleViewer),
		"tenant admin": env.User("alice", "lab", api.RoleTenantAdmin),
		"host":         env.Host("h1"),
	} {
		for verb, err := range verbs(ctx, c, s) {
			if !api.IsForbidden(err) {
				t.Errorf("%s %s secret: %v, want 403", who, verb, err)
			}
		}
	}
	got, err := env.Admin.Get(ctx, "Secret", "", "bmc")
	if err != nil || string(got.(*api.Secret).Spec.Data["password"]) != value {
		t.Fatalf("the admin reads %v, %v after the others tried", got, err)
	}

	// Sealed at rest: neither the value nor its base64 is in etcd.
	k, _ := api.KindByName("Secret")
	resp, err := env.Server.Etcd().Get(ctx, store.KindPrefix(k), clientv3WithPrefix()...)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("etcd holds %v secrets, %v", resp, err)
	}
	stored := resp.Kvs[0].Value
	if !bytes.HasPrefix(stored, []byte(store.SealedPrefix)) || containsBytes(stored, value) || containsBytes(stored, "Y29ycmVjdC1ob3JzZS") || containsBytes(stored, "password") {
		t.Fatalf("etcd holds the secret unsealed: %q", stored)
	}

	// An admin's watch (which passes stored bytes through) opens them.
	_, rv, err := env.Admin.List(ctx, "Secret", "", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, _, err := env.Admin.WatchOnce(wctx, "Secret", "", client.ListOptions{ResourceVersion: rv})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Admin.Create(ctx, newSecret("plug", map[string]string{"token": "t0ken"})); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		if ev.Type != "ADDED" || string(ev.Object.(*api.Secret).Spec.Data["token"]) != "t0ken" {
			t.Fatalf("watch event %s %+v, want plug with its token", ev.Type, ev.Object)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the admin's watch brought nothing")
	}

	// A sealed value is bound to its key.
	if _, err := env.Server.Etcd().Put(ctx, store.Key(k, "", "plug"), string(stored)); err != nil {
		t.Fatal(err)
	}
	if got, err := env.Admin.Get(ctx, "Secret", "", "plug"); err == nil || !strings.Contains(err.Error(), "does not open") {
		t.Fatalf("bmc's sealed value under plug's key: %v, %v; want an error", got, err)
	}
}

// TestSecretsKeyAcrossServers: a second server of the same cluster without
// the first one's key file serves everything but Secrets, which answer a
// 503 saying to copy the key file; with a copy it reads them.
func TestSecretsKeyAcrossServers(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	if _, err := env.Admin.Create(ctx, newSecret("bmc", map[string]string{"password": "s3cret"})); err != nil {
		t.Fatal(err)
	}
	second := func(dir string) *client.Client {
		t.Helper()
		s, err := server.Start(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", DisableControllers: true,
			Etcd: etcd.Config{Endpoints: []string{env.EtcdURL}}})
		if err != nil {
			t.Fatalf("a second server: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		c, err := client.New(&client.Context{Name: "second", Server: s.URL(), CertificateAuthority: string(s.CAPEM()), Token: tokenOf(t, env.Admin)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	dir := t.TempDir()
	c := second(dir)
	if _, err := c.Get(ctx, "Tenant", "", "default"); err != nil {
		t.Fatalf("the keyless server reading a tenant: %v", err)
	}
	_, err := c.Get(ctx, "Secret", "", "bmc")
	if st, ok := err.(*api.Status); !ok || st.Code != 503 || !strings.Contains(st.Message, "copy that server's key file here") {
		t.Fatalf("the keyless server reading a secret: %v, want 503 saying to copy the key file", err)
	}
	if _, err := c.Create(ctx, newSecret("other", map[string]string{"k": "v"})); err == nil {
		t.Fatal("the keyless server wrote a secret it could not seal")
	}
	if _, err := os.Stat(filepath.Join(dir, "secrets.key")); err == nil {
		t.Fatal("the second server made a key of its own")
	}

	key, err := os.ReadFile(filepath.Join(env.DataDir, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	withKey := t.TempDir()
	if err := os.Chmod(withKey, 0o700); err != nil { // a server refuses a data directory others may enter
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(withKey, "secrets.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := second(withKey).Get(ctx, "Secret", "", "bmc")
	if err != nil || string(got.(*api.Secret).Spec.Data["password"]) != "s3cret" {
		t.Fatalf("a server with a copy of the key: %v, %v", got, err)
	}
}
