package v1alpha1

// Tenant is a group of people and the objects they own. Tenant-scoped
// objects of different tenants never see each other, in the API or on the
// wire.
type Tenant = Resource[TenantSpec, TenantStatus]

type TenantSpec struct {
	// DisplayName is a longer name for people, shown by describe.
	DisplayName string `json:"displayName,omitempty"`
	// Quota caps what the tenant may use; zero fields mean no limit.
	Quota Quota `json:"quota,omitempty"`
}

// Quota limits a tenant's use. A zero field is no limit.
type Quota struct {
	// VCPUs caps the virtual CPUs of the tenant's VMs.
	VCPUs int `json:"vcpus,omitempty"`
	// Memory caps the memory of the tenant's VMs ("8Gi").
	Memory Bytes `json:"memory,omitempty"`
	// VolumeGiB caps the size of the tenant's volumes, the disks its VMs
	// clone from images included, in GiB.
	VolumeGiB int64 `json:"volumeGiB,omitempty"`
	// VMs caps how many VMs the tenant has.
	VMs int `json:"vms,omitempty"`
	// Networks caps how many Networks the tenant has.
	Networks int `json:"networks,omitempty"`
	// FloatingIPs caps the addresses a tenant may hold on external networks.
	FloatingIPs int `json:"floatingIPs,omitempty"`
	// ImageStorage caps the bytes of the tenant's uploaded images (`hearth
	// image upload`), which the API servers keep beside etcd.
	ImageStorage Bytes `json:"imageStorage,omitempty"`
}

// TenantStatus reports what a tenant uses against its quota.
type TenantStatus struct {
	CommonStatus `json:",inline"`
	Used         Quota `json:"used,omitempty"`
}

func (s *TenantSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	q := s.Quota
	for _, f := range []struct {
		name string
		v    int64
	}{{"vcpus", int64(q.VCPUs)}, {"memory", int64(q.Memory)}, {"volumeGiB", q.VolumeGiB}, {"vms", int64(q.VMs)}, {"networks", int64(q.Networks)}, {"floatingIPs", int64(q.FloatingIPs)}, {"imageStorage", int64(q.ImageStorage)}} {
		if f.v < 0 {
			es.Add(path+".quota."+f.name, "%d is negative", f.v)
		}
	}
	return es
}

func init() {
	register[TenantSpec, TenantStatus](KindInfo{
		Kind: "Tenant", Plural: "tenants", ShortNames: []string{"tenant"}, Scope: ClusterScoped,
		Description: "A group of people and the objects they own, isolated from other tenants.",
		Columns: []Column{
			{Name: "DISPLAY NAME", Get: func(o Object) string { return o.(*Tenant).Spec.DisplayName }},
		},
	})
}
