// Package auth decides who is calling the API and what they may do.
//
// Callers present bearer tokens. Tokens are random secrets shown once and
// stored only as SHA-256 hashes in etcd; the server keeps a mirror of the
// hashes and of the Users in memory (kept current by an etcd watch), so
// checking a token costs no etcd round trip and revoking one takes effect
// at once.
//
// There are four kinds of token: a user's (acting with the User's role), a
// host's (an agent acting only as its Host), a boot service's (discovering
// Machines and recording what it observes of them), and a join token (good
// only for registering a new host or boot service, which gets a token of
// its own in exchange).
//
// A user's or host's token is bound to the uid of its User or Host, not
// just the name: it is deleted in the transaction that deletes its owner
// (see OwnerPrefix), and the Authenticator refuses it if the object of
// that name has another uid, so a User or Host made again under an old
// name never inherits the old one's tokens.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"math/big"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TokenPrefix is the etcd prefix under which token records are kept, by hash.
const TokenPrefix = "/hearth/tokens/"

// OwnerPrefix indexes the tokens of each User and Host by the owner's uid:
// OwnerPrefix + uid + "/" + hash, written and deleted with the token
// record, so deleting the owner can find and delete its tokens in its own
// transaction.
const OwnerPrefix = "/hearth/token-owners/"

// OwnerKey is the index key of the token with hash owned by uid.
func OwnerKey(uid, hash string) string { return OwnerPrefix + uid + "/" + hash }

const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// NewSecret returns a new token secret: a kind prefix and 40 random
// characters (238 bits), recognisable in logs and by secret scanners.
func NewSecret(kind api.TokenKind) string {
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
	// Name is the user name, "host/NAME" for a host, or "boot/NAME" for a
	// boot service.
	Name string
	Role api.Role
	// Tenant is the user's tenant ("" for cluster-wide users and hosts).
	Tenant string
	// Host is set for host credentials: the one Host it may act as.
	Host string
	// Boot is set for a boot service's credential: its name.
	Boot string
	// Join marks a join token, good only for registering a host.
	Join bool
	// Internal marks the server's own controllers (a process-local
	// secret, never stored). Only their writes may carry the marks that
	// tell server-made objects from a client's (api.AnnotationOwnerDisk).
	Internal bool
	Record   *api.TokenRecord
	// TokenHash is the hash of the token presented ("" for the server's
	// own credential): its record is at TokenPrefix + TokenHash.
	TokenHash string
	// Scope decides, for a host credential, which objects that depend on
	// others the host needs (hostscope.go); nil reads none of them.
	Scope HostScope
}

// HostCredential reports whether p is a host's or a boot service's
// credential rather than a person's.
func (p *Principal) HostCredential() bool { return p.Host != "" || p.Boot != "" }

// GlobalReader reports whether p may read every tenant's objects.
func (p *Principal) GlobalReader() bool {
	return p.HostCredential() || (p.Tenant == "" && (p.Role == api.RoleClusterAdmin || p.Role == api.RoleViewer))
}
