package admission_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/admission"
	"hearth.dev/hearth/server/servertest"
)

func newVM(name string, cpus int, mem api.Bytes) *api.VirtualMachine {
	return &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
		Metadata: api.ObjectMeta{Name: name, Tenant: "lab"},
		Spec: api.VirtualMachineSpec{CPUs: cpus, Memory: mem,
			Boot: api.VMBoot{From: api.BootFromKernel, Kernel: &api.BootFile{Image: "vmlinuz"}}}}
}

func quotaTenant(t *testing.T, env *servertest.Env, q api.Quota) {
	t.Helper()
	tn := &api.Tenant{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tenant"},
		Metadata: api.ObjectMeta{Name: "lab"}, Spec: api.TenantSpec{Quota: q}}
	if _, err := env.Admin.Create(servertest.Ctx(t), tn); err != nil {
		t.Fatal(err)
	}
}

// wantQuotaError checks a refusal: 403 QuotaExceeded with exactly msg.
func wantQuotaError(t *testing.T, err error, msg string) {
	t.Helper()
	st, ok := err.(*api.Status)
	if !ok {
		t.Fatalf("got %v, want a QuotaExceeded status %q", err, msg)
	}
	if st.Code != http.StatusForbidden || st.Reason != api.ReasonQuota || st.Message != msg {
		t.Fatalf("got %d %s %q, want 403 QuotaExceeded %q", st.Code, st.Reason, st.Message, msg)
	}
}

func countVMs(t *testing.T, env *servertest.Env) int {
	t.Helper()
	vms, _, err := env.Admin.List(servertest.Ctx(t), "VirtualMachine", "lab", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return len(vms)
}

// TestQuotaVMs: VMs beyond the tenant's vcpus, memory or vms quota are
// refused with a message that names the quota, and nothing is written;
// an update that grows memory beyond the quota is refused too, while one
// that does not grow anything passes even over quota.
func TestQuotaVMs(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	quotaTenant(t, env, api.Quota{VCPUs: 8, Memory: 8 << 30, VMs: 3})
	ctx := servertest.Ctx(t)
	user := env.User("alice", "lab", api.RoleTenantAdmin)

	if _, err := user.Create(ctx, newVM("a", 4, 4<<30)); err != nil {
		t.Fatal(err)
	}
	if _, err := user.Create(ctx, newVM("b", 2, 2<<30)); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		vm  *api.VirtualMachine
		msg string
	}{
		{newVM("c", 4, 1<<30), "tenant lab: quota exceeded for vcpus: requested 4, used 6 of 8"},
		{newVM("c", 1, 4<<30), "tenant lab: quota exceeded for memory: requested 4Gi, used 6Gi of 8Gi"},
		{newVM("c", 4, 4<<30), "tenant lab: quota exceeded for vcpus: requested 4, used 6 of 8; quota exceeded for memory: requested 4Gi, used 6Gi of 8Gi"},
	}
	for _, c := range cases {
		_, err := user.Create(ctx, c.vm)
		wantQuotaError(t, err, c.msg)
	}
	if n := countVMs(t, env); n != 2 {
		t.Fatalf("%d VMs after refused creates, want 2", n)
	}
	if _, err := user.Create(ctx, newVM("c", 1, 1<<30)); err != nil {
		t.Fatal(err)
	}
	_, err := user.Create(ctx, newVM("d", 1, 512<<20))
	wantQuotaError(t, err, "tenant lab: quota exceeded for vms: requested 1, used 3 of 3")
	if n := countVMs(t, env); n != 3 {
		t.Fatalf("%d VMs after a refused create, want 3", n)
	}

	// Growing b from 2Gi to 4Gi: the others use 5Gi of 8Gi.
	_, err = user.Patch(ctx, "VirtualMachine", "lab", "b", map[string]any{"spec": map[string]any{"memory": "4Gi"}}, false)
	wantQuotaError(t, err, "tenant lab: quota exceeded for memory: requested 4Gi, used 5Gi of 8Gi")
	o, err := user.Get(ctx, "VirtualMachine", "lab", "b")
	if err != nil {
		t.Fatal(err)
	}
	if m := o.(*api.VirtualMachine).Spec.Memory; m != 2<<30 {
		t.Fatalf("b's memory is %s after a refused update, want 2Gi", m)
	}
	// Growing within the quota is fine (5Gi + 3Gi = 8Gi).
	if _, err := user.Patch(ctx, "VirtualMachine", "lab", "b", map[string]any{"spec": map[string]any{"memory": "3Gi"}}, false); err != nil {
		t.Fatal(err)
	}

	// Lowering the quota below use does not block writes that add nothing.
	if _, err := env.Admin.Patch(ctx, "Tenant", "", "lab", map[string]any{"spec": map[string]any{"quota": map[string]any{"memory": "1Gi"}}}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := user.Patch(ctx, "VirtualMachine", "lab", "a", map[string]any{"metadata": map[string]any{"labels": map[string]any{"tier": "web"}}}, false); err != nil {
		t.Fatalf("a label change on a tenant over its quota was refused: %v", err)
	}
	if _, err := user.Patch(ctx, "VirtualMachine", "lab", "a", map[string]any{"spec": map[string]any{"memory": "3Gi"}}, false); err != nil {
		t.Fatalf("shrinking a VM of a tenant over its quota was refused: %v", err)
	}
}

// TestQuotaVolumesAndNetworks: volume GiB counts Volumes and the image
// disks of VMs; networks are counted.
func TestQuotaVolumesAndNetworks(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	quotaTenant(t, env, api.Quota{VolumeGiB: 20, Networks: 1})
	ctx := servertest.Ctx(t)

	vol := func(name string, size api.Bytes) *api.Volume {
		return &api.Volume{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Volume"},
			Metadata: api.ObjectMeta{Name: name, Tenant: "lab"}, Spec: api.VolumeSpec{Size: size}}
	}
	if _, err := env.Admin.Create(ctx, vol("data", 10<<30)); err != nil {
		t.Fatal(err)
	}
	vm := newVM("web", 1, 1<<30)
	vm.Spec.Disks = []api.VMDisk{{Image: "debian-12", Size: 8 << 30}}
	if _, err := env.Admin.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	_, err := env.Admin.Create(ctx, vol("more", 4<<30))
	wantQuotaError(t, err, "tenant lab: quota exceeded for volumeGiB: requested 4Gi, used 18Gi of 20Gi")
	// Growing the volume within the quota passes, beyond it does not.
	if _, err := env.Admin.Patch(ctx, "Volume", "lab", "data", map[string]any{"spec": map[string]any{"size": "12Gi"}}, false); err != nil {
		t.Fatal(err)
	}
	_, err = env.Admin.Patch(ctx, "Volume", "lab", "data", map[string]any{"spec": map[string]any{"size": "13Gi"}}, false)
	wantQuotaError(t, err, "tenant lab: quota exceeded for volumeGiB: requested 13Gi, used 8Gi of 20Gi")

	net := func(name string) *api.Network {
		return &api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"},
			Metadata: api.ObjectMeta{Name: name, Tenant: "lab"}}
	}
	if _, err := env.Admin.Create(ctx, net("net1")); err != nil {
		t.Fatal(err)
	}
	_, err = env.Admin.Create(ctx, net("net2"))
	wantQuotaError(t, err, "tenant lab: quota exceeded for networks: requested 1, used 1 of 1")
}

// TestQuotaRacingWrites: many creates and growing updates at once never
// take a tenant past its quota, and every write refused is refused for
// the quota.
func TestQuotaRacingWrites(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	quotaTenant(t, env, api.Quota{VMs: 3, Memory: 8 << 30})
	ctx := servertest.Ctx(t)
	user := env.User("alice", "lab", api.RoleTenantAdmin)

	const writers = 12
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := user.Create(ctx, newVM(fmt.Sprintf("vm%d", i), 1, 1<<30))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		if err == nil {
			ok++
		} else if !api.IsQuotaExceeded(err) {
			t.Errorf("a racing create failed for another reason than the quota: %v", err)
		}
	}
	if n := countVMs(t, env); ok != 3 || n != 3 {
		t.Fatalf("%d racing creates passed and %d VMs exist with a quota of 3", ok, n)
	}

	// Three VMs of 1Gi each; all grow to 4Gi at once: 8Gi allows one.
	vms, _, err := user.List(ctx, "VirtualMachine", "lab", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	errs = make(chan error, len(vms))
	for _, vm := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := user.Patch(ctx, "VirtualMachine", "lab", vm.GetMetadata().Name, map[string]any{"spec": map[string]any{"memory": "4Gi"}}, false)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	ok = 0
	for err := range errs {
		if err == nil {
			ok++
		} else if !api.IsQuotaExceeded(err) {
			t.Errorf("a racing update failed for another reason than the quota: %v", err)
		}
	}
	vms, _, _ = user.List(ctx, "VirtualMachine", "lab", client.ListOptions{})
	var total api.Bytes
	for _, vm := range vms {
		total += vm.(*api.VirtualMachine).Spec.Memory
	}
	if ok != 1 || total != 6<<30 {
		t.Fatalf("%d racing growths passed, %s of memory used; want 1 and 6Gi", ok, total)
	}

	// The tenant's guard key goes with the tenant.
	guard := admission.QuotaGuardPrefix + "lab"
	if resp, err := env.Server.Etcd().Get(ctx, guard); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("guard key %s: %v, %v; want it there", guard, resp, err)
	}
	if _, err := env.Admin.Delete(ctx, "Tenant", "", "lab"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		resp, err := env.Server.Etcd().Get(ctx, guard)
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 0 {
			return fmt.Errorf("guard key %s outlived its tenant", guard)
		}
		return nil
	})
}

// TestQuotaOwnerReferenceExemptsNothing: an ownerReference a tenant writes
// pointing at its own VM exempts nothing from the volume quota; only a
// volume the server's controllers made for a VM's disk (their mark, which
// no client may write) is covered by the VM's count, and only up to the
// disk's size. Growing a volume that is being deleted is checked too.
func TestQuotaOwnerReferenceExemptsNothing(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	quotaTenant(t, env, api.Quota{VolumeGiB: 10})
	ctx := servertest.Ctx(t)
	user := env.User("alice", "lab", api.RoleTenantAdmin)
	internal, err := env.Server.InternalClient()
	if err != nil {
		t.Fatal(err)
	}

	vm := newVM("web", 1, 1<<30)
	vm.Spec.Disks = []api.VMDisk{{Image: "debian-12", Size: 8 << 30}}
	created, err := user.Create(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	uid := created.GetMetadata().UID
	owned := func(name string, size api.Bytes, mark string) *api.Volume {
		v := &api.Volume{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Volume"},
			Metadata: api.ObjectMeta{Name: name, Tenant: "lab", OwnerReferences: []api.OwnerReference{
				{Kind: "VirtualMachine", Name: "web", UID: uid, Controller: true}}},
			Spec: api.VolumeSpec{Size: size}}
		if mark != "" {
			v.Metadata.Annotations = map[string]string{api.AnnotationOwnerDisk: mark}
		}
		return v
	}

	// The audit's bypass: 500Gi volumes "owned" by the tenant's own VM.
	for _, name := range []string{"big1", "big2", "big3"} {
		_, err := user.Create(ctx, owned(name, 500<<30, ""))
		wantQuotaError(t, err, "tenant lab: quota exceeded for volumeGiB: requested 500Gi, used 8Gi of 10Gi")
	}
	// The controllers' mark is not the tenant's to write.
	_, err = user.Create(ctx, owned("web-disk0", 8<<30, api.OwnerDisk(uid, 0)))
	if api.ReasonOf(err) != api.ReasonInvalid || !strings.Contains(err.Error(), "metadata.annotations["+api.AnnotationOwnerDisk+"]") {
		t.Fatalf("a tenant's volume with the controllers' mark: got %v, want Invalid naming the annotation", err)
	}

	// A volume the controllers made for the VM's disk is the disk the VM
	// already counts.
	if _, err := internal.Create(ctx, owned("web-disk0", 8<<30, api.OwnerDisk(uid, 0))); err != nil {
		t.Fatalf("the controllers' volume for web's disk: %v", err)
	}
	if _, err := user.Create(ctx, owned("data", 2<<30, "")); err != nil {
		t.Fatalf("2Gi beside web's 8Gi disk in a 10Gi quota: %v", err)
	}
	_, err = user.Create(ctx, owned("more", 1<<30, ""))
	wantQuotaError(t, err, "tenant lab: quota exceeded for volumeGiB: requested 1Gi, used 10Gi of 10Gi")
	// Growing it past the disk's size counts the difference.
	_, err = user.Patch(ctx, "Volume", "lab", "web-disk0", map[string]any{"spec": map[string]any{"size": "500Gi"}}, false)
	wantQuotaError(t, err, "tenant lab: quota exceeded for volumeGiB: requested 492Gi, used 10Gi of 10Gi")
	// Pointing the mark at another disk is refused.
	_, err = user.Patch(ctx, "Volume", "lab", "web-disk0", map[string]any{"metadata": map[string]any{"annotations": map[string]any{api.AnnotationOwnerDisk: api.OwnerDisk(uid, 1)}}}, false)
	if api.ReasonOf(err) != api.ReasonInvalid {
		t.Fatalf("a tenant changing the controllers' mark: got %v, want Invalid", err)
	}

	// An object being deleted still holds its space: growing it is checked.
	if _, err := user.Patch(ctx, "Volume", "lab", "data", map[string]any{"metadata": map[string]any{"finalizers": []string{"example.com/hold"}}}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := user.Delete(ctx, "Volume", "lab", "data"); err != nil {
		t.Fatal(err)
	}
	_, err = user.Patch(ctx, "Volume", "lab", "data", map[string]any{"spec": map[string]any{"size": "500Gi"}}, false)
	wantQuotaError(t, err, "tenant lab: quota exceeded for volumeGiB: requested 500Gi, used 8Gi of 10Gi")

	vols, _, err := env.Admin.List(ctx, "Volume", "lab", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var total api.Bytes
	for _, v := range vols {
		total += v.(*api.Volume).Spec.Size
	}
	if len(vols) != 2 || total != 10<<30 {
		t.Fatalf("%d volumes of %s in all after the refusals; want web-disk0 and data, 10Gi", len(vols), total)
	}
}

// TestQuotaSizesPastInt64: a size too large for 64 bits is refused as
// invalid rather than wrapping to a negative size, which would count as
// room in the volume quota (and leave a VM that nothing can decode).
func TestQuotaSizesPastInt64(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	quotaTenant(t, env, api.Quota{VolumeGiB: 10})
	ctx := servertest.Ctx(t)
	user := env.User("alice", "lab", api.RoleTenantAdmin)
	vm := map[string]any{"apiVersion": api.APIVersion, "kind": "VirtualMachine", "metadata": map[string]any{"name": "huge"},
		"spec": map[string]any{"cpus": 1, "memory": "1Gi", "boot": map[string]any{"from": "kernel", "kernel": map[string]any{"image": "vmlinuz"}},
			"disks": []any{map[string]any{"image": "debian-12", "size": "1e19"}}}}
	err := user.Do(ctx, http.MethodPost, api.PathPrefix+"/tenants/lab/virtualmachines", vm, nil)
	if st, ok := err.(*api.Status); !ok || st.Code != http.StatusUnprocessableEntity || !strings.Contains(st.Message, "too large") {
		t.Fatalf("a disk of 1e19 bytes: %v, want 422 saying it is too large", err)
	}
	vms, _, err := env.Admin.List(ctx, "VirtualMachine", "lab", client.ListOptions{})
	if err != nil || len(vms) != 0 {
		t.Fatalf("after the refusal: %d VMs, %v", len(vms), err)
	}
}
