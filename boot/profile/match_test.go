package profile

import (
	"errors"
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

func TestSpecificity(t *testing.T) {
	tests := []struct {
		sel  api.MachineSelector
		want int
	}{
		{api.MachineSelector{}, 0},
		{api.MachineSelector{Sites: []string{"home"}}, 1},
		{api.MachineSelector{Architectures: []string{"x86_64"}}, 1},
		{api.MachineSelector{Architectures: []string{"x86_64"}, Sites: []string{"home"}}, 2},
		{api.MachineSelector{Labels: api.LabelSelector{"role": "storage"}}, 10},
		{api.MachineSelector{Labels: api.LabelSelector{"role": "storage", "rack": "r1"}, Sites: []string{"home"}}, 21},
		{api.MachineSelector{MACs: []string{"52:54:00:00:00:01"}}, 100},
		{api.MachineSelector{MACs: []string{"52:54:00:00:00:01"}, Labels: api.LabelSelector{"a": "1"}, Architectures: []string{"arm64"}, Sites: []string{"x"}}, 112},
	}
	many := api.LabelSelector{}
	for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"} {
		many[k] = "1"
	}
	tests = append(tests, struct {
		sel  api.MachineSelector
		want int
	}{api.MachineSelector{Labels: many}, 90})
	for _, tt := range tests {
		if got := Specificity(tt.sel); got != tt.want {
			t.Errorf("Specificity(%s) = %d, want %d", tt.sel, got, tt.want)
		}
	}
}

func TestMatch(t *testing.T) {
	const mac = "52:54:00:aa:bb:01"
	storage := machine("node1", map[string]string{"role": "storage", "rack": "r1"}, mac, api.ArchX86_64, "home")
	named := machine("node1", map[string]string{"role": "storage"}, mac, api.ArchX86_64, "home")
	named.Spec.Profile = "rescue"
	gone := prof("gone", api.MachineSelector{MACs: []string{mac}}, 0)
	now := time.Now()
	gone.Metadata.DeletionTimestamp = &now
	armOnly := prof("arm-only", api.MachineSelector{Labels: api.LabelSelector{"role": "storage"}}, 50)
	armOnly.Spec.ProfileBoot = api.ProfileBoot{}
	armOnly.Spec.Variants = map[string]api.ProfileBoot{api.ArchARM64: {IPXEScript: "#!ipxe\nexit"}}
	unknownArch := machine("node2", map[string]string{"role": "storage"}, mac, "", "home")

	catchAll := api.MachineSelector{}
	byLabel := api.MachineSelector{Labels: api.LabelSelector{"role": "storage"}}
	byTwoLabels := api.MachineSelector{Labels: api.LabelSelector{"role": "storage", "rack": "r1"}}
	byMAC := api.MachineSelector{MACs: []string{"52:54:00:00:00:09", mac}}
	byArch := api.MachineSelector{Architectures: []string{api.ArchX86_64}}
	byArchSite := api.MachineSelector{Architectures: []string{api.ArchX86_64}, Sites: []string{"home"}}

	tests := []struct {
		name     string
		m        *api.Machine
		profiles []*api.MachineProfile
		want     string // profile name; "" expects an error
		reason   string
		message  string
	}{
		{name: "catch-all", m: storage, profiles: []*api.MachineProfile{prof("all", catchAll, 0)}, want: "all"},
		{name: "MAC beats labels of higher priority", m: storage,
			profiles: []*api.MachineProfile{prof("labels", byTwoLabels, 100), prof("mac", byMAC, 0)}, want: "mac"},
		{name: "labels beat architecture and site", m: storage,
			profiles: []*api.MachineProfile{prof("archsite", byArchSite, 100), prof("labels", byLabel, 0)}, want: "labels"},
		{name: "two labels beat one", m: storage,
			profiles: []*api.MachineProfile{prof("one", byLabel, 5), prof("two", byTwoLabels, 0)}, want: "two"},
		{name: "architecture and site beat architecture", m: storage,
			profiles: []*api.MachineProfile{prof("arch", byArch, 9), prof("archsite", byArchSite, 0)}, want: "archsite"},
		{name: "architecture beats catch-all", m: storage,
			profiles: []*api.MachineProfile{prof("all", catchAll, 9), prof("arch", byArch, 0)}, want: "arch"},
		{name: "equal specificity: priority", m: storage,
			profiles: []*api.MachineProfile{prof("low", byLabel, 1), prof("high", byLabel, 2)}, want: "high"},
		{name: "tie", m: storage, profiles: []*api.MachineProfile{prof("b", byArchSite, 0), prof("a", byArchSite, 0), prof("all", catchAll, 7)},
			reason: ReasonConflict, message: "machine node1 matches profiles a and b equally (specificity 2, priority 0): make one more specific or set priority"},
		{name: "three-way tie", m: storage, profiles: []*api.MachineProfile{prof("c", byLabel, 3), prof("a", byLabel, 3), prof("b", byLabel, 3)},
			reason: ReasonConflict, message: "machine node1 matches profiles a, b and c equally (specificity 10, priority 3): make one more specific or set priority"},
		{name: "a tie below the winner does not matter", m: storage,
			profiles: []*api.MachineProfile{prof("x", catchAll, 0), prof("y", catchAll, 0), prof("arch", byArch, 0)}, want: "arch"},
		{name: "selectors that do not match are ignored", m: storage,
			profiles: []*api.MachineProfile{prof("web", api.MachineSelector{Labels: api.LabelSelector{"role": "web"}}, 9),
				prof("arm", api.MachineSelector{Architectures: []string{api.ArchARM64}}, 9),
				prof("elsewhere", api.MachineSelector{Sites: []string{"colo"}}, 9),
				prof("other-mac", api.MachineSelector{MACs: []string{"52:54:00:00:00:09"}}, 9),
				prof("all", catchAll, 0)}, want: "all"},
		{name: "nothing matches", m: storage, profiles: []*api.MachineProfile{prof("web", api.MachineSelector{Labels: api.LabelSelector{"role": "web"}}, 0)},
			reason: ReasonNoMatch, message: "machine node1 matches no profile: give it labels a profile selects, name one in spec.profile, or add a profile that selects it"},
		{name: "no profiles at all", m: storage, reason: ReasonNoMatch},
		{name: "a profile being deleted is ignored", m: storage, profiles: []*api.MachineProfile{gone, prof("all", catchAll, 0)}, want: "all"},
		{name: "a profile without a boot for the architecture is skipped", m: storage,
			profiles: []*api.MachineProfile{armOnly, prof("all", catchAll, 0)}, want: "all"},
		{name: "and named when nothing else matches", m: storage, profiles: []*api.MachineProfile{armOnly},
			reason: ReasonNoMatch, message: "machine node1 matches no profile (profile arm-only selects it but has no boot for x86_64): give it labels a profile selects, name one in spec.profile, or add a profile that selects it"},
		{name: "an unknown architecture is not held against variants", m: unknownArch,
			profiles: []*api.MachineProfile{armOnly, prof("all", catchAll, 0)}, want: "arm-only"},
		{name: "spec.profile wins outright", m: named,
			profiles: []*api.MachineProfile{prof("mac", byMAC, 100), prof("rescue", api.MachineSelector{Labels: api.LabelSelector{"role": "web"}}, 0)}, want: "rescue"},
		{name: "spec.profile must exist", m: named, profiles: []*api.MachineProfile{prof("mac", byMAC, 100)},
			reason: ReasonProfileNotFound, message: "machine node1 names profile rescue (spec.profile), which does not exist: create it or clear spec.profile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Match(tt.m, tt.profiles)
			if tt.want != "" {
				if err != nil {
					t.Fatalf("Match: %v, want profile %s", err, tt.want)
				}
				if got.Metadata.Name != tt.want {
					t.Fatalf("Match = %s, want %s", got.Metadata.Name, tt.want)
				}
				return
			}
			var me *MatchError
			if !errors.As(err, &me) {
				t.Fatalf("Match = %v, %v; want a *MatchError", got, err)
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
	m := machine("node1", nil, "52:54:00:aa:bb:01", api.ArchX86_64, "")
	_, err := Match(m, []*api.MachineProfile{prof("b", api.MachineSelector{}, 0), prof("a", api.MachineSelector{}, 0)})
	var me *MatchError
	if !errors.As(err, &me) || me.Reason != ReasonConflict {
		t.Fatalf("got %v, want a conflict", err)
	}
	if len(me.Profiles) != 2 || me.Profiles[0] != "a" || me.Profiles[1] != "b" || me.Specificity != 0 || me.Priority != 0 {
		t.Errorf("conflict %+v, want profiles [a b] at specificity 0, priority 0", me)
	}
}
