package auth

import (
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

// needs is a HostScope that needs the objects it names (KIND tenant/name).
type needs map[string]bool

func (n needs) Needs(host string, obj api.Object) bool {
	m := obj.GetMetadata()
	return host == "h1" && n[obj.GetTypeMeta().Kind+" "+m.Tenant+"/"+m.Name]
}

// TestHostReads covers what an agent's credential sees of each kind: the
// VMs that involve its host by their own fields, what the scope says it
// needs of the kinds that depend on others, cluster infrastructure, and
// never Users, VM sets or other hosts' events.
func TestHostReads(t *testing.T) {
	h1 := &Principal{Name: "host/h1", Host: "h1", Scope: needs{"SSHKey b/used": true, "VirtualMachine b/uses-my-volume": true}}
	bare := &Principal{Name: "host/h1", Host: "h1"}
	meta := func(tenant, name string) api.ObjectMeta { return api.ObjectMeta{Tenant: tenant, Name: name} }
	vm := func(name string, change func(*api.VirtualMachine)) *api.VirtualMachine {
		v := &api.VirtualMachine{TypeMeta: api.TypeMeta{Kind: "VirtualMachine"}, Metadata: meta("b", name), Spec: api.VirtualMachineSpec{Host: "h2"}}
		if change != nil {
			change(v)
		}
		return v
	}
	key := func(name string) *api.SSHKey {
		return &api.SSHKey{TypeMeta: api.TypeMeta{Kind: "SSHKey"}, Metadata: meta("b", name)}
	}
	tests := []struct {
		name string
		p    *Principal
		obj  api.Object
		want bool
	}{
		{"a VM placed on it", h1, vm("x", func(v *api.VirtualMachine) { v.Spec.Host = "h1" }), true},
		{"a VM running on it", h1, vm("x", func(v *api.VirtualMachine) { v.Status.Host = "h1" }), true},
		{"a VM migrating from it", h1, vm("x", func(v *api.VirtualMachine) { v.Status.Migration = &api.VMMigration{From: "h1"} }), true},
		{"a VM failed over from it", h1, vm("x", func(v *api.VirtualMachine) { v.Status.Failover = &api.VMFailover{From: "h1"} }), true},
		{"a VM using its volume", h1, vm("uses-my-volume", nil), true},
		{"another host's VM", h1, vm("x", nil), false},
		{"a key its VMs name", h1, key("used"), true},
		{"a key they do not", h1, key("other"), false},
		{"no key without a scope", bare, key("used"), false},
		{"a volume placed on it", h1, &api.Volume{TypeMeta: api.TypeMeta{Kind: "Volume"}, Metadata: meta("b", "v"), Spec: api.VolumeSpec{Host: "h1"}}, true},
		{"another host's volume", h1, &api.Volume{TypeMeta: api.TypeMeta{Kind: "Volume"}, Metadata: meta("b", "v"), Spec: api.VolumeSpec{Host: "h2"}}, false},
		{"a shared image", h1, &api.Image{TypeMeta: api.TypeMeta{Kind: "Image"}, Metadata: meta("", "debian")}, true},
		{"a tenant's image", h1, &api.Image{TypeMeta: api.TypeMeta{Kind: "Image"}, Metadata: meta("b", "debian")}, false},
		{"a network of a tenant with nothing here", h1, &api.Network{TypeMeta: api.TypeMeta{Kind: "Network"}, Metadata: meta("b", "n")}, false},
		{"its own events", h1, &api.Event{TypeMeta: api.TypeMeta{Kind: "Event"}, Metadata: meta("b", "e"), Spec: api.EventSpec{Source: "host/h1"}}, true},
		{"others' events", h1, &api.Event{TypeMeta: api.TypeMeta{Kind: "Event"}, Metadata: meta("b", "e"), Spec: api.EventSpec{Source: "hearth-server"}}, false},
		{"a VM set", h1, &api.VirtualMachineSet{TypeMeta: api.TypeMeta{Kind: "VirtualMachineSet"}, Metadata: meta("b", "s")}, false},
		{"a user", h1, &api.User{TypeMeta: api.TypeMeta{Kind: "User"}, Metadata: meta("", "alice")}, false},
		{"a Host", h1, &api.Host{TypeMeta: api.TypeMeta{Kind: "Host"}, Metadata: meta("", "h2")}, true},
		{"a storage pool", h1, &api.StoragePool{TypeMeta: api.TypeMeta{Kind: "StoragePool"}, Metadata: meta("", "ceph")}, true},
	}
	for _, tt := range tests {
		if got := VisibleTo(tt.p, tt.obj); got != tt.want {
			t.Errorf("%s: VisibleTo = %v, want %v", tt.name, got, tt.want)
		}
	}
}
