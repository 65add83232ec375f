package storage

import (
	"strings"
	"testing"

	"hearth.dev/hearth/storage/nfstest"
)

func newTestNFS(t testing.TB) (*NFS, *nfstest.Server) {
	t.Helper()
	s := nfstest.Start(t)
	n, err := NewNFS(NFSConfig{Server: s.Host, Export: s.Path})
	if err != nil {
		t.Fatal(err)
	}
	return n, s
}

func TestNFSDriver(t *testing.T) {
	n, _ := newTestNFS(t)
	testDriver(t, n, driverTest{})
}

func TestNFSConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  NFSConfig
		want string // "" for valid
	}{
		{NFSConfig{Server: "192.0.2.10", Export: "/srv/hearth"}, ""},
		{NFSConfig{Server: "nas.example.org", Export: "/"}, ""},
		{NFSConfig{Server: "2001:db8::1", Export: "/srv"}, "server"},
		{NFSConfig{Server: "nas?x=1", Export: "/srv"}, "server"},
		{NFSConfig{Server: "nas", Export: "srv"}, "export"},
		{NFSConfig{Server: "nas", Export: "/srv/../etc"}, "export"},
		{NFSConfig{Server: "nas", Export: "/srv/"}, "export"},
		{NFSConfig{Server: "nas", Export: "/srv/a b"}, "export"},
	} {
		err := tc.cfg.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v, want valid", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: got %v, want an error about %s", tc.cfg, err, tc.want)
		}
	}
}
