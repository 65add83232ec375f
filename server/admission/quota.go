// Package admission holds the server's admission checks: rules that need
// other objects than the one being written (quotas, overlapping subnets)
// or who writes it (the URLs hosts will fetch), run by the API after
// validation and before the write. Each check has the shape of
// server.Admitter, func(ctx, principal, obj, old) error, with old nil on a
// create.
package admission

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/store"
)

// Quota enforces each tenant's spec.quota on creates and updates of
// VirtualMachines (vcpus, memory, vms), Volumes (volumeGiB), Networks
// (networks) and FloatingIPs (floatingIPs), and, through ImageStorage,
// which the upload handler asks, on the bytes of uploaded images
// (imageStorage).
//
// Usage is summed from the tenant's objects in etcd, leaving out the
// stored version of the object being updated and adding the new one. Only
// a write that makes a dimension grow is checked against it, so lowering a
// quota below what a tenant already uses never blocks writes that do not
// add to it (binding a VM to a host, removing a finalizer).
//
// Volume GiB counts Volumes and the disks VMs clone from an image (the
// disk's size, or the image's virtual size when it has none): the
// volume is made for the VM, so the VM is what asks for the space, and
// refusing the VM is clearer than a VM that never starts. A Volume that
// Hearth's controllers made for such a disk (api.AnnotationOwnerDisk,
// which only they may write) is not counted a second time, up to the size
// the VM counts for the disk; an ownerReference a client wrote exempts
// nothing, since anyone may write one. A cdrom uses its image read-only
// and costs nothing. Objects being deleted still count: they hold what
// they use until gone, and growing one is checked like any other growth.
//
// Two writes at once cannot both pass on the same free room: a checked
// write is guarded (store.Guard) by a per-tenant key it touches, so the
// second of two racing writes fails its transaction and is checked again.
type Quota struct {
	store *store.Store
}

// QuotaGuardPrefix is where the per-tenant guard keys live.
const QuotaGuardPrefix = "/hearth/guards/quota/"

// TenantHooks removes a tenant's guard keys (quota, subnets) with the
// tenant (install with store.SetHooks("Tenant", …)).
type TenantHooks struct{}

// OnCreate holds nothing.
func (TenantHooks) OnCreate(context.Context, clientv3.KV, api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	return nil, nil, nil
}

// OnDelete deletes the tenant's guard keys.
func (TenantHooks) OnDelete(_ context.Context, _ clientv3.KV, obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	return nil, []clientv3.Op{clientv3.OpDelete(QuotaGuardPrefix + obj.GetMetadata().Name),
		clientv3.OpDelete(SubnetGuardPrefix + obj.GetMetadata().Name)}, nil
}

// NewQuota returns the quota check over a store.
func NewQuota(st *store.Store) *Quota { return &Quota{store: st} }

// usage is what objects take from a quota; volume space in bytes.
type usage struct {
	vcpus, vms, networks int64
	memory, volume       int64
	floatingIPs          int64
}

// dimension is one quota field, how to read it, and how to show amounts.
type dimension struct {
	name  string
	limit func(api.Quota) int64
	get   func(usage) int64
	show  func(int64) string
	// kinds whose objects add to it.
	kinds []string
}

func count(n int64) string     { return strconv.FormatInt(n, 10) }
func showBytes(n int64) string { return api.Bytes(n).String() }

var dimensions = []dimension{
	{"vms", func(q api.Quota) int64 { return int64(q.VMs) }, func(u usage) int64 { return u.vms }, count, []string{"VirtualMachine"}},
	{"vcpus", func(q api.Quota) int64 { return int64(q.VCPUs) }, func(u usage) int64 { return u.vcpus }, count, []string{"VirtualMachine"}},
	{"memory", func(q api.Quota) int64 { return int64(q.Memory) }, func(u usage) int64 { return u.memory }, showBytes, []string{"VirtualMachine"}},
	{"volumeGiB", func(q api.Quota) int64 { return q.VolumeGiB << 30 }, func(u usage) int64 { return u.volume }, showBytes, []string{"Volume", "VirtualMachine"}},
	{"networks", func(q api.Quota) int64 { return int64(q.Networks) }, func(u usage) int64 { return u.networks }, count, []string{"Network"}},
	{"floatingIPs", func(q api.Quota) int64 { return int64(q.FloatingIPs) }, func(u usage) int64 { return u.floatingIPs }, count, []string{"FloatingIP"}},
}

// Admit refuses a create or update that would take the tenant past its
// quota, with a 403 QuotaExceeded that names the quota and the numbers,
// and a client's write of the controllers' quota mark.
func (q *Quota) Admit(ctx context.Context, p *auth.Principal, obj, old api.Object) error {
	if err := checkOwnerDiskMark(p, obj, old); err != nil {
		return err
	}
	kind := obj.GetTypeMeta().Kind
	m := obj.GetMetadata()
	var relevant []dimension
	for _, d := range dimensions {
		if slices.Contains(d.kinds, kind) {
			relevant = append(relevant, d)
		}
	}
	if len(relevant) == 0 || m.Tenant == "" || (old != nil && !mayGrow(obj, old)) {
		return nil
	}
	tk, _ := api.KindByName("Tenant")
	t, err := q.store.Get(ctx, tk, "", m.Tenant)
	if api.IsNotFound(err) {
		return nil // the API reports the missing tenant itself
	}
	if err != nil {
		return err
	}
	quota := t.(*api.Tenant).Spec.Quota
	images := &lookups{q: q, tenant: m.Tenant, skip: quota.VolumeGiB == 0}
	if vm, ok := obj.(*api.VirtualMachine); ok && old != nil {
		// Volumes made for this VM's disks are covered by what it asks
		// for now, not by what is stored (with the stored uid: the store
		// keeps it whatever the client sent).
		c := *vm
		c.Metadata.UID = old.GetMetadata().UID
		images.vms = map[string]*api.VirtualMachine{m.Name: &c}
	}
	// On a create the status is the client's and about to be cleared;
	// on an update it is the stored one.
	requested, err := q.usageOf(ctx, obj, images, old != nil)
	if err != nil {
		return err
	}
	var before usage
	if old != nil {
		if before, err = q.usageOf(ctx, old, images, true); err != nil {
			return err
		}
	}
	// Check only the limited dimensions this write makes grow.
	var checked []dimension
	kinds := map[string]bool{}
	for _, d := range relevant {
		if d.limit(quota) > 0 && d.get(requested) > d.get(before) {
			checked = append(checked, d)
			for _, k := range d.kinds {
				kinds[k] = true
			}
		}
	}
	if len(checked) == 0 {
		return nil
	}
	// Writes that grow a tenant's limited usage are serialised through
	// one key per tenant: read its revision before the usage, and the
	// write commits only if no other such write came in between.
	guard := QuotaGuardPrefix + m.Tenant
	rev, err := q.store.GuardRevision(ctx, guard)
	if err != nil {
		return err
	}
	store.Guard(ctx, guard, rev)
	used, err := q.tenantUsage(ctx, m.Tenant, kinds, kind, m.Name, images)
	if err != nil {
		return err
	}
	var over []string
	for _, d := range checked {
		u, r, l := d.get(used), d.get(requested), d.limit(quota)
		if u+r > l {
			over = append(over, fmt.Sprintf("quota exceeded for %s: requested %s, used %s of %s", d.name, d.show(r), d.show(u), d.show(l)))
		}
	}
	if len(over) > 0 {
		return api.NewQuotaExceeded("tenant %s: %s", m.Tenant, strings.Join(over, "; "))
	}
	return nil
}

// mayGrow says whether an update from old to obj can make any quota
// dimension grow: false when nothing usage is computed from changed (a
// VM's vCPUs, memory and disks: binding it to a host, its labels, its
// finalizers), and for kinds that count 1 each whatever they hold. Such
// an update is admitted without reading the tenant: a batch of bindings
// then costs no read per VM.
func mayGrow(obj, old api.Object) bool {
	switch o := obj.(type) {
	case *api.VirtualMachine:
		p, ok := old.(*api.VirtualMachine)
		return !ok || o.Spec.CPUs != p.Spec.CPUs || o.Spec.Memory != p.Spec.Memory || !slices.EqualFunc(o.Spec.Disks, p.Spec.Disks, sameDisk)
	case *api.Network, *api.FloatingIP:
		return false
	}
	return true
}

// sameDisk says whether two disks cost the same volume space.
func sameDisk(a, b api.VMDisk) bool { return reflect.DeepEqual(a, b) }

// tenantUsage sums the tenant's stored objects of the given kinds, leaving
// out the object kind/name (the stored version of the one being written).
func (q *Quota) tenantUsage(ctx context.Context, tenant string, kinds map[string]bool, skipKind, skipName string, images *lookups) (usage, error) {
	var total usage
	for kind := range kinds {
		k, err := api.KindByName(kind)
		if err != nil {
			return usage{}, err
		}
		objs, _, err := q.store.List(ctx, k, store.TenantPrefix(k, tenant), nil)
		if err != nil {
			return usage{}, err
		}
		for _, o := range objs {
			if kind == skipKind && o.GetMetadata().Name == skipName {
				continue
			}
			u, err := q.usageOf(ctx, o, images, true)
			if err != nil {
				return usage{}, err
			}
			// Add only what this kind contributes, so a VM's disks and
			// the Volumes are each summed once.
			switch kind {
			case "VirtualMachine":
				total.vms += u.vms
				total.vcpus += u.vcpus
				total.memory += u.memory
				total.volume += u.volume
			case "Volume":
				total.volume += u.volume
			case "Network":
				total.networks += u.networks
			case "FloatingIP":
				total.floatingIPs += u.floatingIPs
			}
		}
	}
	return total, nil
}

// usageOf is what one object takes. trustStatus says whether its status
// was written by Hearth (stored objects) rather than sent by a client.
func (q *Quota) usageOf(ctx context.Context, obj api.Object, images *lookups, trustStatus bool) (usage, error) {
	switch o := obj.(type) {
	case *api.VirtualMachine:
		u := usage{vms: 1, vcpus: int64(o.Spec.CPUs), memory: int64(o.Spec.Memory)}
		for _, d := range o.Spec.Disks {
			size, err := diskSize(ctx, d, images)
			if err != nil {
				return usage{}, err
			}
			u.volume += size
		}
		return u, nil
	case *api.Volume:
		size := int64(o.Spec.Size)
		if size == 0 && trustStatus {
			size = int64(o.Status.Size)
		}
		if size == 0 && o.Spec.Source.Image != "" {
			s, err := images.size(ctx, o.Spec.Source.Image)
			if err != nil {
				return usage{}, err
			}
			size = s
		}
		covered, err := coveredByOwner(ctx, o, images)
		if err != nil {
			return usage{}, err
		}
		return usage{volume: max(0, size-covered)}, nil
	case *api.Network:
		return usage{networks: 1}, nil
	case *api.FloatingIP:
		return usage{floatingIPs: 1}, nil
	}
	return usage{}, nil
}

// diskSize is the volume space a VM's disk asks for: an image disk's
// size, or its image's virtual size when it has none. A disk that names a
// Volume costs nothing here (the Volume counts), nor does a cdrom.
func diskSize(ctx context.Context, d api.VMDisk, images *lookups) (int64, error) {
	if d.Image == "" || d.Device == "cdrom" {
		return 0, nil
	}
	if d.Size != 0 {
		return int64(d.Size), nil
	}
	return images.size(ctx, d.Image)
}

// coveredByOwner is how much of a Volume its VM's quota already counts:
// the size of the VM disk the controllers made it for. That needs their
// mark (api.AnnotationOwnerDisk, which no client can write), a controller
// ownerReference to the VM the mark names, that VM still stored with that
// uid, and the disk still one the VM counts. Anything short of that
// covers nothing: an ownerReference anyone may write.
func coveredByOwner(ctx context.Context, vol *api.Volume, l *lookups) (int64, error) {
	mark, ok := vol.Metadata.Annotations[api.AnnotationOwnerDisk]
	if !ok || l.skip {
		return 0, nil
	}
	uid, index, ok := api.ParseOwnerDisk(mark)
	if !ok {
		return 0, nil
	}
	owner := ""
	for _, ref := range vol.Metadata.OwnerReferences {
		if ref.Kind == "VirtualMachine" && ref.Controller && ref.UID == uid {
			owner = ref.Name
		}
	}
	if owner == "" {
		return 0, nil
	}
	vm, err := l.vm(ctx, owner)
	if err != nil || vm == nil || vm.Metadata.UID != uid || index >= len(vm.Spec.Disks) {
		return 0, err
	}
	return diskSize(ctx, vm.Spec.Disks[index], l)
}

// checkOwnerDiskMark refuses a client's write that adds or changes the
// controllers' quota mark (api.AnnotationOwnerDisk). Removing it is
// allowed: the Volume then counts in full, and the write is checked as
// the growth it is.
func checkOwnerDiskMark(p *auth.Principal, obj, old api.Object) error {
	if p.Internal {
		return nil
	}
	v, set := obj.GetMetadata().Annotations[api.AnnotationOwnerDisk]
	if !set {
		return nil
	}
	if old != nil {
		if was, ok := old.GetMetadata().Annotations[api.AnnotationOwnerDisk]; ok && was == v {
			return nil
		}
	}
	m := obj.GetMetadata()
	return api.NewInvalid(obj.GetTypeMeta().Kind, m.Name, api.FieldErrors{{
		Field:  "metadata.annotations[" + api.AnnotationOwnerDisk + "]",
		Detail: "is written only by Hearth's controllers, on a volume they make for a VM's disk; remove it",
	}})
}

// lookups reads, once per admission, what usage depends on besides the
// objects summed: the virtual size of the images a tenant's disks are
// cloned from (the tenant's own image of a name, else the shared one; an
// image not yet fetched has no size and counts 0), and the VMs that own
// volumes made for their disks.
type lookups struct {
	q      *Quota
	tenant string
	// skip answers 0 without reading images, when no volume quota is set.
	skip  bool
	sizes map[string]int64
	// vms by name; nil entries are VMs that do not exist.
	vms map[string]*api.VirtualMachine
}

func (s *lookups) vm(ctx context.Context, name string) (*api.VirtualMachine, error) {
	if vm, ok := s.vms[name]; ok {
		return vm, nil
	}
	if s.vms == nil {
		s.vms = map[string]*api.VirtualMachine{}
	}
	k, _ := api.KindByName("VirtualMachine")
	o, err := s.q.store.Get(ctx, k, s.tenant, name)
	if api.IsNotFound(err) {
		s.vms[name] = nil
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s.vms[name] = o.(*api.VirtualMachine)
	return s.vms[name], nil
}

func (s *lookups) size(ctx context.Context, name string) (int64, error) {
	if s.skip {
		return 0, nil
	}
	if s.sizes == nil {
		s.sizes = map[string]int64{}
		k, _ := api.KindByName("Image")
		// Shared images first, so the tenant's own overwrite them.
		for _, tenant := range []string{"", s.tenant} {
			objs, _, err := s.q.store.List(ctx, k, store.TenantPrefix(k, tenant), nil)
			if err != nil {
				return 0, err
			}
			for _, o := range objs {
				img := o.(*api.Image)
				s.sizes[img.Metadata.Name] = int64(max(img.Status.VirtualSize, img.Status.Size))
			}
		}
	}
	return s.sizes[name], nil
}

// ImageStorage returns what the tenant's uploaded images take (their
// recorded sizes, leaving out the image name, whose content is being
// uploaded) and its spec.quota.imageStorage (0: no limit). With a limit it
// also guards the write in ctx (store.WithGuards) by the tenant's quota
// key, like the checks of Admit, so two uploads that finish at once are
// checked one after the other. Uploads are not objects being written, so
// the upload handler asks this itself: before it streams (to stop at the
// room left) and in the write that records the upload.
func (q *Quota) ImageStorage(ctx context.Context, tenant, name string) (used, limit int64, err error) {
	if tenant == "" {
		return 0, 0, nil // shared images are the cluster admins'
	}
	tk, _ := api.KindByName("Tenant")
	t, err := q.store.Get(ctx, tk, "", tenant)
	if api.IsNotFound(err) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	limit = int64(t.(*api.Tenant).Spec.Quota.ImageStorage)
	if limit == 0 {
		return 0, 0, nil
	}
	guard := QuotaGuardPrefix + tenant
	rev, err := q.store.GuardRevision(ctx, guard)
	if err != nil {
		return 0, 0, err
	}
	store.Guard(ctx, guard, rev)
	k, _ := api.KindByName("Image")
	objs, _, err := q.store.List(ctx, k, store.TenantPrefix(k, tenant), nil)
	if err != nil {
		return 0, 0, err
	}
	for _, o := range objs {
		img := o.(*api.Image)
		if img.Spec.Source.Upload && img.Metadata.Name != name {
			used += int64(img.Status.Size)
		}
	}
	return used, limit, nil
}

// ImageStorageExceeded is the refusal of an upload of requested bytes
// past the tenant's image storage quota; requested < 0 says only that
// the upload went on past what was left.
func ImageStorageExceeded(tenant string, requested, used, limit int64) error {
	req := showBytes(requested)
	if requested < 0 {
		req = "more than the " + showBytes(max(limit-used, 0)) + " left"
	}
	return api.NewQuotaExceeded("tenant %s: quota exceeded for imageStorage: requested %s, used %s of %s",
		tenant, req, showBytes(used), showBytes(limit))
}
