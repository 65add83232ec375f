package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/netns"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/storage/lab"
	"hearth.dev/hearth/testguest"
)

// TestSandboxSharedStorage brings up a sandbox of two hosts with
// --shared-storage (a real single-node Ceph cluster and a real NFS server
// in PREFIX-storage, which the hosts reach over the underlay), applies
// examples/sandbox/shared-storage.yaml twice (the second apply changes
// nothing), and checks that each VM booted from its volume, cloned from
// the test guest's boot disk, in the pool ceph (RBD) or nfs, and counted
// its first boot on the disk; then stops both, moves them to the other
// host (spec.host, by `hearth vm migrate`) and starts them: each reads
// the count the first boot wrote and counts its second, on the other
// host. Finally `sandbox down` leaves no process, namespace or file of
// the storage behind. One sandbox serves both pools to keep CI short.
func TestSandboxSharedStorage(t *testing.T) {
	if tool, pkg := lab.MissingCephTool(); tool != "" {
		t.Skipf("%s not found: install Debian's %s (scripts/deps.sh test does) for the sandbox's Ceph", tool, pkg)
	}
	if tool, pkg := lab.MissingNFSTool(); tool != "" {
		t.Skipf("%s not found: install Debian's %s (scripts/deps.sh test does) for the sandbox's NFS server", tool, pkg)
	}
	s := upSandboxWith(t, 2, "--shared-storage")

	status := s.must("", "sandbox", "status", "--dir", s.dir)
	for _, want := range []string{s.prefix + "-storage", "pools ceph, nfs", "monitor ", "nfs://"} {
		if !strings.Contains(status, want) {
			t.Errorf("sandbox status does not show the shared storage (%q):\n%s", want, status)
		}
	}
	pools := s.must("", "get", "storagepools")
	for _, want := range []string{"ceph", "rbd", "nfs"} {
		if !strings.Contains(pools, want) {
			t.Errorf("get storagepools has no %q:\n%s", want, pools)
		}
	}

	example, err := os.ReadFile("../examples/sandbox/shared-storage.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s.must(string(example), "apply", "-f", "-")
	if out := s.must(string(example), "apply", "-f", "-"); strings.Contains(out, " created") || strings.Contains(out, " configured") ||
		!strings.Contains(out, "virtualmachine/on-ceph unchanged") || !strings.Contains(out, "volume/nfs-root unchanged") {
		t.Errorf("applying examples/sandbox/shared-storage.yaml again changed something:\n%s", out)
	}

	vms := map[string]struct{ volume, backend string }{
		"on-ceph": {"ceph-root", api.BackendRBD},
		"on-nfs":  {"nfs-root", api.BackendNFS},
	}
	waitBoots := func(name, want string) {
		t.Helper()
		servertest.Eventually(t, 5*time.Minute, func() error {
			out, err := s.hearth("", "logs", "vm/"+name, "--tenant", "shared")
			if err != nil {
				return fmt.Errorf("logs vm/%s: %v: %s", name, err, tail(out))
			}
			m := testguest.ParseMarkers(out)
			if _, ok := m["script-exit"]; !ok {
				return fmt.Errorf("%s has not run its user-data yet:\n%s", name, tail(out))
			}
			if got := m["boots"]; len(got) != 1 || got[0] != want {
				t.Fatalf("%s counted boots %v, want %s:\n%s", name, got, want, tail(out))
			}
			return nil
		})
	}
	for name, v := range vms {
		waitBoots(name, "1")
		vol := s.volume("shared", v.volume)
		if vol.Spec.Backend != v.backend || vol.Status.AttachedTo != name || !strings.Contains(vol.Status.Path, "hearth-vol-"+vol.Metadata.UID) {
			t.Errorf("volume %s: backend %q attachedTo %q path %q, want %s, %s, its image in the pool", v.volume, vol.Spec.Backend, vol.Status.AttachedTo, vol.Status.Path, v.backend, name)
		}
	}

	// Stop both, move them to h2, start them: the disk goes with them.
	for name := range vms {
		s.must("", "vm", "stop", name, "--tenant", "shared")
	}
	for name := range vms {
		s.waitVM(name, func(vm api.VirtualMachine) bool { return vm.Status.Phase == api.VMStopped })
		s.must("", "vm", "migrate", name, "--to", "h2", "--tenant", "shared")
		s.must("", "vm", "start", name, "--tenant", "shared")
	}
	for name := range vms {
		s.waitVM(name, func(vm api.VirtualMachine) bool {
			return vm.Status.Phase == api.VMRunning && vm.Status.Host == "h2"
		})
		waitBoots(name, "2")
	}

	// Down leaves nothing of the storage: no process in or of it, no
	// namespace, no mount, no file.
	storageNs := s.prefix + "-storage"
	s.down()
	if _, err := os.Stat(netns.Path(storageNs)); !os.IsNotExist(err) {
		t.Errorf("after sandbox down, namespace %s is still there (%v)", storageNs, err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "storage")); !os.IsNotExist(err) {
		t.Errorf("after sandbox down, %s/storage is still there (%v)", s.dir, err)
	}
	if mounts, err := os.ReadFile("/proc/self/mountinfo"); err != nil || strings.Contains(string(mounts), s.dir) || strings.Contains(string(mounts), "hearth-nfs") {
		t.Errorf("after sandbox down, a mount of the sandbox's remains (%v):\n%s", err, mounts)
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), s.dir+"/") {
			t.Errorf("after sandbox down, process %s still runs: %q", e.Name(), strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
}

// volume reads a Volume through the CLI.
func (s *sandboxLab) volume(tenant, name string) api.Volume {
	s.t.Helper()
	var v api.Volume
	s.getJSON(&v, "get", "volume", name, "--tenant", tenant, "-o", "json")
	return v
}

// waitVM waits until the VM of tenant shared satisfies ok.
func (s *sandboxLab) waitVM(name string, ok func(api.VirtualMachine) bool) {
	s.t.Helper()
	servertest.Eventually(s.t, 3*time.Minute, func() error {
		var vm api.VirtualMachine
		s.getJSON(&vm, "get", "vm", name, "--tenant", "shared", "-o", "json")
		if !ok(vm) {
			return fmt.Errorf("VM %s: phase %s on %q (spec.host %q), conditions %+v", name, vm.Status.Phase, vm.Status.Host, vm.Spec.Host, vm.Status.Conditions)
		}
		return nil
	})
}

// getJSON runs a `get … -o json` and decodes its output into v.
func (s *sandboxLab) getJSON(v any, args ...string) {
	s.t.Helper()
	out := s.must("", args...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		s.t.Fatalf("hearth %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
