package auth

import (
	api "hearth.dev/hearth/api/v1alpha1"
)

// Verb is what a request does.
type Verb string

const (
	Get          Verb = "get"
	List         Verb = "list"
	Watch        Verb = "watch"
	Create       Verb = "create"
	Update       Verb = "update"
	Delete       Verb = "delete"
	UpdateStatus Verb = "update-status"
)

func (v Verb) write() bool { return v != Get && v != List && v != Watch }

// Request is what an authorization decision is about.
type Request struct {
	Verb Verb
	Kind *api.KindInfo
	// Tenant is the tenant the request addresses ("" for cluster-scoped
	// objects, the cluster-level objects of a TenantOptional kind, or a
	// list across all tenants when AllTenants is set).
	Tenant     string
	AllTenants bool
	Name       string
	// Stored is the object as stored, for requests on an existing object;
	// New is the object being written. Either may be nil.
	Stored, New api.Object
}

// Authorize returns nil if p may do r, or a Forbidden error that says what
// was refused. Tenant isolation is decided here and nowhere else.
func Authorize(p *Principal, r Request) error {
	if p.Join {
		return forbid(p, r, "a join token may only register a host")
	}
	if p.Host != "" {
		return authorizeHost(p, r)
	}
	if p.Role == api.RoleClusterAdmin {
		return nil
	}
	if r.Verb.write() && p.Role == api.RoleViewer {
		return forbid(p, r, "viewers may not change anything")
	}
	if p.Tenant == "" {
		// A cluster-wide viewer reads everything.
		if p.Role == api.RoleViewer {
			return nil
		}
		return forbid(p, r, "no role grants it")
	}
	// From here p is a user of one tenant.
	if r.AllTenants {
		return forbid(p, r, "only cluster-wide users may list across tenants")
	}
	switch r.Kind.Kind {
	case "Tenant":
		if !r.Verb.write() && (r.Name == p.Tenant || r.Verb == List || r.Verb == Watch) {
			return nil // lists and watches are filtered to their own tenant
		}
		return forbid(p, r, "tenant users may only read their own Tenant")
	case "User":
		return authorizeUserAdmin(p, r)
	}
	switch r.Kind.Scope {
	case api.ClusterScoped:
		return forbid(p, r, r.Kind.Kind+" is cluster infrastructure")
	case api.TenantOptional:
		if r.Tenant == "" {
			if r.Kind.SharedReadable && !r.Verb.write() {
				return nil
			}
			return forbid(p, r, "cluster-level "+r.Kind.Plural+" are managed by cluster admins")
		}
	}
	if r.Tenant != p.Tenant {
		return forbid(p, r, "it belongs to another tenant")
	}
	return nil
}

// authorizeUserAdmin lets tenant admins manage the users of their tenant and
// every user read their own User.
func authorizeUserAdmin(p *Principal, r Request) error {
	if !r.Verb.write() && r.Name == p.Name {
		return nil
	}
	if p.Role != api.RoleTenantAdmin {
		return forbid(p, r, "only tenant admins manage users")
	}
	if r.Verb == List || r.Verb == Watch {
		return nil // filtered to the admin's tenant by the server
	}
	for _, o := range []api.Object{r.Stored, r.New} {
		if o == nil {
			continue
		}
		u := o.(*api.User)
		if u.Spec.Tenant != p.Tenant {
			return forbid(p, r, "the user belongs to another tenant")
		}
		if u.Spec.Role == api.RoleClusterAdmin {
			return forbid(p, r, "tenant admins may not grant cluster-admin")
		}
	}
	if r.Stored == nil && r.New == nil && r.Verb != Create {
		return forbid(p, r, "the user belongs to another tenant")
	}
	return nil
}

// VisibleTo reports whether an object may appear in p's lists and watches.
// It is the filter for requests Authorize allowed as a whole.
func VisibleTo(p *Principal, obj api.Object) bool {
	if p.GlobalReader() {
		return obj.GetTypeMeta().Kind != "User" || p.Host == ""
	}
	m := obj.GetMetadata()
	switch obj.GetTypeMeta().Kind {
	case "Tenant":
		return m.Name == p.Tenant
	case "User":
		return obj.(*api.User).Spec.Tenant == p.Tenant && (p.Role == api.RoleTenantAdmin || m.Name == p.Name)
	}
	k, err := api.KindByName(obj.GetTypeMeta().Kind)
	if err != nil {
		return false
	}
	switch k.Scope {
	case api.ClusterScoped:
		return false
	case api.TenantOptional:
		if m.Tenant == "" {
			return k.SharedReadable
		}
	}
	return m.Tenant == p.Tenant
}

// authorizeHost lets an agent read what it needs and write only its own
// Host and the status of objects placed on it.
func authorizeHost(p *Principal, r Request) error {
	if r.Kind.Kind == "User" {
		return forbid(p, r, "hosts do not read users")
	}
	if !r.Verb.write() {
		return nil
	}
	switch {
	case r.Kind.Kind == "Host":
		if r.Name == p.Host && r.Verb != Delete {
			return nil
		}
		return forbid(p, r, "a host may only write its own Host")
	case r.Kind.Kind == "Event" && r.Verb == Create:
		return nil
	case r.Verb == UpdateStatus && r.Kind.PlacedOn != nil && r.Stored != nil:
		if r.Kind.PlacedOn(r.Stored) != p.Host {
			return forbid(p, r, "it is not placed on this host")
		}
		if r.New != nil && r.Kind.PlacedOn(r.New) != p.Host {
			return forbid(p, r, "a host may not move an object to another host")
		}
		return nil
	}
	return forbid(p, r, "hosts may only write the status of objects placed on them")
}

func forbid(p *Principal, r Request, why string) error {
	target := r.Kind.Plural
	if r.Name != "" {
		target = r.Kind.Kind + " " + r.Name
	}
	where := ""
	switch {
	case r.AllTenants:
		where = " in all tenants"
	case r.Tenant != "":
		where = " in tenant " + r.Tenant
	}
	return api.NewForbidden("%s may not %s %s%s: %s", p.Name, r.Verb, target, where, why)
}
