package v1alpha1

import "net/url"

// PathPrefix is where the API is served.
const PathPrefix = "/apis/" + Group + "/" + Version

// CollectionPath is the URL path of a kind's objects in a tenant. An empty
// tenant addresses cluster-scoped kinds, the cluster-level objects of a
// TenantOptional kind, or (for reads) every tenant at once.
func CollectionPath(k *KindInfo, tenant string) string {
	if tenant != "" && k.Scope != ClusterScoped {
		return PathPrefix + "/tenants/" + url.PathEscape(tenant) + "/" + k.Plural
	}
	return PathPrefix + "/" + k.Plural
}

// ObjectPath is the URL path of one object.
func ObjectPath(k *KindInfo, tenant, name string) string {
	return CollectionPath(k, tenant) + "/" + url.PathEscape(name)
}

// ListMeta is the metadata of a list: the revision it is consistent at,
// from which a watch continues.
type ListMeta struct {
	ResourceVersion string `json:"resourceVersion"`
}

// WatchEvent is one line of a watch stream.
type WatchEvent struct {
	// Type is ADDED, MODIFIED, DELETED, BOOKMARK or ERROR.
	Type string `json:"type"`
	// Object is the object (for ERROR, a Status; for BOOKMARK, only
	// apiVersion, kind and metadata.resourceVersion).
	Object any `json:"object"`
}

// The paths of the endpoints that are not objects.
const (
	// WhoAmIPath says who the caller is (WhoAmI).
	WhoAmIPath = PathPrefix + "/whoami"
	// JoinPath exchanges a join token for a host's or boot service's
	// credential (JoinRequest, JoinResponse).
	JoinPath = PathPrefix + "/join"
	// JoinTokensPath is the collection of join tokens, and HostTokensPath
	// that of hosts' and boot services' credentials (cluster admins
	// only); a token is revoked at the collection's path + "/" + its id.
	JoinTokensPath = PathPrefix + "/jointokens"
	HostTokensPath = PathPrefix + "/hosttokens"
)

// UserTokensPath is the collection of a User's tokens.
func UserTokensPath(user string) string {
	return PathPrefix + "/users/" + url.PathEscape(user) + "/tokens"
}
