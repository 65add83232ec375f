package v1alpha1

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Scope says where objects of a kind live.
type Scope int

const (
	// ClusterScoped objects belong to the whole installation (Host, Site).
	ClusterScoped Scope = iota
	// TenantScoped objects always belong to one tenant (Network, VM).
	TenantScoped
	// TenantOptional objects belong to a tenant or, with no tenant, to the
	// cluster (a shared Image, an Event about a Host).
	TenantOptional
)

func (s Scope) String() string {
	return [...]string{"Cluster", "Tenant", "TenantOptional"}[s]
}

// Column is one column of the CLI's table for a kind.
type Column struct {
	Name string
	// Wide columns show only with -o wide.
	Wide bool
	Get  func(Object) string
}

// KindInfo describes a kind to the generic machinery.
type KindInfo struct {
	Kind       string
	Plural     string
	ShortNames []string
	Scope      Scope
	// SharedReadable marks a TenantOptional kind whose cluster-level
	// objects every tenant may read (shared Images). Without it, tenant
	// users see only their tenant's objects.
	SharedReadable bool
	// Confidential marks a kind whose objects are credentials (Secrets):
	// only cluster admins read or write them (not hosts, not cluster
	// viewers), and the server encrypts them at rest.
	Confidential bool
	// New returns an empty object of the kind with TypeMeta set.
	New func() Object
	// PlacedOn returns the host an object is placed on ("" for none). A
	// host's credential may write the status of objects placed on it.
	PlacedOn func(Object) string
	// Columns are shown after NAME by `hearth get`.
	Columns []Column
	// Description is one sentence for the OpenAPI document and `hearth api-resources`.
	Description string
}

// TenantScopedOrOptional reports whether objects of the kind may carry a tenant.
func (k *KindInfo) HasTenant() bool { return k.Scope != ClusterScoped }

var kinds = map[string]*KindInfo{}

// register adds a kind to the table. Every kind's file calls it from init.
func register[S any, T any](k KindInfo) {
	if k.New == nil {
		kind := k.Kind
		k.New = func() Object {
			return &Resource[S, T]{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: kind}}
		}
	}
	if _, dup := kinds[k.Kind]; dup {
		panic("v1alpha1: kind registered twice: " + k.Kind)
	}
	kinds[k.Kind] = &k
}

// Kinds returns every registered kind, sorted by name.
func Kinds() []*KindInfo {
	out := make([]*KindInfo, 0, len(kinds))
	for _, k := range kinds {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind < out[j].Kind })
	return out
}

// KindByName finds a kind by its name, plural or a short name, in any case:
// "VirtualMachine", "virtualmachines", "vm" and "vms" all work.
func KindByName(name string) (*KindInfo, error) {
	n := strings.ToLower(name)
	for _, k := range kinds {
		if strings.ToLower(k.Kind) == n || k.Plural == n {
			return k, nil
		}
		for _, s := range k.ShortNames {
			if s == n {
				return k, nil
			}
		}
	}
	return nil, fmt.Errorf("unknown kind %q (see `hearth api-resources`)", name)
}

// KindOf returns the kind of obj, or nil for a kind not registered.
func KindOf(obj Object) *KindInfo { return kinds[obj.GetTypeMeta().Kind] }

// KindByPlural finds a kind by its plural name as used in URLs.
func KindByPlural(plural string) (*KindInfo, bool) {
	for _, k := range kinds {
		if k.Plural == plural {
			return k, true
		}
	}
	return nil, false
}

// NewObject returns an empty object of the named kind.
func NewObject(kind string) (Object, error) {
	k, ok := kinds[kind]
	if !ok {
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	return k.New(), nil
}

// Age formats how long ago t was, the way tables show it (45s, 3m, 2h, 5d).
func Age(t *time.Time, now time.Time) string {
	if t == nil {
		return "<unknown>"
	}
	d := now.Sub(*t)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}
