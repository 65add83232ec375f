// Package auth decides who is calling the API and what they may do.
//
// Callers present bearer tokens. Tokens are random secrets shown once and
// stored only as SHA-256 hashes in etcd; the server keeps a mirror of the
// hashes and of the Users in memory (kept current by an etcd watch), so
// checking a token costs no etcd round trip and revoking one takes effect
// at once.
//
// There are three kinds of token: a user's (acting with the User's role), a
// host's (an agent acting only as its Host), and a join token (good only for
// registering a new host, which gets a host token in exchange).
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"math/big"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TokenPrefix is the etcd prefix under which token records are kept, by hash.
const TokenPrefix = "/hearth/tokens/"

// TokenKind says what a token stands for.
type TokenKind string

const (
	UserToken TokenKind = "user"
	HostToken TokenKind = "host"
	JoinToken TokenKind = "join"
)

// TokenRecord is what etcd holds for a token: never the secret itself.
type TokenRecord struct {
	ID          string     `json:"id"`
	Kind        TokenKind  `json:"kind"`
	User        string     `json:"user,omitempty"`
	Host        string     `json:"host,omitempty"`
	Description string     `json:"description,omitempty"`
	Created     time.Time  `json:"created"`
	Expires     *time.Time `json:"expires,omitempty"`
	// Site and Labels are given to hosts that join with a join token.
	Site   string            `json:"site,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Expired reports whether the token has run out at now.
func (r *TokenRecord) Expired(now time.Time) bool {
	return r.Expires != nil && now.After(*r.Expires)
}

const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// NewSecret returns a new token secret: a kind prefix and 40 random
// characters (238 bits), recognisable in logs and by secret scanners.
func NewSecret(kind TokenKind) string {
	b := make([]byte, 40)
	max := big.NewInt(int64(len(alphabet)))
	for i := range b {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(err)
		}
		b[i] = alphabet[n.Int64()]
	}
	return "hearth-" + string(kind) + "-" + string(b)
}

// Hash is how a secret is stored and looked up.
func Hash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// IDOf is a token's public id: the first 12 hex digits of its hash. It is
// what `hearth token list` shows and `hearth token delete` takes.
func IDOf(hash string) string { return hash[:12] }

// Principal is an authenticated caller.
type Principal struct {
	// Name is the user name, or "host/NAME" for a host.
	Name string
	Role api.Role
	// Tenant is the user's tenant ("" for cluster-wide users and hosts).
	Tenant string
	// Host is set for host credentials: the one Host it may act as.
	Host string
	// Join marks a join token, good only for registering a host.
	Join   bool
	Record *TokenRecord
}

// GlobalReader reports whether p may read every tenant's objects.
func (p *Principal) GlobalReader() bool {
	return p.Host != "" || (p.Tenant == "" && (p.Role == api.RoleClusterAdmin || p.Role == api.RoleViewer))
}

type principalKey struct{}

// WithPrincipal returns ctx carrying the caller p, for checks deeper in a
// request (admission) that depend on who writes.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the caller WithPrincipal put in ctx, or nil.
func PrincipalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}
