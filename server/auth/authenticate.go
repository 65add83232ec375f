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
	tokens *store.Mirror[*api.TokenRecord]
	users  *store.Mirror[*api.User]
	// hostUIDs maps Host names to uids, all a host token is checked
	// against.
	hostUIDs *store.Mirror[string]
	// internal maps process-local secrets (the server's own controllers)
	// to principals; they are never stored.
	internal map[string]*Principal
	now      func() time.Time
	// hostScope is given to every host credential (SetHostScope).
	hostScope HostScope
	// creds are the long-lived requests waiting for a change to their
	// credential (credwatch.go).
	creds credNotifier
}

// SetHostScope makes hs decide what host credentials read of the objects
// that depend on others (see HostScope); call it before serving.
func (a *Authenticator) SetHostScope(hs HostScope) { a.hostScope = hs }

// NewAuthenticator mirrors token records, users and hosts' uids from etcd.
// usersPrefix and hostsPrefix are where User and Host objects are stored.
func NewAuthenticator(c *clientv3.Client, usersPrefix, hostsPrefix string) *Authenticator {
	a := &Authenticator{
		tokens: store.NewMirror(c, TokenPrefix, func(b []byte) (*api.TokenRecord, error) {
			var r api.TokenRecord
			return &r, json.Unmarshal(b, &r)
		}),
		users: store.NewMirror(c, usersPrefix, func(b []byte) (*api.User, error) {
			var u api.User
			return &u, json.Unmarshal(b, &u)
		}),
		hostUIDs: store.NewMirror(c, hostsPrefix, func(b []byte) (string, error) {
			var h struct {
				Metadata struct {
					UID string `json:"uid"`
				} `json:"metadata"`
			}
			return h.Metadata.UID, json.Unmarshal(b, &h)
		}),
		internal: map[string]*Principal{},
		now:      time.Now,
	}
	a.watchMirrors()
	return a
}

// Run keeps the mirrors current until ctx ends.
func (a *Authenticator) Run(ctx context.Context) {
	go a.tokens.Run(ctx)
	go a.users.Run(ctx)
	go a.hostUIDs.Run(ctx)
}

// WaitReady blocks until the mirrors have loaded.
func (a *Authenticator) WaitReady(ctx context.Context) error {
	if err := a.tokens.WaitReady(ctx); err != nil {
		return err
	}
	if err := a.users.WaitReady(ctx); err != nil {
		return err
	}
	return a.hostUIDs.WaitReady(ctx)
}

// Forget stops honouring the token stored under hash at once, on this
// server: the caller has just deleted its record (revocation), which the
// mirror would otherwise learn only from its watch, a moment later.
func (a *Authenticator) Forget(hash string) { a.tokens.Forget(hash) }

// AddInternal registers a process-local secret for p.
func (a *Authenticator) AddInternal(secret string, p *Principal) { a.internal[Hash(secret)] = p }

// Authenticate checks an Authorization header value.
func (a *Authenticator) Authenticate(ctx context.Context, header string) (*Principal, error) {
	secret, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || secret == "" {
		return nil, api.NewUnauthorized("no bearer token: log in with `hearth login` or set HEARTH_CONFIG")
	}
	secret = strings.TrimSpace(secret)
	hash := Hash(secret)
	if p, ok := a.internal[hash]; ok {
		return p, nil
	}
	rec, ok := a.tokens.Lookup(ctx, hash)
	if !ok {
		// The secret says what kind of token it was (NewSecret), which
		// tells a host whose Host was deleted what to do.
		switch {
		case strings.HasPrefix(secret, "hearth-"+string(api.HostToken)+"-"):
			return nil, api.NewUnauthorized("host credential revoked or Host deleted: re-join with a new join token")
		case strings.HasPrefix(secret, "hearth-"+string(api.JoinToken)+"-"):
			return nil, api.NewUnauthorized("the join token is not valid: used already (join tokens register one host unless made --reusable), revoked, or never issued")
		}
		return nil, api.NewUnauthorized("the token is not valid (revoked, its owner deleted, or never issued)")
	}
	if rec.UID == "" && (rec.Kind == api.UserToken || rec.Kind == api.HostToken) {
		// The copy may be behind the start-up binding of a token stored
		// before tokens were bound to their owner's uid.
		if fresh, ok := a.tokens.Read(ctx, hash); ok {
			rec = fresh
		}
	}
	if rec.Expired(a.now()) {
		return nil, api.NewUnauthorized("the token %s expired at %s", rec.ID, rec.Expires.Format(time.RFC3339))
	}
	switch rec.Kind {
	case api.JoinToken:
		return &Principal{Name: "join/" + rec.ID, Join: true, Record: rec, TokenHash: hash}, nil
	case api.BootToken:
		return &Principal{Name: "boot/" + rec.Host, Boot: rec.Host, Record: rec, TokenHash: hash}, nil
	case api.HostToken:
		uid, ok := a.hostUIDs.Lookup(ctx, rec.Host)
		if ok && uid != rec.UID {
			// The copy may be behind a Host deleted and made again.
			uid, ok = a.hostUIDs.Read(ctx, rec.Host)
		}
		if !ok || rec.UID == "" || uid != rec.UID {
			return nil, api.NewUnauthorized("host credential revoked or Host deleted: the token %s was issued to a Host %s that no longer exists; re-join with a new join token", rec.ID, rec.Host)
		}
		return &Principal{Name: "host/" + rec.Host, Host: rec.Host, Record: rec, TokenHash: hash, Scope: a.hostScope}, nil
	case api.UserToken:
	default:
		return nil, api.NewUnauthorized("the token %s is of no kind this server knows (%q)", rec.ID, rec.Kind)
	}
	u, ok := a.users.Lookup(ctx, rec.User)
	if ok && u.Metadata.UID != rec.UID {
		u, ok = a.users.Read(ctx, rec.User)
	}
	if !ok || rec.UID == "" || u.Metadata.UID != rec.UID {
		return nil, api.NewUnauthorized("the token's user %q no longer exists (a User of that name made since does not inherit its tokens)", rec.User)
	}
	if u.Spec.Disabled {
		return nil, api.NewUnauthorized("user %q is disabled", rec.User)
	}
	return &Principal{Name: u.Metadata.Name, Role: u.Spec.Role, Tenant: u.Spec.Tenant, Record: rec, TokenHash: hash}, nil
}
