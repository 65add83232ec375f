package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server"
	"hearth.dev/hearth/server/controllers"
	"hearth.dev/hearth/server/servertest"
)

func machineProfile(name string, sel api.MachineSelector, mod func(*api.MachineProfileSpec)) *api.MachineProfile {
	p := &api.MachineProfile{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "MachineProfile"}, Metadata: api.ObjectMeta{Name: name},
		Spec: api.MachineProfileSpec{Selector: sel, ProfileBoot: api.ProfileBoot{Kernel: &api.BootFile{URL: "http://mirror.example/" + name + "/linux"}}}}
	if mod != nil {
		mod(&p.Spec)
	}
	return p
}

// discovered is a Machine as the boot service creates it for a new MAC.
func discovered(name, mac, site string) *api.Machine {
	return &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"}, Metadata: api.ObjectMeta{Name: name},
		Spec: api.MachineSpec{MAC: mac, Architecture: api.ArchX86_64, Site: site}}
}

// waitMachine waits until the machine satisfies check.
func waitMachine(t *testing.T, c *client.Client, name string, check func(*api.Machine) error) *api.Machine {
	t.Helper()
	var m *api.Machine
	servertest.Eventually(t, 15*time.Second, func() error {
		obj, err := c.Get(context.Background(), "Machine", "", name)
		if err != nil {
			return err
		}
		m = obj.(*api.Machine)
		if err := check(m); err != nil {
			return fmt.Errorf("%w; status %s", err, servertest.JSON(m.Status))
		}
		return nil
	})
	return m
}

func phase(want string) func(*api.Machine) error {
	return func(m *api.Machine) error {
		if m.Status.Phase != want {
			return fmt.Errorf("phase %q, want %q", m.Status.Phase, want)
		}
		return nil
	}
}

func condition(typ string, status api.ConditionStatus, reason string) func(*api.Machine) error {
	return func(m *api.Machine) error {
		c := m.Status.Condition(typ)
		if c == nil || c.Status != status || c.Reason != reason {
			return fmt.Errorf("condition %s is %+v, want %s/%s", typ, c, status, reason)
		}
		return nil
	}
}

func all(checks ...func(*api.Machine) error) func(*api.Machine) error {
	return func(m *api.Machine) error {
		for _, c := range checks {
			if err := c(m); err != nil {
				return err
			}
		}
		return nil
	}
}

// machineEvents waits until the machine's events include every reason.
func machineEvents(t *testing.T, c *client.Client, name string, reasons ...string) []*api.Event {
	t.Helper()
	var evs []*api.Event
	servertest.Eventually(t, 10*time.Second, func() error {
		objs, _, err := c.List(context.Background(), "Event", "", client.ListOptions{FieldSelector: "involvedObject.kind=Machine,involvedObject.name=" + name})
		if err != nil {
			return err
		}
		evs = evs[:0]
		var got []string
		for _, o := range objs {
			e := o.(*api.Event)
			evs = append(evs, e)
			got = append(got, e.Spec.Type+"/"+e.Spec.Reason)
		}
		for _, r := range reasons {
			if !slices.Contains(got, r) {
				return fmt.Errorf("no %s event among %v", r, got)
			}
		}
		return nil
	})
	return evs
}

// TestMachineLifecycle follows a machine the boot service discovered
// through matching, approval, installation, reinstallation; the host's
// writes are what the boot service writes.
func TestMachineLifecycle(t *testing.T) {
	env := servertest.Start(t)
	ctx := servertest.Ctx(t)
	boot := env.BootService("boot1")
	if _, err := env.Admin.Create(ctx, machineProfile("debian", api.MachineSelector{Architectures: []string{api.ArchX86_64}},
		func(s *api.MachineProfileSpec) { s.Install = true })); err != nil {
		t.Fatal(err)
	}
	const name = "m-525400aabb01"
	if _, err := boot.Create(ctx, discovered(name, "52:54:00:aa:bb:01", "")); err != nil {
		t.Fatalf("the boot service creating a discovered machine: %v", err)
	}
	m := waitMachine(t, env.Admin, name, all(phase(api.MachineDiscovered),
		condition(controllers.ConditionProfileMatched, api.ConditionTrue, "Matched"),
		condition(controllers.ConditionApproved, api.ConditionFalse, "WaitingForApproval"),
		condition(controllers.ConditionInstalled, api.ConditionFalse, "NotInstalled")))
	if m.Status.MatchedProfile != "debian" || !strings.Contains(m.Status.Condition(controllers.ConditionApproved).Message, "hearth machine approve "+name) {
		t.Errorf("discovered machine: %s", servertest.JSON(m.Status))
	}

	// The boot service may not decide the phase, nor approve.
	if _, err := boot.Patch(ctx, "Machine", "", name, map[string]any{"status": map[string]any{"phase": api.MachineInstalled}}, true); !api.IsForbidden(err) {
		t.Errorf("host writing the phase: got %v, want Forbidden", err)
	}
	if _, err := boot.Patch(ctx, "Machine", "", name, map[string]any{"spec": map[string]any{"approved": true}}, false); !api.IsForbidden(err) {
		t.Errorf("host approving: got %v, want Forbidden", err)
	}

	// `hearth machine approve` sends this patch.
	if _, err := env.Admin.Patch(ctx, "Machine", "", name, map[string]any{"spec": map[string]any{"approved": true}}, false); err != nil {
		t.Fatal(err)
	}
	waitMachine(t, env.Admin, name, all(phase(api.MachineApproved), condition(controllers.ConditionApproved, api.ConditionTrue, "Approved")))

	// It fetches the installer: Provisioning.
	if _, err := boot.Patch(ctx, "Machine", "", name, map[string]any{"status": map[string]any{
		"lastBoot": time.Now().UTC(), "lastSeen": time.Now().UTC(), "firmware": api.FirmwareBIOS, "addresses": []string{"10.0.0.50"}}}, true); err != nil {
		t.Fatalf("the boot service recording a boot: %v", err)
	}
	waitMachine(t, env.Admin, name, phase(api.MachineProvisioning))

	// The installer reports: Installed.
	if _, err := boot.Patch(ctx, "Machine", "", name, map[string]any{"status": map[string]any{
		"installedAt": time.Now().UTC(), "sshHostKeys": []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey root@node"}}}, true); err != nil {
		t.Fatalf("the boot service recording the report: %v", err)
	}
	waitMachine(t, env.Admin, name, all(phase(api.MachineInstalled), condition(controllers.ConditionInstalled, api.ConditionTrue, "Installed")))

	// `hearth machine reinstall` sends this patch: back to Approved until
	// it boots the installer again, then Provisioning, then Installed.
	if _, err := env.Admin.Patch(ctx, "Machine", "", name, map[string]any{"spec": map[string]any{"reinstallRequested": time.Now().UTC()}}, false); err != nil {
		t.Fatal(err)
	}
	waitMachine(t, env.Admin, name, all(phase(api.MachineApproved), condition(controllers.ConditionInstalled, api.ConditionFalse, "ReinstallRequested")))
	if _, err := boot.Patch(ctx, "Machine", "", name, map[string]any{"status": map[string]any{"lastBoot": time.Now().UTC()}}, true); err != nil {
		t.Fatal(err)
	}
	waitMachine(t, env.Admin, name, phase(api.MachineProvisioning))
	if _, err := boot.Patch(ctx, "Machine", "", name, map[string]any{"status": map[string]any{"installedAt": time.Now().UTC()}}, true); err != nil {
		t.Fatal(err)
	}
	waitMachine(t, env.Admin, name, phase(api.MachineInstalled))

	evs := machineEvents(t, env.Admin, name, "Normal/ProfileMatched", "Normal/Approved", "Normal/InstallStarted", "Normal/Installed", "Normal/ReinstallRequested")
	count := map[string]int{}
	for _, e := range evs {
		count[e.Spec.Reason] += e.Spec.Count
	}
	if count["InstallStarted"] != 2 || count["Installed"] != 2 || count["Approved"] != 1 || count["ProfileMatched"] != 1 {
		t.Errorf("event counts %v, want two installs, one approval, one match", count)
	}

	// The profile counts its machines.
	servertest.Eventually(t, 10*time.Second, func() error {
		p, err := env.Admin.Get(ctx, "MachineProfile", "", "debian")
		if err != nil {
			return err
		}
		if n := p.(*api.MachineProfile).Status.Machines; n != 1 {
			return fmt.Errorf("status.machines %d, want 1", n)
		}
		return nil
	})
}

// TestMachineProfileConflict: two profiles matching equally are a
// condition and a warning naming both, until one is made to win.
func TestMachineProfileConflict(t *testing.T) {
	env := servertest.Start(t)
	ctx := servertest.Ctx(t)
	boot := env.BootService("boot1")
	sel := api.MachineSelector{Architectures: []string{api.ArchX86_64}, Sites: []string{"home"}}
	for _, n := range []string{"alpha", "beta"} {
		if _, err := env.Admin.Create(ctx, machineProfile(n, sel, nil)); err != nil {
			t.Fatal(err)
		}
	}
	const name = "m-525400aabb02"
	if _, err := boot.Create(ctx, discovered(name, "52:54:00:aa:bb:02", "home")); err != nil {
		t.Fatal(err)
	}
	m := waitMachine(t, env.Admin, name, all(phase(api.MachineDiscovered), condition(controllers.ConditionProfileMatched, api.ConditionFalse, "ProfileConflict")))
	want := "machine " + name + " matches profiles alpha and beta equally (specificity 2, priority 0): make one more specific or set priority"
	if got := m.Status.Condition(controllers.ConditionProfileMatched).Message; got != want || m.Status.MatchedProfile != "" {
		t.Errorf("condition message %q (matched %q), want %q", got, m.Status.MatchedProfile, want)
	}
	evs := machineEvents(t, env.Admin, name, "Warning/ProfileConflict")
	for _, e := range evs {
		if e.Spec.Reason == "ProfileConflict" && e.Spec.Message != want {
			t.Errorf("event message %q, want %q", e.Spec.Message, want)
		}
	}

	// Priority settles it.
	if _, err := env.Admin.Patch(ctx, "MachineProfile", "", "beta", map[string]any{"spec": map[string]any{"priority": 10}}, false); err != nil {
		t.Fatal(err)
	}
	m = waitMachine(t, env.Admin, name, condition(controllers.ConditionProfileMatched, api.ConditionTrue, "Matched"))
	if m.Status.MatchedProfile != "beta" {
		t.Errorf("matched %q, want beta", m.Status.MatchedProfile)
	}

	// A profile named in spec.profile that does not exist.
	if _, err := env.Admin.Patch(ctx, "Machine", "", name, map[string]any{"spec": map[string]any{"profile": "rescue"}}, false); err != nil {
		t.Fatal(err)
	}
	waitMachine(t, env.Admin, name, condition(controllers.ConditionProfileMatched, api.ConditionFalse, "ProfileNotFound"))
	if _, err := env.Admin.Create(ctx, machineProfile("rescue", api.MachineSelector{Labels: api.LabelSelector{"never": "x"}}, nil)); err != nil {
		t.Fatal(err)
	}
	m = waitMachine(t, env.Admin, name, condition(controllers.ConditionProfileMatched, api.ConditionTrue, "Named"))
	if m.Status.MatchedProfile != "rescue" {
		t.Errorf("matched %q, want rescue", m.Status.MatchedProfile)
	}
}

// TestMachineStateless: an autoApprove stateless profile boots without a
// person, and each boot is Ready once the system reports its host keys.
func TestMachineStateless(t *testing.T) {
	env := servertest.Start(t)
	ctx := servertest.Ctx(t)
	boot := env.BootService("boot1")
	const mac = "52:54:00:aa:bb:03"
	if _, err := env.Admin.Create(ctx, machineProfile("ramroot", api.MachineSelector{MACs: []string{mac}},
		func(s *api.MachineProfileSpec) { s.AutoApprove = true })); err != nil {
		t.Fatal(err)
	}
	const name = "m-525400aabb03"
	if _, err := boot.Create(ctx, discovered(name, mac, "")); err != nil {
		t.Fatal(err)
	}
	m := waitMachine(t, env.Admin, name, all(phase(api.MachineApproved), condition(controllers.ConditionApproved, api.ConditionTrue, "AutoApproved")))
	if m.Status.Condition(controllers.ConditionInstalled) != nil {
		t.Errorf("a stateless machine has an Installed condition: %s", servertest.JSON(m.Status))
	}
	keys := []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey root@ram"}
	for range 2 {
		// Each boot clears the host keys (a RAM root makes new ones).
		if _, err := boot.Patch(ctx, "Machine", "", name, map[string]any{"status": map[string]any{"lastBoot": time.Now().UTC(), "sshHostKeys": nil}}, true); err != nil {
			t.Fatal(err)
		}
		waitMachine(t, env.Admin, name, all(phase(api.MachineProvisioning), condition(controllers.ConditionReported, api.ConditionFalse, controllers.ReasonWaitingForReport)))
		if _, err := boot.Patch(ctx, "Machine", "", name, map[string]any{"status": map[string]any{"sshHostKeys": keys, "lastSeen": time.Now().UTC()}}, true); err != nil {
			t.Fatal(err)
		}
		waitMachine(t, env.Admin, name, all(phase(api.MachineReady), condition(controllers.ConditionReported, api.ConditionTrue, "Reported")))
	}
	machineEvents(t, env.Admin, name, "Normal/ProfileMatched", "Normal/Approved", "Normal/Booting", "Normal/Ready")
	// The event follows the status write that made the machine Ready, so
	// the second boot's count may land a moment after the phase.
	servertest.Eventually(t, 10*time.Second, func() error {
		evs, _, err := env.Admin.List(ctx, "Event", "", client.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			return err
		}
		for _, o := range evs {
			if e := o.(*api.Event); e.Spec.Reason == "Ready" && e.Spec.Count != 2 {
				return fmt.Errorf("Ready event count %d, want 2 (one per boot)", e.Spec.Count)
			}
		}
		return nil
	})
}

// TestStaleDiscoveredMachinesAreCollected: a machine waiting in
// Discovered that nobody touched and the boot service has not heard from
// for the server's --discovered-machine-ttl is deleted, with an event;
// one seen lately, or one a person labelled, named or approved, stays.
func TestStaleDiscoveredMachinesAreCollected(t *testing.T) {
	const ttl = time.Hour
	env := servertest.Start(t, func(c *server.Config) { c.DiscoveredMachineTTL = ttl })
	ctx := servertest.Ctx(t)
	boot := env.BootService("boot1")
	now := time.Now().UTC()
	machines := []struct {
		name     string
		lastSeen time.Time
		person   map[string]any // a person's merge patch
		kept     bool
	}{
		{"stale", now.Add(-2 * ttl), nil, false},
		{"stale-soon", now.Add(-ttl + 3*time.Second), nil, false}, // collected when its time comes
		{"recent", now, nil, true},
		{"labelled", now.Add(-2 * ttl), map[string]any{"metadata": map[string]any{"labels": map[string]any{"rack": "r1"}}}, true},
		{"named", now.Add(-2 * ttl), map[string]any{"spec": map[string]any{"hostname": "db1"}}, true},
		{"approved", now.Add(-2 * ttl), map[string]any{"spec": map[string]any{"approved": true}}, true},
	}
	for i, m := range machines {
		// A person's changes come first, so nothing is collected before
		// the person's mark is on it.
		obj := discovered(m.name, fmt.Sprintf("52:54:00:aa:cc:%02x", i), "")
		if m.person != nil {
			if _, err := env.Admin.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
			if _, err := env.Admin.Patch(ctx, "Machine", "", m.name, m.person, false); err != nil {
				t.Fatal(err)
			}
		} else if _, err := boot.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
		if _, err := boot.Patch(ctx, "Machine", "", m.name, map[string]any{"status": map[string]any{"lastSeen": m.lastSeen}}, true); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range machines {
		if m.kept {
			continue
		}
		servertest.Eventually(t, 20*time.Second, func() error {
			if _, err := env.Admin.Get(ctx, "Machine", "", m.name); !api.IsNotFound(err) {
				return fmt.Errorf("machine %s is still there (%v)", m.name, err)
			}
			return nil
		})
		evs := machineEvents(t, env.Admin, m.name, "Normal/DiscoveredExpired")
		for _, e := range evs {
			if e.Spec.Reason == "DiscoveredExpired" && !strings.Contains(e.Spec.Message, "--discovered-machine-ttl") {
				t.Errorf("event: %s", e.Spec.Message)
			}
		}
	}
	for _, m := range machines {
		if !m.kept {
			continue
		}
		if _, err := env.Admin.Get(ctx, "Machine", "", m.name); err != nil {
			t.Errorf("machine %s was collected: %v", m.name, err)
		}
	}
}
