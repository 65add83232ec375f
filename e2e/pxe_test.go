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
	"hearth.dev/hearth/sandbox"
	"hearth.dev/hearth/server/controllers"
	"hearth.dev/hearth/server/servertest"
)

// installProfile boots the test guest as an "installer": it reports back,
// after which the machine boots its local disk.
func (s *sandboxLab) installProfile() string {
	return fmt.Sprintf(`apiVersion: hearth.dev/v1alpha1
kind: MachineProfile
metadata: {name: testguest-install}
spec:
  autoApprove: true
  install: true
  kernel: {url: "file://%s/testguest/vmlinuz"}
  initrds:
  - {url: "file://%s/testguest/initrd.img"}
  args: "console=ttyS0 panic=-1 hearth.report={{.URLs.Report}} hearth.token={{.Token}} hearth.hostname={{.Hostname}}"
`, s.dir, s.dir)
}

// machine finds the Machine discovered for a MAC.
func (s *sandboxLab) machine(mac string) (*api.Machine, error) {
	out, err := s.hearth("", "get", "machines", "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("%v: %s", err, out)
	}
	var list struct{ Items []api.Machine }
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, err
	}
	for i := range list.Items {
		if strings.EqualFold(list.Items[i].Spec.MAC, mac) {
			return &list.Items[i], nil
		}
	}
	return nil, fmt.Errorf("no machine with MAC %s yet", mac)
}

// macOf reads the MAC `sandbox machine add` gave a machine.
func (s *sandboxLab) macOf(name string) string {
	s.t.Helper()
	out := s.must("", "sandbox", "machine", "list", "--dir", s.dir)
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == name {
			for _, x := range f[1:] {
				if strings.Count(x, ":") == 5 {
					return strings.ToLower(x)
				}
			}
		}
	}
	s.t.Fatalf("no MAC for machine %s in:\n%s", name, out)
	return ""
}

// TestSandboxPXE: diskless QEMU machines network-boot through Hearth with
// BIOS (SeaBIOS and QEMU's iPXE ROM) and UEFI (OVMF, then iPXE over
// TFTP): each is recognised by its MAC, auto-approved by its profile,
// boots the profile's kernel and initrd, and its userspace reports back;
// the install profile then switches its next boot (after a power cycle)
// to the local disk.
func TestSandboxPXE(t *testing.T) {
	s := upSandbox(t, 1)
	s.must(s.installProfile(), "apply", "-f", "-")
	for _, fw := range []string{"bios", "uefi"} {
		t.Run(fw, func(t *testing.T) {
			s := s.in(t)
			name := "pxe-" + fw
			args := []string{"sandbox", "machine", "add", name, "--dir", s.dir}
			if fw == "uefi" {
				args = append(args, "--uefi")
			}
			s.must("", args...)
			mac := s.macOf(name)
			var m *api.Machine
			servertest.Eventually(t, 5*time.Minute, func() error {
				var err error
				if m, err = s.machine(mac); err != nil {
					return err
				}
				if m.Status.Phase != api.MachineInstalled {
					return fmt.Errorf("machine %s is %q (conditions %+v)", m.Metadata.Name, m.Status.Phase, m.Status.Conditions)
				}
				return nil
			})
			if m.Status.Firmware != fw || len(m.Status.Addresses) == 0 || m.Status.InstalledAt == nil {
				t.Fatalf("machine status: %+v", m.Status)
			}
			// The Machine is the one `sandbox machine add` made, named
			// after the machine.
			if m.Metadata.Name != name {
				t.Errorf("the Machine of %s is named %s", name, m.Metadata.Name)
			}
			timeline := s.must("", "describe", "machine", m.Metadata.Name)
			for _, step := range []string{"Added", "DHCP", "boot.ipxe: boot", "artifact", "Report"} {
				if !strings.Contains(timeline, step) {
					t.Errorf("the boot timeline lacks %q:\n%s", step, timeline)
				}
			}
			if fw == "uefi" && !strings.Contains(timeline, "TFTP") {
				t.Errorf("UEFI firmware fetched no iPXE over TFTP:\n%s", timeline)
			}
			// The machine's own requests (its boot's kernel, initrd and
			// report, from the address DHCP gave it) are never refused.
			if strings.Contains(timeline, "refused") {
				t.Errorf("the boot service refused the machine's own requests:\n%s", timeline)
			}
			// The next boot of an installed machine is from its disk.
			s.must("", "sandbox", "machine", "restart", name, "--dir", s.dir)
			servertest.Eventually(t, 3*time.Minute, func() error {
				if out := s.must("", "describe", "machine", m.Metadata.Name); !strings.Contains(out, "boot.ipxe: local") {
					return fmt.Errorf("no local-disk boot served yet")
				}
				return nil
			})
			// A machine removed from the sandbox is gone from the API.
			s.must("", "sandbox", "machine", "rm", name, "--dir", s.dir)
			if _, err := s.machine(mac); err == nil {
				t.Errorf("machine %s still has a Machine after sandbox machine rm", name)
			}
		})
	}
}

// TestSandboxMachineExample is a newcomer's path through bare metal:
// `hearth sandbox machine add node1` makes the Machine node1 at once
// (describe finds it by the name given), applying
// examples/sandbox/machines.yaml boots it to phase Ready (it reports its
// SSH host key back), and `sandbox machine rm` deletes the Machine.
func TestSandboxMachineExample(t *testing.T) {
	s := upSandbox(t, 1)
	s.must("", "sandbox", "machine", "add", "node1", "--dir", s.dir)
	mac := s.macOf("node1")
	out := s.must("", "describe", "machine", "node1")
	for _, want := range []string{mac, sandbox.MachineLabel + "=" + sandbox.MachineLabelValue, "Added"} {
		if !strings.Contains(strings.ToLower(out), strings.ToLower(want)) {
			t.Errorf("describe machine node1 lacks %q:\n%s", want, out)
		}
	}

	// The example names the default sandbox directory; this sandbox has
	// its own, as the example's comment tells a person to do.
	example, err := os.ReadFile("../examples/sandbox/machines.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const defaultDir = "/var/lib/hearth-sandbox/"
	if defaultDir != sandbox.DefaultDir+"/" || strings.Count(string(example), "file://"+defaultDir) != 2 {
		t.Fatalf("examples/sandbox/machines.yaml should name the kernel and initrd under the sandbox's default directory %s", sandbox.DefaultDir)
	}
	s.must(strings.ReplaceAll(string(example), defaultDir, s.dir+"/"), "apply", "-f", "-")

	var m *api.Machine
	servertest.Eventually(t, 4*time.Minute, func() error {
		if m, err = s.machine(mac); err != nil {
			return err
		}
		if m.Status.Phase != api.MachineReady {
			return fmt.Errorf("machine %s is %q (conditions %+v)", m.Metadata.Name, m.Status.Phase, m.Status.Conditions)
		}
		return nil
	})
	if m.Metadata.Name != "node1" || m.Status.MatchedProfile != "sandbox-testguest" || len(m.Status.SSHHostKeys) == 0 || len(m.Status.Addresses) == 0 {
		t.Errorf("machine: name %s, profile %q, host keys %v, addresses %v", m.Metadata.Name, m.Status.MatchedProfile, m.Status.SSHHostKeys, m.Status.Addresses)
	}
	if c := m.Status.Condition(controllers.ConditionReported); c == nil || c.Status != api.ConditionTrue {
		t.Errorf("Reported condition of a Ready machine: %+v", c)
	}
	// The guest says so once the boot service has answered its report,
	// a moment after the report made the machine Ready.
	servertest.Eventually(t, 30*time.Second, func() error {
		console, _ := os.ReadFile(filepath.Join(s.dir, "machines", "node1", "console.log"))
		for _, want := range []string{"HEARTH-GUEST hostname=node1", "HEARTH-GUEST report=ok"} {
			if !strings.Contains(string(console), want) {
				return fmt.Errorf("node1's console lacks %q", want)
			}
		}
		return nil
	})
	// Only the Machine the sandbox made: the boot service discovered no
	// other for its MAC.
	if out := s.must("", "get", "machines", "-o", "name"); strings.TrimSpace(out) != "machine/node1" {
		t.Errorf("get machines -o name:\n%s\nwant only machine/node1", out)
	}

	s.must("", "sandbox", "machine", "rm", "node1", "--dir", s.dir)
	if out, err := s.hearth("", "get", "machine", "node1"); err == nil || !strings.Contains(out, "not found") {
		t.Errorf("get machine node1 after sandbox machine rm: %v\n%s", err, out)
	}
}
