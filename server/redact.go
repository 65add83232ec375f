package server

import (
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
)

// Credentials in specs (api.Redactor: BMC passwords, webhook tokens) are
// served to cluster admins only. Viewers, tenant users and hosts read the
// same objects with them blanked: a read-only role must not hand out the
// keys to the machines' power.

// seesCredentials reports whether p reads credentials in specs.
func seesCredentials(p *auth.Principal) bool {
	return !p.HostCredential() && !p.Join && p.Role == api.RoleClusterAdmin
}

// hasCredentials reports whether objects of kind k may hold credentials.
func hasCredentials(k *api.KindInfo) bool {
	_, ok := k.New().SpecAny().(api.Redactor)
	return ok
}

// shown returns obj as p may see it: obj itself, or a copy with its
// credentials blanked.
func shown(p *auth.Principal, obj api.Object) api.Object {
	if obj == nil || seesCredentials(p) {
		return obj
	}
	if _, ok := obj.SpecAny().(api.Redactor); !ok {
		return obj
	}
	c := api.DeepCopy(obj)
	c.SpecAny().(api.Redactor).Redact()
	return c
}
