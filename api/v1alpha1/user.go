package v1alpha1

// Role is what a user may do.
type Role string

const (
	// RoleClusterAdmin may do anything anywhere.
	RoleClusterAdmin Role = "cluster-admin"
	// RoleTenantAdmin may change everything in its tenant, its users included.
	RoleTenantAdmin Role = "tenant-admin"
	// RoleTenantMember may change the tenant's resources but not its users.
	RoleTenantMember Role = "tenant-member"
	// RoleViewer may read: a tenant's objects, or with no tenant everything.
	RoleViewer Role = "viewer"
)

// User is a person or a program that talks to the API with bearer tokens.
// Tokens are created with `hearth token create --user NAME` and stored hashed.
type User = Resource[UserSpec, UserStatus]

type UserSpec struct {
	// Tenant the user belongs to; empty for cluster-wide users
	// (cluster-admin, or a viewer of everything).
	Tenant string `json:"tenant,omitempty"`
	// Role is cluster-admin (anything anywhere), tenant-admin (everything
	// in its tenant, its users included), tenant-member (the tenant's
	// resources, not its users) or viewer (reads only: its tenant's
	// objects, or with no tenant everything).
	Role Role `json:"role"`
	// FullName and Email say who the user is, for people; Hearth sends
	// nothing to the address.
	FullName string `json:"fullName,omitempty"`
	Email    string `json:"email,omitempty"` // see FullName
	// Disabled users' tokens are refused.
	Disabled bool `json:"disabled,omitempty"`
}

type UserStatus struct {
	CommonStatus `json:",inline"`
}

func (s *UserSpec) Default() {
	if s.Role == "" {
		s.Role = RoleTenantMember
	}
}

func (s *UserSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	es = append(es, ValidateOneOf(path+".role", string(s.Role), string(RoleClusterAdmin), string(RoleTenantAdmin), string(RoleTenantMember), string(RoleViewer))...)
	switch s.Role {
	case RoleClusterAdmin:
		if s.Tenant != "" {
			es.Add(path+".tenant", "a cluster-admin belongs to no tenant")
		}
	case RoleTenantAdmin, RoleTenantMember:
		if s.Tenant == "" {
			es.Add(path+".tenant", "is required for role %s", s.Role)
		}
	}
	if s.Tenant != "" {
		es = append(es, ValidateName(path+".tenant", s.Tenant)...)
	}
	return es
}

func init() {
	register[UserSpec, UserStatus](KindInfo{
		Kind: "User", Plural: "users", ShortNames: []string{"user"}, Scope: ClusterScoped,
		Description: "A person or program with a role, in a tenant or cluster-wide, that authenticates with bearer tokens.",
		Columns: []Column{
			{Name: "TENANT", Get: func(o Object) string { return o.(*User).Spec.Tenant }},
			{Name: "ROLE", Get: func(o Object) string { return string(o.(*User).Spec.Role) }},
		},
	})
}
