package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/netns"
	"hearth.dev/hearth/netns/pingtest"
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
// host. Then a VM on Ceph with a NIC and a floating IP moves live
// (liveMigrationWithNIC). Finally `sandbox down` leaves no process,
// namespace or file of the storage behind. One sandbox serves both pools
// and the move to keep CI short.
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

	t.Run("live migration with a NIC", func(t *testing.T) {
		liveMigrationWithNIC(t, s.in(t))
	})

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
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Error(err)
	}
	for _, m := range strings.Split(string(mounts), "\n") {
		// Not the nfstest harness's mounts (hearth-nfstest-PID-*) of
		// other tests running on the machine.
		if strings.Contains(m, s.dir) || strings.Contains(strings.ReplaceAll(m, "hearth-nfstest", ""), "hearth-nfs") {
			t.Errorf("after sandbox down, a mount of the sandbox's remains: %s", m)
		}
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

// movingVM is a running VM with its disk on the sandbox's Ceph and a NIC
// on a tenant network with a floating IP, which liveMigrationWithNIC
// moves live between the hosts. It boots the test guest's kernel (its
// disk is blank: the kernel and initrd are files on its host, which the
// new host makes again) to keep the sandbox test short.
const movingVM = `apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata: {name: moving}
spec: {quota: {vcpus: 1, memory: 256Mi, vms: 1}}
---
apiVersion: hearth.dev/v1alpha1
kind: Network
metadata: {name: net, tenant: moving}
spec: {externalNetwork: internet}
---
apiVersion: hearth.dev/v1alpha1
kind: Subnet
metadata: {name: one, tenant: moving}
spec: {network: net, cidr: 10.20.1.0/24}
---
apiVersion: hearth.dev/v1alpha1
kind: Volume
metadata: {name: data, tenant: moving}
spec: {pool: ceph, size: 16Mi}
---
apiVersion: hearth.dev/v1alpha1
kind: VirtualMachine
metadata: {name: mover, tenant: moving}
spec:
  host: h1
  cpus: 1
  memory: 192Mi
  boot: {from: kernel, kernel: {image: testguest-kernel}, initrd: {image: testguest-initrd}, cmdline: console=ttyS0 panic=-1}
  disks: [{volume: data}]
  nics: [{network: net, subnet: one, ip: 10.20.1.10}]
---
apiVersion: hearth.dev/v1alpha1
kind: FloatingIP
metadata: {name: mover, tenant: moving}
spec: {externalNetwork: internet, target: {vm: mover}}
`

// liveMigrationWithNIC: a running VM on Ceph with a NIC and a floating IP
// moves live from h1 to h2 (hearth vm migrate) while a peer on the
// internet pings its floating IP every 100 ms: the VM is Running on h2
// with the same start time (it did not boot again), the pings go on
// after the move, and the longest silence is a few seconds at most
// (TCG guests on a shared machine: docs/BENCHMARKS.md §8 measures the
// gap properly).
func liveMigrationWithNIC(t *testing.T, s *sandboxLab) {
	if out, err := s.hearth(movingVM, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v: %s", err, tail(out))
	}
	var fip string
	servertest.Eventually(t, 4*time.Minute, func() error {
		out, err := s.hearth("", "logs", "vm/mover", "--tenant", "moving")
		if err != nil || !strings.Contains(out, "HEARTH-GUEST ready") {
			return fmt.Errorf("mover has not booted yet (%v):\n%s", err, tail(out))
		}
		var f api.FloatingIP
		if err := s.readJSON(&f, "get", "fip", "mover", "--tenant", "moving", "-o", "json"); err != nil {
			return err
		}
		if f.Status.Phase != api.FloatingIPAssociated {
			return fmt.Errorf("floating IP is %s", f.Status.Phase)
		}
		fip = f.Status.Address
		return nil
	})
	var before, after api.VirtualMachine
	if err := s.readJSON(&before, "get", "vm", "mover", "--tenant", "moving", "-o", "json"); err != nil {
		t.Fatal(err)
	}
	dst, err := netip.ParseAddr(fip)
	if err != nil {
		t.Fatalf("floating IP address %q: %v", fip, err)
	}
	p := pingtest.Start(t, s.prefix+"-internet", dst, 100*time.Millisecond)
	servertest.Eventually(t, 3*time.Minute, func() error {
		if _, got, _ := p.Counts(); got == 0 {
			desc, _ := s.hearth("", "describe", "vm", "mover", "--tenant", "moving")
			return fmt.Errorf("no answer from %s yet:\n%s", fip, tail(desc))
		}
		return nil
	})
	start := time.Now()
	if out, err := s.hearth("", "vm", "migrate", "mover", "--to", "h2", "--tenant", "moving"); err != nil {
		t.Fatalf("vm migrate: %v: %s", err, tail(out))
	}
	servertest.Eventually(t, 3*time.Minute, func() error {
		after = api.VirtualMachine{} // fields the answer leaves out must read empty
		if err := s.readJSON(&after, "get", "vm", "mover", "--tenant", "moving", "-o", "json"); err != nil {
			return err
		}
		if after.Status.Host != "h2" || after.Status.Phase != api.VMRunning || after.Status.Migration != nil {
			return fmt.Errorf("mover on %q, phase %q, migration %+v", after.Status.Host, after.Status.Phase, after.Status.Migration)
		}
		if c := after.Status.Condition(api.ConditionMigrated); c == nil || c.Status != api.ConditionTrue {
			t.Fatalf("mover runs on h2 with Migrated condition %+v; want True in the same write", c)
		}
		return nil
	})
	moved := time.Since(start)
	time.Sleep(3 * time.Second) // replies after the move
	sent, got, gap := p.Stop()
	t.Logf("moved in %s; %d pings, %d answered, longest silence %s", moved.Round(time.Millisecond), sent, got, gap.Round(time.Millisecond))
	if before.Status.StartedAt == nil || after.Status.StartedAt == nil || !after.Status.StartedAt.Equal(*before.Status.StartedAt) {
		t.Errorf("startedAt %v before the move and %v after: the guest did not carry on", before.Status.StartedAt, after.Status.StartedAt)
	}
	if gap > 5*time.Second {
		t.Errorf("the peer's pings went unanswered for %s across the move; want a few seconds at most", gap)
	}
	if out, err := s.hearth("", "delete", "vm", "mover", "--tenant", "moving"); err != nil {
		t.Errorf("delete vm mover: %v: %s", err, tail(out))
	}
}

// readJSON is getJSON, returning what goes wrong (for subtests, which
// must not fail the sandbox's test from their own goroutine).
func (s *sandboxLab) readJSON(v any, args ...string) error {
	out, err := s.hearth("", args...)
	if err != nil {
		return fmt.Errorf("hearth %s: %v: %s", strings.Join(args, " "), err, tail(out))
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("hearth %s: %v\n%s", strings.Join(args, " "), err, tail(out))
	}
	return nil
}
