package auth

import (
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

func kind(t *testing.T, name string) *api.KindInfo {
	t.Helper()
	k, err := api.KindByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestAuthorizeUsers covers the tenant rules briefly: what each role may
// do in its tenant, in another, and on cluster objects.
func TestAuthorizeUsers(t *testing.T) {
	var (
		admin        = &Principal{Name: "admin", Role: api.RoleClusterAdmin}
		viewer       = &Principal{Name: "auditor", Role: api.RoleViewer}
		tenantAdmin  = &Principal{Name: "ta", Role: api.RoleTenantAdmin, Tenant: "lab"}
		member       = &Principal{Name: "mem", Role: api.RoleTenantMember, Tenant: "lab"}
		tenantViewer = &Principal{Name: "tv", Role: api.RoleViewer, Tenant: "lab"}
		join         = &Principal{Name: "join", Join: true}
	)
	user := func(name, tenant string, role api.Role) *api.User {
		return &api.User{Metadata: api.ObjectMeta{Name: name}, Spec: api.UserSpec{Tenant: tenant, Role: role}}
	}
	tests := []struct {
		name string
		p    *Principal
		r    Request
		ok   bool
		why  string
	}{
		{"admin writes anywhere", admin, Request{Verb: Create, Kind: kind(t, "Network"), Tenant: "other", Name: "n"}, true, ""},
		{"admin writes cluster objects", admin, Request{Verb: Update, Kind: kind(t, "Machine"), Name: "node1"}, true, ""},
		{"cluster viewer reads everything", viewer, Request{Verb: List, Kind: kind(t, "Network"), AllTenants: true}, true, ""},
		{"cluster viewer writes nothing", viewer, Request{Verb: Create, Kind: kind(t, "Network"), Tenant: "lab"}, false, "viewers may not change anything"},
		{"member writes in its tenant", member, Request{Verb: Create, Kind: kind(t, "Network"), Tenant: "lab", Name: "n"}, true, ""},
		{"member in another tenant", member, Request{Verb: Get, Kind: kind(t, "Network"), Tenant: "other", Name: "n"}, false, "belongs to another tenant"},
		{"member across tenants", member, Request{Verb: List, Kind: kind(t, "Network"), AllTenants: true}, false, "only cluster-wide users"},
		{"member reads no cluster infrastructure", member, Request{Verb: Get, Kind: kind(t, "Host"), Name: "h1"}, false, "cluster infrastructure"},
		{"member creates no machines", member, Request{Verb: Create, Kind: kind(t, "Machine"), Name: "node1"}, false, "cluster infrastructure"},
		{"member reads no storage pools", member, Request{Verb: Get, Kind: kind(t, "StoragePool"), Name: "ceph"}, false, "cluster infrastructure"},
		{"tenant admin lists no storage pools", tenantAdmin, Request{Verb: List, Kind: kind(t, "StoragePool")}, false, "cluster infrastructure"},
		{"tenant admin creates no storage pools", tenantAdmin, Request{Verb: Create, Kind: kind(t, "StoragePool"), Name: "mine"}, false, "cluster infrastructure"},
		{"admin creates storage pools", admin, Request{Verb: Create, Kind: kind(t, "StoragePool"), Name: "ceph"}, true, ""},
		{"member reads its Tenant", member, Request{Verb: Get, Kind: kind(t, "Tenant"), Name: "lab"}, true, ""},
		{"member lists Tenants (filtered)", member, Request{Verb: List, Kind: kind(t, "Tenant")}, true, ""},
		{"member reads no other Tenant", member, Request{Verb: Get, Kind: kind(t, "Tenant"), Name: "other"}, false, "own Tenant"},
		{"member changes no Tenant", member, Request{Verb: Update, Kind: kind(t, "Tenant"), Name: "lab"}, false, "own Tenant"},
		{"shared images are readable", member, Request{Verb: Get, Kind: kind(t, "Image"), Name: "debian"}, true, ""},
		{"shared images are not writable", member, Request{Verb: Create, Kind: kind(t, "Image"), Name: "debian"}, false, "cluster admins"},
		{"cluster events are not readable", member, Request{Verb: Get, Kind: kind(t, "Event"), Name: "h1-x"}, false, "cluster admins"},
		{"member reads its own User", member, Request{Verb: Get, Kind: kind(t, "User"), Name: "mem"}, true, ""},
		{"member manages no users", member, Request{Verb: List, Kind: kind(t, "User")}, false, "only tenant admins"},
		{"tenant admin creates a user", tenantAdmin, Request{Verb: Create, Kind: kind(t, "User"), Name: "new", New: user("new", "lab", api.RoleTenantMember)}, true, ""},
		{"tenant admin grants no cluster-admin", tenantAdmin, Request{Verb: Create, Kind: kind(t, "User"), Name: "new", New: user("new", "lab", api.RoleClusterAdmin)}, false, "may not grant cluster-admin"},
		{"tenant admin leaves other tenants' users", tenantAdmin, Request{Verb: Update, Kind: kind(t, "User"), Name: "x", Stored: user("x", "other", api.RoleTenantMember), New: user("x", "lab", api.RoleTenantMember)}, false, "another tenant"},
		{"tenant viewer reads", tenantViewer, Request{Verb: Get, Kind: kind(t, "VirtualMachine"), Tenant: "lab", Name: "vm"}, true, ""},
		{"tenant viewer writes nothing", tenantViewer, Request{Verb: Delete, Kind: kind(t, "VirtualMachine"), Tenant: "lab", Name: "vm"}, false, "viewers"},
		// Status is what Hearth observed: a tenant's people never write
		// it, whatever their role (an image's checksum decides which
		// bytes its readers get).
		{"member writes no status", member, Request{Verb: UpdateStatus, Kind: kind(t, "Image"), Tenant: "lab", Name: "disk"}, false, "boot services and controllers only"},
		{"tenant admin writes no status", tenantAdmin, Request{Verb: UpdateStatus, Kind: kind(t, "VirtualMachine"), Tenant: "lab", Name: "vm"}, false, "boot services and controllers only"},
		{"admin writes status", admin, Request{Verb: UpdateStatus, Kind: kind(t, "Image"), Tenant: "lab", Name: "disk"}, true, ""},
		{"a join token does nothing else", join, Request{Verb: Get, Kind: kind(t, "Network"), Tenant: "lab", Name: "n"}, false, "only register a host"},
	}
	for _, tt := range tests {
		err := Authorize(tt.p, tt.r)
		if (err == nil) != tt.ok || (err != nil && !strings.Contains(err.Error(), tt.why)) {
			t.Errorf("%s: Authorize = %v, want ok=%v (%q)", tt.name, err, tt.ok, tt.why)
		}
		if err != nil && !api.IsForbidden(err) {
			t.Errorf("%s: %v is not Forbidden", tt.name, err)
		}
	}
}

// TestAuthorizeHost covers what host credentials may do: an agent's reads
// what it needs and writes its own Host's status, the status of objects
// placed on it and events about them; a boot service's creates discovered
// Machines and writes their observed facts and events.
func TestAuthorizeHost(t *testing.T) {
	h1 := &Principal{Name: "host/h1", Host: "h1"}
	boot := &Principal{Name: "boot/boot", Boot: "boot"}
	host := func(name string) *api.Host {
		return &api.Host{TypeMeta: api.TypeMeta{Kind: "Host"}, Metadata: api.ObjectMeta{Name: name, UID: "uid-" + name}}
	}
	event := func(source, tenant string, about api.Object) *api.Event {
		m := about.GetMetadata()
		ev := &api.Event{TypeMeta: api.TypeMeta{Kind: "Event"}, Metadata: api.ObjectMeta{Name: "e", Tenant: tenant},
			Spec: api.EventSpec{Source: source, Reason: "Started",
				InvolvedObject: api.ObjectReference{Kind: about.GetTypeMeta().Kind, Name: m.Name, Tenant: m.Tenant, UID: m.UID}}}
		return ev
	}
	newEvent := func(ev *api.Event, about api.Object) Request {
		return Request{Verb: Create, Kind: kind(t, "Event"), Tenant: ev.Metadata.Tenant, Name: "e", New: ev, Involved: about}
	}
	vm := func(host string) *api.VirtualMachine {
		return &api.VirtualMachine{TypeMeta: api.TypeMeta{Kind: "VirtualMachine"}, Metadata: api.ObjectMeta{Name: "vm", Tenant: "lab", UID: "uid-vm"}, Spec: api.VirtualMachineSpec{Host: host}}
	}
	runsOn := func(vm *api.VirtualMachine, host string) *api.VirtualMachine { vm.Status.Host = host; return vm }
	// moving is a VM moving from host to h2 (its status.host is host as
	// long as it runs there); givesUp a status write of it that says the
	// move failed, changed by change.
	moving := func(from string) *api.VirtualMachine {
		v := vm("h2")
		v.Metadata.Generation = 2
		v.Status.Host, v.Status.Phase, v.Status.PID = from, api.VMMigrating, 7
		v.Status.Migration = &api.VMMigration{From: from, Incoming: "tcp:10.0.0.2:4444"}
		return v
	}
	givesUp := func(stored *api.VirtualMachine, change func(*api.VirtualMachine)) Request {
		cur := api.DeepCopy(stored).(*api.VirtualMachine)
		cur.Status.Migration, cur.Status.Phase = nil, api.VMRunning
		cur.Status.Conditions = []api.Condition{{Type: api.ConditionMigrated, Status: api.ConditionFalse, Reason: api.ReasonMigrationFailed,
			Message: "not moved", ObservedGeneration: 2}}
		if change != nil {
			change(cur)
		}
		return Request{Verb: UpdateStatus, Kind: kind(t, "VirtualMachine"), Tenant: "lab", Name: "vm", Stored: stored, New: cur}
	}
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	stored := &api.Machine{TypeMeta: api.TypeMeta{Kind: "Machine"}, Metadata: api.ObjectMeta{Name: "node1"},
		Spec: api.MachineSpec{MAC: "52:54:00:aa:bb:01"}}
	stored.Status.Phase = api.MachineApproved
	stored.Status.MatchedProfile = "debian"
	stored.Status.ObservedGeneration = 2
	stored.Status.Conditions = []api.Condition{{Type: "Approved", Status: api.ConditionTrue, Reason: "Approved", LastTransitionTime: &now}}
	stored.Status.LastSeen = &now
	withStatus := func(change func(*api.MachineStatus)) *api.Machine {
		m := api.DeepCopy(stored).(*api.Machine)
		change(&m.Status)
		return m
	}
	discovered := func(change func(*api.Machine)) *api.Machine {
		m := &api.Machine{TypeMeta: api.TypeMeta{Kind: "Machine"}, Metadata: api.ObjectMeta{Name: "m-525400aabb02"},
			Spec: api.MachineSpec{MAC: "52:54:00:aa:bb:02", Architecture: api.ArchX86_64, Site: "home", Hostname: "m-525400aabb02",
				Description: "discovered by host/h1"}}
		if change != nil {
			change(m)
		}
		return m
	}
	later := now.Add(time.Minute)
	machine := kind(t, "Machine")
	// An image's status as a host reports its copy: h1 Ready, and the
	// checksum and size it found.
	imageWrite := func(upload bool, oldSum string) Request {
		img := &api.Image{TypeMeta: api.TypeMeta{Kind: "Image"}, Metadata: api.ObjectMeta{Name: "disk", Tenant: "lab"},
			Spec: api.ImageSpec{Source: api.ImageSource{Upload: upload, URL: map[bool]string{false: "https://example.org/disk.img"}[upload]}}}
		img.Status.Checksum = oldSum
		cur := api.DeepCopy(img).(*api.Image)
		cur.Status.Hosts = []api.ImageHostStatus{{Host: "h1", Phase: api.ImageReady, Progress: 100}}
		cur.Status.Checksum, cur.Status.Size, cur.Status.Phase = "sha256:"+strings.Repeat("b", 64), 1000, api.ImageReady
		return Request{Verb: UpdateStatus, Kind: kind(t, "Image"), Tenant: "lab", Name: "disk", Stored: img, New: cur}
	}
	status := func(m *api.Machine) Request {
		return Request{Verb: UpdateStatus, Kind: machine, Name: "node1", Stored: stored, New: m}
	}
	create := func(m *api.Machine) Request {
		return Request{Verb: Create, Kind: machine, Name: m.Metadata.Name, New: m}
	}
	image := &api.Image{TypeMeta: api.TypeMeta{Kind: "Image"}, Metadata: api.ObjectMeta{Name: "debian", Tenant: "lab", UID: "uid-img"}}
	tests := []struct {
		name string
		who  *Principal
		r    Request
		ok   bool
		why  string
	}{
		{"reads VMs across tenants", h1, Request{Verb: List, Kind: kind(t, "VirtualMachine"), AllTenants: true}, true, ""},
		{"reads no users", h1, Request{Verb: Get, Kind: kind(t, "User"), Name: "admin"}, false, "hosts do not read users"},
		{"writes its own Host's status", h1, Request{Verb: UpdateStatus, Kind: kind(t, "Host"), Name: "h1", Stored: host("h1"), New: host("h1")}, true, ""},
		{"not its own Host's spec", h1, Request{Verb: Update, Kind: kind(t, "Host"), Name: "h1", Stored: host("h1"), New: host("h1")}, false, "spec and metadata are the administrator's"},
		{"does not create its Host", h1, Request{Verb: Create, Kind: kind(t, "Host"), Name: "h1", New: host("h1")}, false, "/join makes it"},
		{"not another Host's status", h1, Request{Verb: UpdateStatus, Kind: kind(t, "Host"), Name: "h2", Stored: host("h2"), New: host("h2")}, false, "not placed on this host"},
		{"does not delete its Host", h1, Request{Verb: Delete, Kind: kind(t, "Host"), Name: "h1", Stored: host("h1")}, false, "administrator's"},
		{"creates no machines", h1, create(discovered(nil)), false, "placed on them"},
		{"writes no machine facts", h1, status(withStatus(func(s *api.MachineStatus) { s.LastSeen = &later })), false, "placed on them"},
		{"fills in a downloaded image's checksum", h1, imageWrite(false, ""), true, ""},
		{"never an uploaded image's checksum", h1, imageWrite(true, ""), false, "the server's to record from the upload"},
		{"nor changes it", h1, imageWrite(true, "sha256:"+strings.Repeat("a", 64)), false, "the server's to record from the upload"},

		{"events about its VM", h1, newEvent(event("host/h1", "lab", vm("h1")), vm("h1")), true, ""},
		{"events about its Host", h1, newEvent(event("host/h1", "", host("h1")), host("h1")), true, ""},
		{"events about an Image", h1, newEvent(event("host/h1", "lab", image), image), true, ""},
		{"no events about another host's VM", h1, newEvent(event("host/h1", "lab", vm("h2")), vm("h2")), false, "only about its own Host, objects placed on it"},
		{"events about a VM moving away that runs on it", h1, newEvent(event("host/h1", "lab", runsOn(vm("h2"), "h1")), runsOn(vm("h2"), "h1")), true, ""},
		{"no events about a VM moving to it from another", h1, newEvent(event("host/h1", "lab", runsOn(vm("h3"), "h2")), runsOn(vm("h3"), "h2")), false, "only about its own Host, objects placed on it"},
		{"no events about another Host", h1, newEvent(event("host/h1", "", host("h2")), host("h2")), false, "only about its own Host"},
		{"no events about machines", h1, newEvent(event("host/h1", "", stored), stored), false, "only about its own Host"},
		{"no events under another source", h1, newEvent(event("hearth-server", "lab", vm("h1")), vm("h1")), false, "spec.source must be host/h1"},
		{"no events in another tenant", h1, newEvent(event("host/h1", "other", vm("h1")), vm("h1")), false, "tenant of the object it is about"},
		{"no events about nothing", h1, newEvent(event("host/h1", "lab", vm("h1")), nil), false, "does not exist"},
		{"no events about a VM of another uid", h1, newEvent(event("host/h1", "lab", vm("h1")), func() api.Object { v := vm("h1"); v.Metadata.UID = "new"; return v }()), false, "another VirtualMachine vm"},
		{"bumps its own event", h1, Request{Verb: Update, Kind: kind(t, "Event"), Tenant: "lab", Name: "e", Stored: event("host/h1", "lab", vm("h1")), New: event("host/h1", "lab", vm("h1"))}, true, ""},
		{"not another's event", h1, Request{Verb: Update, Kind: kind(t, "Event"), Tenant: "lab", Name: "e", Stored: event("hearth-server", "lab", vm("h1")), New: event("host/h1", "lab", vm("h1"))}, false, "events it recorded"},
		{"not to another object", h1, Request{Verb: Update, Kind: kind(t, "Event"), Tenant: "lab", Name: "e", Stored: event("host/h1", "lab", vm("h1")), New: event("host/h1", "lab", image)}, false, "do not change"},

		{"boot: events about a machine", boot, newEvent(event("boot/boot", "", stored), stored), true, ""},
		{"boot: not about a VM", boot, newEvent(event("boot/boot", "lab", vm("h1")), vm("h1")), false, "only about Machines"},
		{"boot: not as a host", boot, newEvent(event("host/boot", "", stored), stored), false, "spec.source must be boot/boot"},
		{"boot: reads no users", boot, Request{Verb: List, Kind: kind(t, "User")}, false, "do not read users"},
		{"boot: writes no Host", boot, Request{Verb: UpdateStatus, Kind: kind(t, "Host"), Name: "boot", Stored: host("boot"), New: host("boot")}, false, "only discover Machines"},
		{"boot: writes no VM status", boot, Request{Verb: UpdateStatus, Kind: kind(t, "VirtualMachine"), Tenant: "lab", Name: "vm", Stored: vm("boot"), New: vm("boot")}, false, "only discover Machines"},
		{"writes the status of its VM", h1, Request{Verb: UpdateStatus, Kind: kind(t, "VirtualMachine"), Tenant: "lab", Name: "vm", Stored: vm("h1"), New: vm("h1")}, true, ""},
		{"not of another host's VM", h1, Request{Verb: UpdateStatus, Kind: kind(t, "VirtualMachine"), Tenant: "lab", Name: "vm", Stored: vm("h2"), New: vm("h2")}, false, "not placed on this host"},
		{"does not move a VM", h1, Request{Verb: UpdateStatus, Kind: kind(t, "VirtualMachine"), Tenant: "lab", Name: "vm", Stored: vm("h1"), New: vm("h2")}, false, "another host"},
		{"the source gives its migration up", h1, givesUp(moving("h1"), nil), true, ""},
		{"not as a host the VM does not migrate from", h1, givesUp(moving("h3"), nil), false, "not placed on this host"},
		{"not for a VM that is not migrating", h1, givesUp(func() *api.VirtualMachine { v := moving("h1"); v.Status.Migration = nil; return v }(), nil), false, "not placed on this host"},
		{"the source keeps no migration going", h1, givesUp(moving("h1"), func(v *api.VirtualMachine) { v.Status.Migration = &api.VMMigration{From: "h1"} }), false, "status.migration emptied"},
		{"the source says it failed", h1, givesUp(moving("h1"), func(v *api.VirtualMachine) { v.Status.Conditions[0].Status = api.ConditionTrue }), false, "MigrationFailed"},
		{"the source says it for this generation", h1, givesUp(moving("h1"), func(v *api.VirtualMachine) { v.Status.Conditions[0].ObservedGeneration = 1 }), false, "MigrationFailed"},
		{"the source does not take the VM", h1, givesUp(moving("h1"), func(v *api.VirtualMachine) { v.Status.Host = "h2" }), false, "nothing but"},
		{"the source writes nothing else", h1, givesUp(moving("h1"), func(v *api.VirtualMachine) { v.Status.PID = 42 }), false, "nothing but"},
		{"the source writes no failover", h1, givesUp(moving("h1"), func(v *api.VirtualMachine) { v.Status.Failover = &api.VMFailover{From: "h1"} }), false, "nothing but"},
		{"does not change a VM's spec", h1, Request{Verb: Update, Kind: kind(t, "VirtualMachine"), Tenant: "lab", Name: "vm", Stored: vm("h1"), New: vm("h1")}, false, "placed on them"},
		{"creates no networks", h1, Request{Verb: Create, Kind: kind(t, "Network"), Tenant: "lab", Name: "n"}, false, "placed on them"},
		{"reads storage pools", h1, Request{Verb: List, Kind: kind(t, "StoragePool")}, true, ""},
		{"changes no storage pool", h1, Request{Verb: Update, Kind: kind(t, "StoragePool"), Name: "ceph"}, false, "placed on them"},
		{"creates no storage pool", h1, Request{Verb: Create, Kind: kind(t, "StoragePool"), Name: "mine"}, false, "placed on them"},
		{"reads no keyring Secret", h1, Request{Verb: Get, Kind: kind(t, "Secret"), Name: "ceph-hearth"}, false, "cluster admins"},

		{"reads machines", boot, Request{Verb: List, Kind: machine}, true, ""},
		{"creates a discovered machine", boot, create(discovered(nil)), true, ""},
		{"with power driver none", boot, create(discovered(func(m *api.Machine) { m.Spec.Power.Driver = api.PowerDriverNone })), true, ""},
		{"not an approved one", boot, create(discovered(func(m *api.Machine) { m.Spec.Approved = true })), false, "without spec.approved"},
		{"not with a profile", boot, create(discovered(func(m *api.Machine) { m.Spec.Profile = "debian" })), false, "without spec.profile"},
		{"not with labels", boot, create(discovered(func(m *api.Machine) { m.Metadata.Labels = map[string]string{"role": "storage"} })), false, "without metadata.labels"},
		{"not with power settings", boot, create(discovered(func(m *api.Machine) {
			m.Spec.Power = api.MachinePower{Driver: api.PowerDriverWebhook, Webhook: &api.PowerWebhook{OnURL: "http://x/on", OffURL: "http://x/off"}}
		})), false, "without spec.power"},
		{"not asking for a reinstall", boot, create(discovered(func(m *api.Machine) { m.Spec.ReinstallRequested = &now })), false, "without spec.reinstallRequested"},
		{"names every field it refuses", boot, create(discovered(func(m *api.Machine) { m.Spec.Approved = true; m.Spec.Profile = "x" })), false, "without spec.approved, spec.profile: those are a person's to set"},
		{"does not change a machine's spec", boot, Request{Verb: Update, Kind: machine, Name: "node1", Stored: stored, New: stored}, false, "only discover Machines"},
		{"does not delete a machine", boot, Request{Verb: Delete, Kind: machine, Name: "node1", Stored: stored}, false, "only discover Machines"},

		{"writes observed facts", boot, status(withStatus(func(s *api.MachineStatus) {
			s.LastSeen, s.LastBoot, s.InstalledAt = &later, &later, &later
			s.Addresses = []string{"10.0.0.5"}
			s.SSHHostKeys = []string{"ssh-ed25519 AAAA root@node1"}
			s.VendorClass, s.UUID, s.Firmware, s.PowerState = "PXEClient:Arch:00007", "4c4c4544", api.FirmwareUEFI, api.MachinePowerOn
		})), true, ""},
		{"clears facts", boot, status(withStatus(func(s *api.MachineStatus) { s.LastSeen = nil; s.SSHHostKeys = nil })), true, ""},
		{"an unchanged status", boot, status(withStatus(func(*api.MachineStatus) {})), true, ""},
		{"not the phase", boot, status(withStatus(func(s *api.MachineStatus) { s.Phase = api.MachineInstalled })), false, "not status.phase"},
		{"not the matched profile", boot, status(withStatus(func(s *api.MachineStatus) { s.MatchedProfile = "" })), false, "not status.matchedProfile"},
		{"not conditions", boot, status(withStatus(func(s *api.MachineStatus) { s.Conditions = nil; s.ObservedGeneration = 3 })), false, "not status.conditions, status.observedGeneration"},
		{"facts and more", boot, status(withStatus(func(s *api.MachineStatus) { s.LastSeen = &later; s.Phase = api.MachineReady })), false, "not status.phase"},
	}
	for _, tt := range tests {
		err := Authorize(tt.who, tt.r)
		if (err == nil) != tt.ok || (err != nil && !strings.Contains(err.Error(), tt.why)) {
			t.Errorf("%s: Authorize = %v, want ok=%v (%q)", tt.name, err, tt.ok, tt.why)
		}
	}
}
