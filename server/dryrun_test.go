package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// revision is etcd's current revision: it moves with every write.
func revision(t *testing.T, env *servertest.Env) int64 {
	t.Helper()
	resp, err := env.Server.Etcd().Get(context.Background(), "/hearth/ready-probe")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// TestDryRun: every write verb with ?dryRun=All answers as the real write
// would (the object as it would be stored, or the same error) and writes
// nothing, not even an allocation or a quota guard.
func TestDryRun(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	if _, err := env.Admin.Create(ctx, &api.Tenant{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tenant"},
		Metadata: api.ObjectMeta{Name: "lab"}, Spec: api.TenantSpec{Quota: api.Quota{VCPUs: 4}}}); err != nil {
		t.Fatal(err)
	}
	user := env.User("alice", "lab", api.RoleTenantAdmin)
	dry := user.DryRun()
	vm := func(name string, cpus int) *api.VirtualMachine {
		return &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
			Metadata: api.ObjectMeta{Name: name, Tenant: "lab"},
			Spec:     api.VirtualMachineSpec{CPUs: cpus, Boot: api.VMBoot{From: api.BootFromKernel, Kernel: &api.BootFile{Image: "vmlinuz"}}}}
	}
	before := revision(t, env)

	// Create: the answer has the defaults, nothing is stored.
	out, err := dry.Create(ctx, vm("a", 2))
	if err != nil {
		t.Fatalf("dry-run create: %v", err)
	}
	if got := out.(*api.VirtualMachine).Spec; got.Memory != 512<<20 || got.PowerState != api.PowerRunning {
		t.Errorf("dry-run create answered without defaults: %+v", got)
	}
	if out.GetMetadata().ResourceVersion != "" {
		t.Errorf("dry-run create answered resourceVersion %q, want none", out.GetMetadata().ResourceVersion)
	}
	if _, err := user.Get(ctx, "VirtualMachine", "lab", "a"); !api.IsNotFound(err) {
		t.Fatalf("dry-run create stored the VM: %v", err)
	}
	// A network's VNI is allocated in the create's transaction: the
	// dry run shows one and keeps none.
	netOut, err := dry.Create(ctx, servertest.Example("Network", "lab"))
	if err != nil {
		t.Fatalf("dry-run create of a network: %v", err)
	}
	if netOut.(*api.Network).Status.VNI == 0 {
		t.Errorf("dry-run network answered no VNI")
	}
	// Invalid and over quota: the same errors as the real thing.
	_, err = dry.Create(ctx, vm("big", 8))
	if st, ok := err.(*api.Status); !ok || st.Reason != api.ReasonQuota {
		t.Errorf("dry-run create over quota: got %v, want QuotaExceeded", err)
	}
	bad := vm("bad", 2)
	bad.Spec.PowerState = "Sideways"
	_, err = dry.Create(ctx, bad)
	assertFields(t, err, "spec.powerState")
	if got := revision(t, env); got != before {
		t.Fatalf("dry-run creates moved etcd from revision %d to %d", before, got)
	}
	keys, err := env.Server.Etcd().Get(ctx, "/hearth/", clientv3WithPrefix()...)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range keys.Kvs {
		if k := string(kv.Key); strings.HasPrefix(k, "/hearth/alloc/") || strings.HasPrefix(k, "/hearth/guards/") {
			t.Errorf("a dry run left %s behind", k)
		}
	}

	// Update, patch and delete of a stored VM.
	stored, err := user.Create(ctx, vm("a", 2))
	if err != nil {
		t.Fatal(err)
	}
	before = revision(t, env)
	next := api.DeepCopy(stored).(*api.VirtualMachine)
	next.Spec.CPUs = 3
	out, err = dry.Update(ctx, next)
	if err != nil {
		t.Fatalf("dry-run update: %v", err)
	}
	if out.(*api.VirtualMachine).Spec.CPUs != 3 || out.GetMetadata().Generation != 2 {
		t.Errorf("dry-run update answered cpus %d generation %d, want 3 and 2", out.(*api.VirtualMachine).Spec.CPUs, out.GetMetadata().Generation)
	}
	if out.GetMetadata().ResourceVersion != stored.GetMetadata().ResourceVersion {
		t.Errorf("dry-run update answered resourceVersion %s, want the stored %s", out.GetMetadata().ResourceVersion, stored.GetMetadata().ResourceVersion)
	}
	next.Spec.CPUs = 5
	if _, err := dry.Update(ctx, next); err == nil || err.(*api.Status).Reason != api.ReasonQuota {
		t.Errorf("dry-run update over quota: got %v, want QuotaExceeded", err)
	}
	stale := api.DeepCopy(next)
	stale.GetMetadata().ResourceVersion = "1"
	if _, err := dry.Update(ctx, stale); !api.IsConflict(err) {
		t.Errorf("dry-run update of a stale version: got %v, want Conflict", err)
	}
	if _, err := dry.Patch(ctx, "VirtualMachine", "lab", "a", map[string]any{"spec": map[string]any{"powerState": api.PowerStopped}}, false); err != nil {
		t.Errorf("dry-run patch: %v", err)
	}
	// Status is written by controllers (here, the admin): dry runs too.
	if _, err := env.Admin.DryRun().Patch(ctx, "VirtualMachine", "lab", "a", map[string]any{"status": map[string]any{"phase": "Running"}}, true); err != nil {
		t.Errorf("dry-run status patch: %v", err)
	}
	if _, err := dry.Patch(ctx, "VirtualMachine", "lab", "a", map[string]any{"status": map[string]any{"phase": "Running"}}, true); !api.IsForbidden(err) {
		t.Errorf("a tenant's dry-run status patch: got %v, want Forbidden as for the real one", err)
	}
	if _, err := dry.Delete(ctx, "VirtualMachine", "lab", "a"); err != nil {
		t.Errorf("dry-run delete: %v", err)
	}
	if _, err := dry.Delete(ctx, "VirtualMachine", "lab", "nosuch"); !api.IsNotFound(err) {
		t.Errorf("dry-run delete of a missing VM: got %v, want NotFound", err)
	}
	if got := revision(t, env); got != before {
		t.Fatalf("dry-run writes moved etcd from revision %d to %d", before, got)
	}
	got, err := user.Get(ctx, "VirtualMachine", "lab", "a")
	if err != nil {
		t.Fatalf("the VM is gone after a dry-run delete: %v", err)
	}
	if vm := got.(*api.VirtualMachine); vm.Spec.CPUs != 2 || vm.Spec.PowerState != api.PowerRunning || vm.Status.Phase != "" {
		t.Errorf("dry runs changed the VM: %+v %+v", vm.Spec, vm.Status)
	}

	// Authorization runs too: a viewer's dry run is refused, and so is a
	// dry run in another tenant.
	env.Tenant("other")
	viewer := env.User("vic", "lab", api.RoleViewer)
	if _, err := viewer.DryRun().Create(ctx, vm("v", 1)); !api.IsForbidden(err) {
		t.Errorf("a viewer's dry-run create: got %v, want Forbidden", err)
	}
	if _, err := dry.Delete(ctx, "Network", "other", "anything"); !api.IsForbidden(err) {
		t.Errorf("a dry-run delete in another tenant: got %v, want Forbidden", err)
	}

	// Only All is a dry run; anything else is refused, not ignored.
	err = user.Do(ctx, http.MethodDelete, api.PathPrefix+"/tenants/lab/virtualmachines/a?dryRun=true", nil, nil)
	if st, ok := err.(*api.Status); !ok || st.Code != http.StatusBadRequest || !strings.Contains(st.Message, "dryRun") {
		t.Errorf("dryRun=true: got %v, want 400 naming dryRun", err)
	}
	if _, err := user.Get(ctx, "VirtualMachine", "lab", "a"); err != nil {
		t.Errorf("the VM is gone after a refused dry run: %v", err)
	}
}
