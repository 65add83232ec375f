package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
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
// TFTP): each is discovered, auto-approved by its profile, boots the
// profile's kernel and initrd, and its userspace reports back; the
// install profile then switches its next boot to the local disk.
func TestSandboxPXE(t *testing.T) {
	s := upSandbox(t, 1)
	s.must(s.installProfile(), "apply", "-f", "-")
	for _, fw := range []string{"bios", "uefi"} {
		t.Run(fw, func(t *testing.T) {
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
			timeline := s.must("", "describe", "machine", m.Metadata.Name)
			for _, step := range []string{"Discovered", "DHCP", "boot.ipxe: boot", "artifact", "Report"} {
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
			s.must("", "sandbox", "machine", "rm", name, "--dir", s.dir)
			s.must("", args...)
			servertest.Eventually(t, 3*time.Minute, func() error {
				if out := s.must("", "describe", "machine", m.Metadata.Name); !strings.Contains(out, "boot.ipxe: local") {
					return fmt.Errorf("no local-disk boot served yet")
				}
				return nil
			})
			s.must("", "sandbox", "machine", "rm", name, "--dir", s.dir)
		})
	}
}
