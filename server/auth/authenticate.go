package auth

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/store"
)

// Authenticator turns bearer tokens into Principals.
type Authenticator struct {
	tokens *store.Mirror[*TokenRecord]
	users  *store.Mirror[*api.User]
	// internal maps process-local secrets (the server's own controllers)
	// to principals; they are never stored.
	internal map[string]*Principal
	now      func() time.Time
}

// NewAuthenticator mirrors token records and users from etcd. usersPrefix
// is where User objects are stored.
func NewAuthenticator(c *clientv3.Client, usersPrefix string) *Authenticator {
	return &Authenticator{
		tokens: store.NewMirror(c, TokenPrefix, func(b []byte) (*TokenRecord, error) {
			var r TokenRecord
			return &r, json.Unmarshal(b, &r)
		}),
		users: store.NewMirror(c, usersPrefix, func(b []byte) (*api.User, error) {
			var u api.User
			return &u, json.Unmarshal(b, &u)
		}),
		internal: map[string]*Principal{},
		now:      time.Now,
	}
}

// Run keeps the mirrors current until ctx ends.
func (a *Authenticator) Run(ctx context.Context) {
	go a.tokens.Run(ctx)
	go a.users.Run(ctx)
}

// WaitReady blocks until both mirrors have loaded.
func (a *Authenticator) WaitReady(ctx context.Context) error {
	if err := a.tokens.WaitReady(ctx); err != nil {
		return err
	}
	return a.users.WaitReady(ctx)
}

// AddInternal registers a process-local secret for p.
func (a *Authenticator) AddInternal(secret string, p *Principal) { a.internal[Hash(secret)] = p }

// Authenticate checks an Authorization header value.
func (a *Authenticator) Authenticate(ctx context.Context, header string) (*Principal, error) {
	secret, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || secret == "" {
		return nil, api.NewUnauthorized("no bearer token: log in with `hearth login` or set HEARTH_CONFIG")
	}
	hash := Hash(strings.TrimSpace(secret))
	if p, ok := a.internal[hash]; ok {
		return p, nil
	}
	rec, ok := a.tokens.Lookup(ctx, hash)
	if !ok {
		return nil, api.NewUnauthorized("the token is not valid (revoked, or never issued)")
	}
	if rec.Expired(a.now()) {
		return nil, api.NewUnauthorized("the token %s expired at %s", rec.ID, rec.Expires.Format(time.RFC3339))
	}
	switch rec.Kind {
	case JoinToken:
		return &Principal{Name: "join/" + rec.ID, Join: true, Record: rec}, nil
	case HostToken:
		return &Principal{Name: "host/" + rec.Host, Host: rec.Host, Record: rec}, nil
	}
	u, ok := a.users.Lookup(ctx, rec.User)
	if !ok {
		return nil, api.NewUnauthorized("the token's user %q no longer exists", rec.User)
	}
	if u.Spec.Disabled {
		return nil, api.NewUnauthorized("user %q is disabled", rec.User)
	}
	return &Principal{Name: u.Metadata.Name, Role: u.Spec.Role, Tenant: u.Spec.Tenant, Record: rec}, nil
}
