package server_test

import (
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// TestHostWritesPoolUsageOnly: a host writes a StoragePool's size and use
// (it reaches the storage; the server does not) and nothing else of its
// status, and nothing of its spec; a tenant writes none of it.
func TestHostWritesPoolUsageOnly(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	env.Tenant("a")
	alice := env.User("alice", "a", api.RoleTenantAdmin)
	h1 := env.Host("h1")
	if _, err := env.Admin.Create(ctx, storagePool("nas", api.StoragePoolSpec{Driver: api.PoolDriverNFS, NFS: &api.NFSPoolSpec{Server: "192.0.2.2", Export: "/srv"}})); err != nil {
		t.Fatal(err)
	}
	usage := api.StoragePoolUsage{Capacity: 10 << 30, Used: 1 << 30, Available: 9 << 30}
	if _, err := h1.PatchStatus(ctx, "StoragePool", "", "nas", usage); err != nil {
		t.Fatalf("host h1 writing the pool's usage: %v", err)
	}
	got, err := env.Admin.Get(ctx, "StoragePool", "", "nas")
	if err != nil {
		t.Fatal(err)
	}
	if st := got.(*api.StoragePool).Status; st.Capacity != usage.Capacity || st.Used != usage.Used || st.Available != usage.Available {
		t.Errorf("status %+v, want the usage written", st)
	}
	for _, tt := range []struct {
		name  string
		patch map[string]any
		sub   bool
	}{
		{"its phase", map[string]any{"status": map[string]any{"phase": "Ready"}}, true},
		{"its volume count", map[string]any{"status": map[string]any{"volumes": 7}}, true},
		{"its conditions", map[string]any{"status": map[string]any{"conditions": []map[string]any{{"type": "Ready", "status": "True"}}}}, true},
		{"its spec", map[string]any{"spec": map[string]any{"nfs": map[string]any{"server": "198.51.100.9", "export": "/srv"}}}, false},
	} {
		if _, err := h1.Patch(ctx, "StoragePool", "", "nas", tt.patch, tt.sub); !api.IsForbidden(err) {
			t.Errorf("host h1 writing a pool's %s: %v, want 403", tt.name, err)
		}
	}
	if _, err := alice.PatchStatus(ctx, "StoragePool", "", "nas", api.StoragePoolUsage{Capacity: 1}); !api.IsForbidden(err) {
		t.Errorf("a tenant admin writing a pool's usage: %v, want 403", err)
	}
	got, _ = env.Admin.Get(ctx, "StoragePool", "", "nas")
	if p := got.(*api.StoragePool); p.Status.Phase != "" || p.Status.Volumes != 0 || p.Spec.NFS.Server != "192.0.2.2" || !strings.HasPrefix(p.Status.Capacity.String(), "10") {
		t.Errorf("pool after the refused writes: spec %+v status %+v", p.Spec.NFS, p.Status)
	}
}
