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
		{"member writes no status", member, Request{Verb: UpdateStatus, Kind: kind(t, "Image"), Tenant: "lab", Name: "disk"}, false, "hosts and controllers only"},
		{"tenant admin writes no status", tenantAdmin, Request{Verb: UpdateStatus, Kind: kind(t, "VirtualMachine"), Tenant: "lab", Name: "vm"}, false, "hosts and controllers only"},
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

// TestAuthorizeHost covers what a host credential may do: read what its
// agent and boot service need, write its own Host, the status of objects
// placed on it, Events, and discovered Machines and their observed facts.
func TestAuthorizeHost(t *testing.T) {
	h1 := &Principal{Name: "host/h1", Host: "h1"}
	vm := func(host string) *api.VirtualMachine {
		return &api.VirtualMachine{Metadata: api.ObjectMeta{Name: "vm", Tenant: "lab"}, Spec: api.VirtualMachineSpec{Host: host}}
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
	tests := []struct {
		name string
		r    Request
		ok   bool
		why  string
	}{
		{"reads VMs across tenants", Request{Verb: List, Kind: kind(t, "VirtualMachine"), AllTenants: true}, true, ""},
		{"reads no users", Request{Verb: Get, Kind: kind(t, "User"), Name: "admin"}, false, "hosts do not read users"},
		{"writes its own Host", Request{Verb: Update, Kind: kind(t, "Host"), Name: "h1"}, true, ""},
		{"not another Host", Request{Verb: UpdateStatus, Kind: kind(t, "Host"), Name: "h2"}, false, "only write its own Host"},
		{"does not delete its Host", Request{Verb: Delete, Kind: kind(t, "Host"), Name: "h1"}, false, "only write its own Host"},
		{"creates Events", Request{Verb: Create, Kind: kind(t, "Event"), Name: "e"}, true, ""},
		{"fills in a downloaded image's checksum", imageWrite(false, ""), true, ""},
		{"never an uploaded image's checksum", imageWrite(true, ""), false, "the server's to record from the upload"},
		{"nor changes it", imageWrite(true, "sha256:"+strings.Repeat("a", 64)), false, "the server's to record from the upload"},
		{"writes the status of its VM", Request{Verb: UpdateStatus, Kind: kind(t, "VirtualMachine"), Tenant: "lab", Name: "vm", Stored: vm("h1"), New: vm("h1")}, true, ""},
		{"not of another host's VM", Request{Verb: UpdateStatus, Kind: kind(t, "VirtualMachine"), Tenant: "lab", Name: "vm", Stored: vm("h2"), New: vm("h2")}, false, "not placed on this host"},
		{"does not move a VM", Request{Verb: UpdateStatus, Kind: kind(t, "VirtualMachine"), Tenant: "lab", Name: "vm", Stored: vm("h1"), New: vm("h2")}, false, "another host"},
		{"does not change a VM's spec", Request{Verb: Update, Kind: kind(t, "VirtualMachine"), Tenant: "lab", Name: "vm", Stored: vm("h1"), New: vm("h1")}, false, "placed on them"},
		{"creates no networks", Request{Verb: Create, Kind: kind(t, "Network"), Tenant: "lab", Name: "n"}, false, "placed on them"},

		{"reads machines", Request{Verb: List, Kind: machine}, true, ""},
		{"creates a discovered machine", create(discovered(nil)), true, ""},
		{"with power driver none", create(discovered(func(m *api.Machine) { m.Spec.Power.Driver = api.PowerDriverNone })), true, ""},
		{"not an approved one", create(discovered(func(m *api.Machine) { m.Spec.Approved = true })), false, "without spec.approved"},
		{"not with a profile", create(discovered(func(m *api.Machine) { m.Spec.Profile = "debian" })), false, "without spec.profile"},
		{"not with labels", create(discovered(func(m *api.Machine) { m.Metadata.Labels = map[string]string{"role": "storage"} })), false, "without metadata.labels"},
		{"not with power settings", create(discovered(func(m *api.Machine) {
			m.Spec.Power = api.MachinePower{Driver: api.PowerDriverWebhook, Webhook: &api.PowerWebhook{OnURL: "http://x/on", OffURL: "http://x/off"}}
		})), false, "without spec.power"},
		{"not asking for a reinstall", create(discovered(func(m *api.Machine) { m.Spec.ReinstallRequested = &now })), false, "without spec.reinstallRequested"},
		{"names every field it refuses", create(discovered(func(m *api.Machine) { m.Spec.Approved = true; m.Spec.Profile = "x" })), false, "without spec.approved, spec.profile: those are a person's to set"},
		{"does not change a machine's spec", Request{Verb: Update, Kind: machine, Name: "node1", Stored: stored, New: stored}, false, "placed on them"},
		{"does not delete a machine", Request{Verb: Delete, Kind: machine, Name: "node1", Stored: stored}, false, "placed on them"},

		{"writes observed facts", status(withStatus(func(s *api.MachineStatus) {
			s.LastSeen, s.LastBoot, s.InstalledAt = &later, &later, &later
			s.Addresses = []string{"10.0.0.5"}
			s.SSHHostKeys = []string{"ssh-ed25519 AAAA root@node1"}
			s.VendorClass, s.UUID, s.Firmware, s.PowerState = "PXEClient:Arch:00007", "4c4c4544", api.FirmwareUEFI, api.MachinePowerOn
		})), true, ""},
		{"clears facts", status(withStatus(func(s *api.MachineStatus) { s.LastSeen = nil; s.SSHHostKeys = nil })), true, ""},
		{"an unchanged status", status(withStatus(func(*api.MachineStatus) {})), true, ""},
		{"not the phase", status(withStatus(func(s *api.MachineStatus) { s.Phase = api.MachineInstalled })), false, "not status.phase"},
		{"not the matched profile", status(withStatus(func(s *api.MachineStatus) { s.MatchedProfile = "" })), false, "not status.matchedProfile"},
		{"not conditions", status(withStatus(func(s *api.MachineStatus) { s.Conditions = nil; s.ObservedGeneration = 3 })), false, "not status.conditions, status.observedGeneration"},
		{"facts and more", status(withStatus(func(s *api.MachineStatus) { s.LastSeen = &later; s.Phase = api.MachineReady })), false, "not status.phase"},
	}
	for _, tt := range tests {
		err := Authorize(h1, tt.r)
		if (err == nil) != tt.ok || (err != nil && !strings.Contains(err.Error(), tt.why)) {
			t.Errorf("%s: Authorize = %v, want ok=%v (%q)", tt.name, err, tt.ok, tt.why)
		}
	}
}
