package nfstest_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"hearth.dev/hearth/storage/nfs3"
	"hearth.dev/hearth/storage/nfstest"
)

func TestMain(m *testing.M) { nfstest.Main(m) }

// TestServer starts the server and checks that files made over NFS (by
// qemu-img, through libnfs) appear in the export and that the nfs3 client
// sees, links and removes them.
func TestServer(t *testing.T) {
	s := nfstest.Start(t)
	if s2 := nfstest.Start(t); s2 != s {
		t.Errorf("second Start returned another server")
	}
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not found: install qemu-utils")
	}
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", s.URL("a.qcow2"), "1M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create over NFS: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(s.Export, "a.qcow2")); err != nil {
		t.Fatalf("the file qemu-img made is not in the export: %v", err)
	}
	c, err := nfs3.Dial(s.Host, s.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Lookup("a.qcow2"); err != nil {
		t.Errorf("lookup: %v", err)
	}
	if err := c.Link("a.qcow2", "b.qcow2"); err != nil {
		t.Errorf("link: %v", err)
	}
	if err := c.Link("a.qcow2", "b.qcow2"); err == nil {
		t.Errorf("link onto an existing name: got nil, want an error")
	}
	for _, n := range []string{"a.qcow2", "b.qcow2"} {
		if err := c.Remove(n); err != nil {
			t.Errorf("remove %s: %v", n, err)
		}
		if _, err := os.Stat(filepath.Join(s.Export, n)); !os.IsNotExist(err) {
			t.Errorf("%s still in the export after remove: %v", n, err)
		}
	}
	st, err := c.FSStat()
	if err != nil || st.Total == 0 || st.Avail > st.Total {
		t.Errorf("fsstat: %+v, %v", st, err)
	}
}
