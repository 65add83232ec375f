package v1alpha1

import "time"

// The bodies of the endpoints that are not objects: who the caller is,
// tokens, join tokens and joining (see paths.go for where they are
// served). They are part of the API as much as the kinds are, so the
// server, the client and the OpenAPI document share these types.

// WhoAmI is who the server takes the caller to be.
type WhoAmI struct {
	// Name is the user's name, host/NAME for a host's credential, or
	// boot/NAME for a boot service's.
	Name string `json:"name"`
	// Role is the role the caller acts with.
	Role Role `json:"role"`
	// Tenant is the user's tenant; empty for cluster-wide users, hosts and
	// boot services.
	Tenant string `json:"tenant"`
	// Host is the one Host a host's credential acts as.
	Host string `json:"host"`
	// Boot is the name of a boot service's credential.
	Boot string `json:"boot,omitempty"`
}

// TokenKind says what a token stands for.
type TokenKind string

const (
	// UserToken acts with its User's role.
	UserToken TokenKind = "user"
	// HostToken is an agent's: it acts only as its Host.
	HostToken TokenKind = "host"
	// BootToken is a boot service's: it discovers Machines and records
	// what it observes of them, and acts as no Host.
	BootToken TokenKind = "boot"
	// JoinToken is good only for registering a host or boot service, which
	// gets a token of its own in exchange.
	JoinToken TokenKind = "join"
)

// DefaultJoinTTL is how long a join token lives when its request names no
// TTL: a join token lets a machine become a host, so it should not linger.
const DefaultJoinTTL = 24 * time.Hour

// TokenRecord is a token as the server stores it: never its secret, only
// what it is for.
type TokenRecord struct {
	// ID is the token's public id: the first 12 hex digits of the SHA-256
	// of its secret, as `hearth token list` shows and `hearth token
	// delete` takes.
	ID string `json:"id"`
	// Kind is what the token stands for: user, host, boot or join.
	Kind TokenKind `json:"kind"`
	// User is the User a user token belongs to.
	User string `json:"user,omitempty"`
	// Host is the host of a host token, the name of a boot service's
	// token, and, on a join token, the one existing Host it may re-join
	// (empty: it registers new hosts only).
	Host string `json:"host,omitempty"`
	// UID is the uid of the User or Host a user or host token belongs to.
	UID         string     `json:"uid,omitempty"`
	Description string     `json:"description,omitempty"`
	Created     time.Time  `json:"created"`
	Expires     *time.Time `json:"expires,omitempty"`
	// Site and Labels are given to hosts that join with a join token.
	Site   string            `json:"site,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	// Reusable join tokens register any number of hosts until they
	// expire; others are spent by the first join.
	Reusable bool `json:"reusable,omitempty"`
	// Uses counts the joins of a reusable join token.
	Uses int `json:"uses,omitempty"`
}

// Expired reports whether the token has run out at now.
func (r *TokenRecord) Expired(now time.Time) bool {
	return r.Expires != nil && now.After(*r.Expires)
}

// TokenRequest asks for a new token: a user's, or a join token. Site,
// Labels, Host and Reusable are for join tokens only.
type TokenRequest struct {
	// Description says what the token is for; token lists show it.
	Description string `json:"description,omitempty"`
	// TTL is how long the token lives, such as "24h"; empty means no
	// expiry for a user's token and 24h for a join token.
	TTL string `json:"ttl,omitempty"`
	// Site and Labels are given to hosts joining with a join token.
	Site   string            `json:"site,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	// Host makes a join token that re-joins this existing Host, and
	// nothing else: the host gets a new credential and its old ones are
	// revoked. Without it, a join token registers new hosts only.
	Host string `json:"host,omitempty"`
	// Reusable join tokens register hosts until they expire; others are
	// spent by the first join.
	Reusable bool `json:"reusable,omitempty"`
}

// TokenResponse is a new token: its record and its secret, which is shown
// this once (the server keeps only its hash).
type TokenResponse struct {
	TokenRecord `json:",inline"`
	// Token is the secret, to send as `Authorization: Bearer TOKEN`.
	Token string `json:"token"`
}

// TokenList is a list of tokens, without their secrets.
type TokenList struct {
	Items []TokenRecord `json:"items"`
}

// JoinRequest registers a host, or a boot service, with a join token.
type JoinRequest struct {
	// Host is the name of the Host to make, or of the boot service.
	Host string `json:"host"`
	// Address is the host's underlay IP: the new Host's spec.address.
	Address string `json:"address,omitempty"`
	// Boot asks for a boot service's credential named Host instead of a
	// Host: it discovers Machines and records their timelines, and acts
	// as no Host.
	Boot bool `json:"boot,omitempty"`
}

// JoinResponse gives a joining host its own credential, which replaces
// the join token.
type JoinResponse struct {
	// Token is the host's (or boot service's) own secret.
	Token string `json:"token"`
	// CA is the cluster CA, PEM-encoded, to trust from now on.
	CA string `json:"ca"`
	// Kind is host or boot, and Host the name the credential acts as.
	Kind TokenKind `json:"kind"`
	Host string    `json:"host"`
	// Site and Labels are what the join token gave the new Host.
	Site   string            `json:"site,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}
