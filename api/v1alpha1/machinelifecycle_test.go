package v1alpha1

import (
	"errors"
	"testing"
	"time"
)

func testMachine(name string, labels map[string]string, mac, arch, site string) *Machine {
	return &Machine{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "Machine"},
		Metadata: ObjectMeta{Name: name, UID: "uid-" + name, Labels: labels},
		Spec:     MachineSpec{MAC: mac, Architecture: arch, Site: site}}
}

// testProfile makes a profile that boots a kernel by default.
func testProfile(name string, sel MachineSelector, priority int) *MachineProfile {
	return &MachineProfile{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "MachineProfile"},
		Metadata: ObjectMeta{Name: name},
		Spec: MachineProfileSpec{Selector: sel, Priority: priority,
			ProfileBoot: ProfileBoot{Kernel: &BootFile{URL: "http://mirror/" + name + "/linux"}}}}
}

func TestSpecificity(t *testing.T) {
	tests := []struct {
		sel  MachineSelector
		want int
	}{
		{MachineSelector{}, 0},
		{MachineSelector{Sites: []string{"home"}}, 1},
		{MachineSelector{Architectures: []string{"x86_64"}}, 1},
		{MachineSelector{Architectures: []string{"x86_64"}, Sites: []string{"home"}}, 2},
		{MachineSelector{Labels: LabelSelector{"role": "storage"}}, 10},
		{MachineSelector{Labels: LabelSelector{"role": "storage", "rack": "r1"}, Sites: []string{"home"}}, 21},
		{MachineSelector{MACs: []string{"52:54:00:00:00:01"}}, 100},
		{MachineSelector{MACs: []string{"52:54:00:00:00:01"}, Labels: LabelSelector{"a": "1"}, Architectures: []string{"arm64"}, Sites: []string{"x"}}, 112},
	}
	many := LabelSelector{}
	for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"} {
		many[k] = "1"
	}
	tests = append(tests, struct {
		sel  MachineSelector
		want int
	}{MachineSelector{Labels: many}, 90})
	for _, tt := range tests {
		if got := tt.sel.Specificity(); got != tt.want {
			t.Errorf("Specificity(%s) = %d, want %d", tt.sel, got, tt.want)
		}
	}
}

func TestMatch(t *testing.T) {
	const mac = "52:54:00:aa:bb:01"
	storage := testMachine("node1", map[string]string{"role": "storage", "rack": "r1"}, mac, ArchX86_64, "home")
	named := testMachine("node1", map[string]string{"role": "storage"}, mac, ArchX86_64, "home")
	named.Spec.Profile = "rescue"
	gone := testProfile("gone", MachineSelector{MACs: []string{mac}}, 0)
	now := time.Now()
	gone.Metadata.DeletionTimestamp = &now
	armOnly := testProfile("arm-only", MachineSelector{Labels: LabelSelector{"role": "storage"}}, 50)
	armOnly.Spec.ProfileBoot = ProfileBoot{}
	armOnly.Spec.Variants = map[string]ProfileBoot{ArchARM64: {IPXEScript: "#!ipxe\nexit"}}
	unknownArch := testMachine("node2", map[string]string{"role": "storage"}, mac, "", "home")

	catchAll := MachineSelector{}
	byLabel := MachineSelector{Labels: LabelSelector{"role": "storage"}}
	byTwoLabels := MachineSelector{Labels: LabelSelector{"role": "storage", "rack": "r1"}}
	byMAC := MachineSelector{MACs: []string{"52:54:00:00:00:09", mac}}
	byArch := MachineSelector{Architectures: []string{ArchX86_64}}
	byArchSite := MachineSelector{Architectures: []string{ArchX86_64}, Sites: []string{"home"}}

	tests := []struct {
		name     string
		m        *Machine
		profiles []*MachineProfile
		want     string // profile name; "" expects an error
		reason   string
		message  string
	}{
		{name: "catch-all", m: storage, profiles: []*MachineProfile{testProfile("all", catchAll, 0)}, want: "all"},
		{name: "MAC beats labels of higher priority", m: storage,
			profiles: []*MachineProfile{testProfile("labels", byTwoLabels, 100), testProfile("mac", byMAC, 0)}, want: "mac"},
		{name: "labels beat architecture and site", m: storage,
			profiles: []*MachineProfile{testProfile("archsite", byArchSite, 100), testProfile("labels", byLabel, 0)}, want: "labels"},
		{name: "two labels beat one", m: storage,
			profiles: []*MachineProfile{testProfile("one", byLabel, 5), testProfile("two", byTwoLabels, 0)}, want: "two"},
		{name: "architecture and site beat architecture", m: storage,
			profiles: []*MachineProfile{testProfile("arch", byArch, 9), testProfile("archsite", byArchSite, 0)}, want: "archsite"},
		{name: "architecture beats catch-all", m: storage,
			profiles: []*MachineProfile{testProfile("all", catchAll, 9), testProfile("arch", byArch, 0)}, want: "arch"},
		{name: "equal specificity: priority", m: storage,
			profiles: []*MachineProfile{testProfile("low", byLabel, 1), testProfile("high", byLabel, 2)}, want: "high"},
		{name: "tie", m: storage, profiles: []*MachineProfile{testProfile("b", byArchSite, 0), testProfile("a", byArchSite, 0), testProfile("all", catchAll, 7)},
			reason: ReasonProfileConflict, message: "machine node1 matches profiles a and b equally (specificity 2, priority 0): make one more specific or set priority"},
		{name: "three-way tie", m: storage, profiles: []*MachineProfile{testProfile("c", byLabel, 3), testProfile("a", byLabel, 3), testProfile("b", byLabel, 3)},
			reason: ReasonProfileConflict, message: "machine node1 matches profiles a, b and c equally (specificity 10, priority 3): make one more specific or set priority"},
		{name: "a tie below the winner does not matter", m: storage,
			profiles: []*MachineProfile{testProfile("x", catchAll, 0), testProfile("y", catchAll, 0), testProfile("arch", byArch, 0)}, want: "arch"},
		{name: "selectors that do not match are ignored", m: storage,
			profiles: []*MachineProfile{testProfile("web", MachineSelector{Labels: LabelSelector{"role": "web"}}, 9),
				testProfile("arm", MachineSelector{Architectures: []string{ArchARM64}}, 9),
				testProfile("elsewhere", MachineSelector{Sites: []string{"colo"}}, 9),
				testProfile("other-mac", MachineSelector{MACs: []string{"52:54:00:00:00:09"}}, 9),
				testProfile("all", catchAll, 0)}, want: "all"},
		{name: "nothing matches", m: storage, profiles: []*MachineProfile{testProfile("web", MachineSelector{Labels: LabelSelector{"role": "web"}}, 0)},
			reason: ReasonNoMatch, message: "machine node1 matches no profile: give it labels a profile selects, name one in spec.profile, or add a profile that selects it"},
		{name: "no profiles at all", m: storage, reason: ReasonNoMatch},
		{name: "a profile being deleted is ignored", m: storage, profiles: []*MachineProfile{gone, testProfile("all", catchAll, 0)}, want: "all"},
		{name: "a profile without a boot for the architecture is skipped", m: storage,
			profiles: []*MachineProfile{armOnly, testProfile("all", catchAll, 0)}, want: "all"},
		{name: "and named when nothing else matches", m: storage, profiles: []*MachineProfile{armOnly},
			reason: ReasonNoMatch, message: "machine node1 matches no profile (profile arm-only selects it but has no boot for x86_64): give it labels a profile selects, name one in spec.profile, or add a profile that selects it"},
		{name: "an unknown architecture is not held against variants", m: unknownArch,
			profiles: []*MachineProfile{armOnly, testProfile("all", catchAll, 0)}, want: "arm-only"},
		{name: "spec.profile wins outright", m: named,
			profiles: []*MachineProfile{testProfile("mac", byMAC, 100), testProfile("rescue", MachineSelector{Labels: LabelSelector{"role": "web"}}, 0)}, want: "rescue"},
		{name: "spec.profile must exist", m: named, profiles: []*MachineProfile{testProfile("mac", byMAC, 100)},
			reason: ReasonProfileNotFound, message: "machine node1 names profile rescue (spec.profile), which does not exist: create it or clear spec.profile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MatchProfile(tt.m, tt.profiles)
			if tt.want != "" {
				if err != nil {
					t.Fatalf("MatchProfile: %v, want profile %s", err, tt.want)
				}
				if got.Metadata.Name != tt.want {
					t.Fatalf("MatchProfile = %s, want %s", got.Metadata.Name, tt.want)
				}
				return
			}
			var me *ProfileMatchError
			if !errors.As(err, &me) {
				t.Fatalf("MatchProfile = %v, %v; want a *ProfileMatchError", got, err)
			}
			if me.Reason != tt.reason {
				t.Errorf("reason %s, want %s", me.Reason, tt.reason)
			}
			if tt.message != "" && me.Error() != tt.message {
				t.Errorf("message\n got %s\nwant %s", me.Error(), tt.message)
			}
		})
	}
}

func TestMatchConflictNamesProfiles(t *testing.T) {
	m := testMachine("node1", nil, "52:54:00:aa:bb:01", ArchX86_64, "")
	_, err := MatchProfile(m, []*MachineProfile{testProfile("b", MachineSelector{}, 0), testProfile("a", MachineSelector{}, 0)})
	var me *ProfileMatchError
	if !errors.As(err, &me) || me.Reason != ReasonProfileConflict {
		t.Fatalf("got %v, want a conflict", err)
	}
	if len(me.Profiles) != 2 || me.Profiles[0] != "a" || me.Profiles[1] != "b" || me.Specificity != 0 || me.Priority != 0 {
		t.Errorf("conflict %+v, want profiles [a b] at specificity 0, priority 0", me)
	}
}
