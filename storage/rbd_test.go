package storage

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/storage/cephtest"
)

// newTestRBD starts (or shares) the test cluster and returns a driver for
// its pool as a new cephx user with the rbd profile, and that user's key.
func newTestRBD(t testing.TB) (*RBD, *cephtest.Cluster, string) {
	t.Helper()
	c := cephtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	user := "hearth-" + randomHex(4)
	key, err := c.AddUser(ctx, user, c.Pool)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRBD(RBDConfig{Pool: c.Pool, Monitors: c.Monitors, User: user, Key: key, Dir: filepath.Join(t.TempDir(), "pool")})
	if err != nil {
		t.Fatal(err)
	}
	return r, c, key
}

func TestRBDDriver(t *testing.T) {
	r, _, _ := newTestRBD(t)
	testDriver(t, r, driverTest{snapshotsInVolume: true})
}

// TestRBDImportedOnce checks that clones of one image share one imported
// copy of it, and that a second driver (another host) reuses it.
func TestRBDImportedOnce(t *testing.T) {
	r, c, key := newTestRBD(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	img := makeImage(t, 4<<20, 0x20)
	image := Image{Checksum: img.sum, Path: img.path}
	other, err := NewRBD(RBDConfig{Pool: c.Pool, Monitors: c.Monitors, User: r.cfg.User, Key: key, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	p := randomHex(3)
	for i, d := range []*RBD{r, other, r} {
		if err := d.CloneImage(ctx, image, p+"-"+string(rune('a'+i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	list, err := r.cli(ctx, "rbd", "ls", c.Pool)
	if err != nil {
		t.Fatal(err)
	}
	hex, _ := image.id()
	if n := strings.Count(string(list), rbdImagePrefix+hex); n != 1 {
		t.Errorf("pool holds %d copies of the image, want 1:\n%s", n, list)
	}
	if strings.Contains(string(list), ".tmp-") {
		t.Errorf("an import left a temporary image behind:\n%s", list)
	}
	for i := range 3 {
		if err := r.DeleteVolume(ctx, p+"-"+string(rune('a'+i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.DeleteImage(ctx, image); err != nil {
		t.Fatal(err)
	}
}

// TestRBDResizeTogether grows one volume from several callers at once,
// as a VM's start and the volume's own reconcile do: every one succeeds
// (the later ones' `rbd resize` found the size already there and failed
// with "new size is equal to original size").
func TestRBDResizeTogether(t *testing.T) {
	r, _, _ := newTestRBD(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := randomHex(4)
	if err := r.CreateVolume(ctx, id, 4<<20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.DeleteVolume(context.Background(), id) })
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- r.Resize(ctx, id, 8<<20) }()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("Resize: %v", err)
		}
	}
	if st, err := r.Stat(ctx, id); err != nil || st.Size != 8<<20 {
		t.Errorf("Stat = %+v, %v; want a size of %d", st, err, 8<<20)
	}
}

// TestRBDKeyFiles checks where the key is: in 0600 files only, never in
// the configuration file and never on a command line of the programs the
// driver runs.
func TestRBDKeyFiles(t *testing.T) {
	r, _, key := newTestRBD(t)
	fi, err := os.Stat(r.cfg.Dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir %s: mode %v (%v), want 0700", r.cfg.Dir, fi.Mode().Perm(), err)
	}
	for _, f := range []string{r.conf, r.keyring, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", f, fi.Mode().Perm(), err)
		}
	}
	if b, _ := os.ReadFile(r.conf); strings.Contains(string(b), key) {
		t.Errorf("the key is in %s, which needs only the keyring's path", r.conf)
	}

	// Every program the driver runs, through a wrapper that logs its
	// arguments.
	bin := t.TempDir()
	logFile := filepath.Join(t.TempDir(), "argv.log")
	for _, prog := range []string{"rbd", "ceph", "qemu-img"} {
		real, err := exec.LookPath(prog)
		if err != nil {
			t.Fatal(err)
		}
		script := "#!/bin/sh\nprintf '%s\\n' \"$*\" >>" + logFile + "\nexec " + real + " \"$@\"\n"
		if err := os.WriteFile(filepath.Join(bin, prog), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	img := makeImage(t, 1<<20, 0x30)
	id := randomHex(4)
	if err := r.CloneImage(ctx, Image{Checksum: img.sum, Path: img.path}, id, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Capacity(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteVolume(ctx, id); err != nil {
		t.Fatal(err)
	}
	argv, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(argv), "convert") || !strings.Contains(string(argv), "clone") || !strings.Contains(string(argv), "df") {
		t.Fatalf("the wrapper did not see the programs run:\n%s", argv)
	}
	if strings.Contains(string(argv), key) {
		t.Errorf("the key appeared on a command line:\n%s", argv)
	}
}

// TestRBDWrongKey checks that cephx is enforced: a driver with another
// key cannot touch the pool, and says so rather than hanging.
func TestRBDWrongKey(t *testing.T) {
	r, c, _ := newTestRBD(t)
	bad, err := NewRBD(RBDConfig{Pool: c.Pool, Monitors: c.Monitors, User: r.cfg.User,
		Key: "AQBLKxVrAAAAABAAv6lO0Pb2VlNnOWmDfP7Aqg==", Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = bad.CreateVolume(ctx, randomHex(4), 1<<20)
	if err == nil {
		t.Fatal("a driver with the wrong key made a volume")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a driver with the wrong key hung: %v", err)
	}
}

func TestRBDConfigValidate(t *testing.T) {
	good := RBDConfig{Pool: "rbd", Monitors: []string{"192.0.2.1", "192.0.2.2:6789", "[2001:db8::1]:3300", "mon.example.org"}, User: "hearth",
		Key: "AQBLKxVrAAAAABAAv6lO0Pb2VlNnOWmDfP7Aqg==", Dir: "/var/lib/hearth/pools/ceph"}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*RBDConfig)
		want string
	}{
		{"pool with a newline", func(c *RBDConfig) { c.Pool = "rbd\nkeyring = /etc/shadow" }, "pool"},
		{"no monitors", func(c *RBDConfig) { c.Monitors = nil }, "monitors"},
		{"monitor with a comma", func(c *RBDConfig) { c.Monitors = []string{"a,b"} }, "monitors[0]"},
		{"monitor port", func(c *RBDConfig) { c.Monitors = []string{"192.0.2.1:99999"} }, "port"},
		{"user with client.", func(c *RBDConfig) { c.User = "client admin" }, "user"},
		{"key not base64", func(c *RBDConfig) { c.Key = "not a key\n" }, "key"},
		{"relative dir", func(c *RBDConfig) { c.Dir = "pools" }, "dir"},
	} {
		c := good
		c.Monitors = append([]string(nil), good.Monitors...)
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error about %s", tc.name, err, tc.want)
		}
	}
}

func TestParseCephKey(t *testing.T) {
	const key = "AQBLKxVrAAAAABAAv6lO0Pb2VlNnOWmDfP7Aqg=="
	const other = "AQCMLhVrAAAAABAAD6BqT/3vGx0bBoVn4wq1lA=="
	for _, tc := range []struct {
		name, value, user, want, err string
	}{
		{"bare key", key + "\n", "hearth", key, ""},
		{"keyring", "[client.hearth]\n\tkey = " + key + "\n\tcaps mon = \"profile rbd\"\n", "hearth", key, ""},
		{"keyring of several", "[client.admin]\n\tkey = " + other + "\n[client.hearth]\n\tkey = " + key + "\n", "hearth", key, ""},
		{"keyring of one other user", "[client.x]\nkey = " + key + "\n", "hearth", key, ""},
		{"no such user", "[client.a]\nkey = " + key + "\n[client.b]\nkey = " + other + "\n", "hearth", "", "no key for client.hearth"},
		{"not a key", "hunter2", "hearth", "", "neither"},
		{"bad key in keyring", "[client.hearth]\nkey = not base64!\n", "hearth", "", "not a cephx key"},
	} {
		got, err := ParseCephKey(tc.value, tc.user)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: got %q, %v; want an error saying %q", tc.name, got, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), key) {
			t.Errorf("%s: the error shows the key: %v", tc.name, err)
		}
	}
}
