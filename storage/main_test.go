package storage

import (
	"os"
	"testing"

	"hearth.dev/hearth/storage/cephtest"
	"hearth.dev/hearth/storage/nfstest"
)

// TestMain stops the test peers (Ceph, NFS) the tests started, once they
// are all done.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, stop := range []func() error{cephtest.Stop, nfstest.Stop} {
		if err := stop(); err != nil {
			os.Stderr.WriteString("stopping test peers: " + err.Error() + "\n")
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}
