package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

// TestObjectsFromANewerHearth puts into etcd what a newer Hearth would
// write during a rolling upgrade (a field this version does not know, or
// another apiVersion) and checks that this server refuses to read those
// objects, saying what it does not know and what to do, rather than read
// them in part; that a write of such an object is refused and leaves the
// stored bytes as they were (nothing dropped); that a watch says so too;
// and that an object stored without apiVersion (as this version's) and
// the other objects of the kind are served as before.
func TestObjectsFromANewerHearth(t *testing.T) {
	env := servertest.Start(t)
	ctx := servertest.Ctx(t)
	env.Tenant("t1")
	etcd := env.Server.Etcd()
	put := func(name, value string) string {
		t.Helper()
		key := "/hearth/objects/networks/t1/" + name
		if _, err := etcd.Put(ctx, key, value); err != nil {
			t.Fatal(err)
		}
		return key
	}
	stored := func(key string) string {
		t.Helper()
		resp, err := etcd.Get(ctx, key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("reading %s: %v", key, err)
		}
		return string(resp.Kvs[0].Value)
	}
	meta := func(name string) string {
		return `"metadata":{"name":"` + name + `","tenant":"t1","uid":"u-` + name + `","generation":1}`
	}
	future := put("future", `{"apiVersion":"`+api.APIVersion+`","kind":"Network",`+meta("future")+`,"spec":{"mtu":1400,"futureRouting":{"mode":"bgp"}}}`)
	beta := put("beta", `{"apiVersion":"hearth.dev/v1beta1","kind":"Network",`+meta("beta")+`,"spec":{}}`)
	put("plain", `{"kind":"Network",`+meta("plain")+`,"spec":{}}`)
	futureBefore := stored(future)

	tests := []struct {
		name, want string
	}{
		{"future", "spec.futureRouting: unknown field"},
		{"beta", `apiVersion "hearth.dev/v1beta1"`},
	}
	for _, tt := range tests {
		_, err := env.Admin.Get(ctx, "Network", "t1", tt.name)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "newer Hearth") ||
			!strings.Contains(err.Error(), "upgrade this server") {
			t.Errorf("get %s: %v; want a refusal naming %q, a newer Hearth and the fix", tt.name, err, tt.want)
		}
	}
	if _, err := env.Admin.Patch(ctx, "Network", "t1", "future", map[string]any{"metadata": map[string]any{"labels": map[string]string{"a": "b"}}}, false); err == nil {
		t.Error("a patch of an object from a newer Hearth was accepted")
	}
	if got := stored(future); got != futureBefore {
		t.Errorf("the refused write changed the stored object:\n%s\nwas\n%s", got, futureBefore)
	}
	if _, err := env.Admin.Delete(ctx, "Network", "t1", "future"); err == nil {
		t.Error("a delete of an object from a newer Hearth was accepted (its delete hooks cannot read it)")
	}

	// The list of the kind says so too, rather than leave objects out.
	if _, _, err := env.Admin.List(ctx, "Network", "t1", client.ListOptions{}); err == nil || !strings.Contains(err.Error(), "newer Hearth") {
		t.Errorf("list: %v; want the refusal", err)
	}

	// Without apiVersion: this version's, served.
	if o, err := env.Admin.Get(ctx, "Network", "t1", "plain"); err != nil || o.GetTypeMeta().APIVersion != api.APIVersion {
		t.Errorf("get plain: %v %+v", err, o)
	}

	// Clean the newer objects away; the kind is served again, and a
	// watch that meets one of another apiVersion ends with the refusal.
	if _, err := etcd.Delete(ctx, future); err != nil {
		t.Fatal(err)
	}
	if _, err := etcd.Delete(ctx, beta); err != nil {
		t.Fatal(err)
	}
	list, rv, err := env.Admin.List(ctx, "Network", "t1", client.ListOptions{})
	if err != nil || len(list) != 1 {
		t.Fatalf("list after cleaning: %v, %d objects", err, len(list))
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	events, werr, err := env.Admin.WatchOnce(wctx, "Network", "t1", client.ListOptions{ResourceVersion: rv})
	if err != nil {
		t.Fatal(err)
	}
	put("beta2", `{"apiVersion":"hearth.dev/v1beta1","kind":"Network",`+meta("beta2")+`,"spec":{}}`)
	for ev := range events {
		if ev.Object != nil && ev.Object.GetMetadata().Name == "beta2" {
			t.Fatalf("the watch passed on an object of another apiVersion: %+v", ev)
		}
	}
	if err := werr(); err == nil || !strings.Contains(err.Error(), "newer Hearth") {
		t.Errorf("the watch ended with %v; want the refusal", err)
	}
}

// TestAPIVersionIsChecked: a tenant cannot store an object under another
// apiVersion, by create, update or merge patch (api.Prepare refuses it,
// and the store would too). Stored, such an object would be refused by
// every server (as if a newer Hearth had written it), and every list of
// its kind, other tenants' and the controllers' included, would fail.
func TestAPIVersionIsChecked(t *testing.T) {
	env := servertest.Start(t)
	ctx := servertest.Ctx(t)
	env.Tenant("t1")
	env.Tenant("t2")
	member := env.User("mallory", "t1", api.RoleTenantMember)
	other := env.User("bob", "t2", api.RoleTenantMember)

	n := servertest.Example("Network", "t1").(*api.Network)
	n.Metadata.Name = "n1"
	n.APIVersion = "hearth.dev/v9"
	if _, err := member.Create(ctx, n); err == nil || !strings.Contains(err.Error(), "apiVersion") {
		t.Errorf("create with apiVersion hearth.dev/v9: %v, want refused naming apiVersion", err)
	}
	n.APIVersion = api.APIVersion
	if _, err := member.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	if _, err := member.Patch(ctx, "Network", "t1", "n1", map[string]any{"apiVersion": "hearth.dev/v9"}, false); err == nil {
		t.Error("a merge patch changed the apiVersion")
	}
	o, err := member.Get(ctx, "Network", "t1", "n1")
	if err != nil {
		t.Fatal(err)
	}
	o.GetTypeMeta().APIVersion = "hearth.dev/v9"
	if _, err := member.Update(ctx, o); err == nil {
		t.Error("an update changed the apiVersion")
	}
	for _, c := range []*client.Client{member, other, env.Admin} {
		if _, _, err := c.List(ctx, "Network", "", client.ListOptions{AllTenants: c == env.Admin}); err != nil {
			t.Errorf("listing networks afterwards: %v", err)
		}
	}
	if o, err := env.Admin.Get(ctx, "Network", "t1", "n1"); err != nil || o.GetTypeMeta().APIVersion != api.APIVersion {
		t.Errorf("n1 afterwards: %v, %+v", err, o)
	}
}
