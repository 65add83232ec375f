package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/store"
)

// tokenAdmin refuses anyone but a cluster admin (a person) the
// management of what.
func tokenAdmin(p *auth.Principal, what string) error {
	if p.Role != api.RoleClusterAdmin || p.HostCredential() {
		return api.NewForbidden("%s may not manage %s: only cluster admins may", p.Name, what)
	}
	return nil
}

// joinTokens issues, lists and revokes join tokens (cluster admins).
func (s *Server) joinTokens(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := tokenAdmin(p, "join tokens"); err != nil {
		return err
	}
	isJoin := func(t *api.TokenRecord) bool { return t.Kind == api.JoinToken }
	id := r.PathValue("id")
	switch {
	case id == "" && r.Method == http.MethodPost:
		return s.issueToken(w, r, api.TokenRecord{Kind: api.JoinToken})
	case id == "" && r.Method == http.MethodGet:
		return s.listTokens(w, r.Context(), isJoin)
	case id != "" && r.Method == http.MethodDelete:
		return s.revokeToken(w, r.Context(), "join token", id, isJoin)
	}
	return methodNotAllowed(r)
}

// hostTokens lists and revokes the credentials of hosts and boot
// services (cluster admins).
func (s *Server) hostTokens(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := tokenAdmin(p, "host credentials"); err != nil {
		return err
	}
	host := r.URL.Query().Get("host")
	isHost := func(t *api.TokenRecord) bool {
		return (t.Kind == api.HostToken || t.Kind == api.BootToken) && (host == "" || t.Host == host)
	}
	id := r.PathValue("id")
	switch {
	case id == "" && r.Method == http.MethodGet:
		return s.listTokens(w, r.Context(), isHost)
	case id != "" && r.Method == http.MethodDelete:
		return s.revokeToken(w, r.Context(), "host credential", id, isHost)
	}
	return methodNotAllowed(r)
}

func methodNotAllowed(r *http.Request) error {
	return &api.Status{Kind: "Status", Code: http.StatusMethodNotAllowed, Reason: api.ReasonBadRequest, Message: r.Method + " is not allowed on " + r.URL.Path}
}

// userTokens lists, issues and revokes a user's tokens. Whoever may
// change the User may manage its tokens; users may manage their own.
func (s *Server) userTokens(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	user := r.PathValue("user")
	var rest []string
	if id := r.PathValue("id"); id != "" {
		rest = strings.Split(id, "/")
	}
	u, err := s.store.Get(r.Context(), s.userKind, "", user)
	if err != nil {
		if api.IsNotFound(err) && p.Role != api.RoleClusterAdmin {
			return api.NewForbidden("%s may not manage tokens of user %s", p.Name, user)
		}
		return err
	}
	if p.Name != user || p.HostCredential() {
		if err := auth.Authorize(p, auth.Request{Verb: auth.Update, Kind: s.userKind, Name: user, Stored: u}); err != nil {
			return err
		}
	}
	uid := u.GetMetadata().UID
	mine := func(t *api.TokenRecord) bool { return t.Kind == api.UserToken && t.User == user && t.UID == uid }
	switch {
	case len(rest) == 0 && r.Method == http.MethodPost:
		return s.issueToken(w, r, api.TokenRecord{Kind: api.UserToken, User: user})
	case len(rest) == 0 && r.Method == http.MethodGet:
		return s.listTokens(w, r.Context(), mine)
	case len(rest) == 1 && r.Method == http.MethodDelete:
		return s.revokeToken(w, r.Context(), "token of user "+user, rest[0], mine)
	}
	return api.NewBadRequest("%s is not allowed on %s", r.Method, r.URL.Path)
}

func (s *Server) issueToken(w http.ResponseWriter, r *http.Request, rec api.TokenRecord) error {
	var req api.TokenRequest
	if data, err := readBody(r); err != nil {
		return err
	} else if len(data) > 0 {
		if err := api.DecodeInto(data, &req); err != nil {
			return api.NewBadRequest("token request: %v", err)
		}
	}
	var es api.FieldErrors
	if rec.Kind != api.JoinToken {
		for _, f := range []struct {
			name string
			set  bool
		}{{"site", req.Site != ""}, {"labels", len(req.Labels) > 0}, {"host", req.Host != ""}, {"reusable", req.Reusable}} {
			if f.set {
				es.Add(f.name, "is for join tokens only")
			}
		}
	}
	if req.Site != "" {
		es = append(es, api.ValidateName("site", req.Site)...)
	}
	if req.Host != "" {
		es = append(es, api.ValidateName("host", req.Host)...)
	}
	if len(req.Labels) > 0 {
		// The labels become a Host's: check them as the Host's would be.
		h := &api.Host{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Host"}, Metadata: api.ObjectMeta{Name: "h", Labels: req.Labels}}
		for _, e := range api.Prepare(h, nil) {
			if f, ok := strings.CutPrefix(e.Field, "metadata."); ok {
				e.Field = f
				es = append(es, e)
			}
		}
	}
	rec.Description, rec.Site, rec.Labels, rec.Host, rec.Reusable = req.Description, req.Site, req.Labels, req.Host, req.Reusable
	ttl := time.Duration(0)
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			es.Add("ttl", "%s is not a positive duration such as 24h", req.TTL)
		}
		ttl = d
	} else if rec.Kind == api.JoinToken {
		ttl = api.DefaultJoinTTL
	}
	if len(es) > 0 {
		return api.NewInvalid("Token", "", es)
	}
	if ttl > 0 {
		exp := time.Now().Add(ttl).UTC()
		rec.Expires = &exp
	}
	var owner *tokenOwner
	if rec.Kind == api.UserToken {
		o, err := s.readOwner(r.Context(), s.userKind, rec.User)
		if err != nil {
			return err
		}
		owner = &o
	}
	secret, saved, err := s.saveToken(r.Context(), rec, owner)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, api.TokenResponse{TokenRecord: saved, Token: secret})
	return nil
}

// tokenOwner is the User or Host a token is bound to, as etcd has it.
type tokenOwner struct {
	key, uid  string
	createRev int64
}

// readOwner reads the identity of the object a token is for. Writing the
// token is conditional on its create revision, so a token is never made
// for an owner deleted, or deleted and made again, since.
func (s *Server) readOwner(ctx context.Context, k *api.KindInfo, name string) (tokenOwner, error) {
	key := store.Key(k, "", name)
	resp, err := s.etcd.Get(ctx, key)
	if err != nil {
		return tokenOwner{}, api.NewUnavailable("etcd: %v", err)
	}
	if len(resp.Kvs) == 0 {
		return tokenOwner{}, api.NewNotFound(k.Kind, "", name)
	}
	var obj struct {
		Metadata struct {
			UID string `json:"uid"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &obj); err != nil || obj.Metadata.UID == "" {
		return tokenOwner{}, api.NewInternal("%s %s in etcd has no uid", k.Kind, name)
	}
	return tokenOwner{key: key, uid: obj.Metadata.UID, createRev: resp.Kvs[0].CreateRevision}, nil
}

func (o *tokenOwner) exists() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(o.key), "=", o.createRev)
}

// newToken makes a token for rec: its secret, its hash and the record as
// it will be stored.
func newToken(rec api.TokenRecord) (secret, hash string, out api.TokenRecord) {
	secret = auth.NewSecret(rec.Kind)
	hash = auth.Hash(secret)
	rec.ID = auth.IDOf(hash)
	rec.Created = time.Now().UTC().Truncate(time.Second)
	return secret, hash, rec
}

// tokenOps writes a token's record and, for a token with an owner, its
// entry in the owner's index.
func tokenOps(hash string, rec api.TokenRecord) []clientv3.Op {
	data, _ := json.Marshal(rec)
	ops := []clientv3.Op{clientv3.OpPut(auth.TokenPrefix+hash, string(data))}
	if rec.UID != "" {
		ops = append(ops, clientv3.OpPut(auth.OwnerKey(rec.UID, hash), ""))
	}
	return ops
}

// saveToken stores a new token's record under its hash, bound to owner
// if there is one, and returns the secret. The write is acknowledged only
// once etcd has it.
func (s *Server) saveToken(ctx context.Context, rec api.TokenRecord, owner *tokenOwner) (string, api.TokenRecord, error) {
	var cmps []clientv3.Cmp
	if owner != nil {
		rec.UID = owner.uid
		cmps = append(cmps, owner.exists())
	}
	secret, hash, rec := newToken(rec)
	resp, err := s.etcd.Txn(ctx).If(cmps...).Then(tokenOps(hash, rec)...).Commit()
	if err != nil {
		return "", rec, api.NewUnavailable("storing the token: %v", err)
	}
	if !resp.Succeeded {
		return "", rec, &api.Status{Kind: "Status", Code: http.StatusConflict, Reason: api.ReasonConflict,
			Message: "user " + rec.User + " was deleted or made again while its token was being made; try again"}
	}
	return secret, rec, nil
}

// listTokens reads the token records from etcd itself, so a token issued a
// moment ago is listed even before the in-memory mirror has it.
func (s *Server) listTokens(w http.ResponseWriter, ctx context.Context, match func(*api.TokenRecord) bool) error {
	recs, err := s.tokenRecords(ctx)
	if err != nil {
		return err
	}
	out := []*api.TokenRecord{}
	for _, t := range recs {
		if match(t.rec) {
			out = append(out, t.rec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	writeJSON(w, http.StatusOK, map[string]any{"items": out})
	return nil
}

type storedToken struct {
	key    string
	modRev int64
	rec    *api.TokenRecord
}

func (s *Server) tokenRecords(ctx context.Context) ([]storedToken, error) {
	resp, err := s.etcd.Get(ctx, auth.TokenPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, api.NewUnavailable("etcd: %v", err)
	}
	out := make([]storedToken, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var rec api.TokenRecord
		if json.Unmarshal(kv.Value, &rec) == nil {
			out = append(out, storedToken{string(kv.Key), kv.ModRevision, &rec})
		}
	}
	return out, nil
}

// deleteTokenOps deletes a stored token and its owner's index entry.
func deleteTokenOps(t storedToken) []clientv3.Op {
	ops := []clientv3.Op{clientv3.OpDelete(t.key)}
	if t.rec.UID != "" {
		ops = append(ops, clientv3.OpDelete(auth.OwnerKey(t.rec.UID, strings.TrimPrefix(t.key, auth.TokenPrefix))))
	}
	return ops
}

// revokeToken deletes the token with id that match accepts; what names it
// for the error when there is none.
func (s *Server) revokeToken(w http.ResponseWriter, ctx context.Context, what, id string, match func(*api.TokenRecord) bool) error {
	recs, err := s.tokenRecords(ctx)
	if err != nil {
		return err
	}
	for _, t := range recs {
		if t.rec.ID == id && match(t.rec) {
			if _, err := s.etcd.Txn(ctx).Then(deleteTokenOps(t)...).Commit(); err != nil {
				return api.NewUnavailable("etcd: %v", err)
			}
			s.authn.Forget(strings.TrimPrefix(t.key, auth.TokenPrefix))
			writeJSON(w, http.StatusOK, t.rec)
			return nil
		}
	}
	return &api.Status{Kind: "Status", Code: http.StatusNotFound, Reason: api.ReasonNotFound, Message: "no " + what + " has id " + id}
}

// tokenOwnerHooks ties the tokens of Users and Hosts to them: deleting
// the owner deletes its tokens in the same transaction, and /join creates
// a Host and its first token in one.
type tokenOwnerHooks struct{ s *Server }

// OnCreate adds the joining host's token to the Host's creation when the
// Host is made by /join.
func (h tokenOwnerHooks) OnCreate(ctx context.Context, kv clientv3.KV, obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	j, ok := ctx.Value(pendingJoinKey{}).(*pendingJoin)
	if !ok {
		return nil, nil, nil
	}
	cmps, ops, err := h.s.spendJoinToken(ctx, kv, j.p)
	if err != nil {
		return nil, nil, err
	}
	rec := j.rec
	rec.UID = obj.GetMetadata().UID
	return cmps, append(ops, tokenOps(j.hash, rec)...), nil
}

// OnDelete deletes the owner's tokens. The comparison that no index entry
// of the owner changed since they were read makes a token issued in
// between fail the deletion, which then reads again.
func (tokenOwnerHooks) OnDelete(ctx context.Context, kv clientv3.KV, obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	return ownedTokensDeletion(ctx, kv, obj.GetMetadata().UID)
}

func ownedTokensDeletion(ctx context.Context, kv clientv3.KV, uid string) ([]clientv3.Cmp, []clientv3.Op, error) {
	if uid == "" {
		return nil, nil, nil
	}
	prefix := auth.OwnerPrefix + uid + "/"
	resp, err := kv.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, nil, api.NewUnavailable("etcd: %v", err)
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(prefix), "<", resp.Header.Revision+1).WithPrefix()}
	// Key by key, not the prefix: a re-join writes the new token's entry
	// in the same transaction, and etcd refuses overlapping writes.
	var ops []clientv3.Op
	for _, k := range resp.Kvs {
		ops = append(ops, clientv3.OpDelete(string(k.Key)), clientv3.OpDelete(auth.TokenPrefix+strings.TrimPrefix(string(k.Key), prefix)))
	}
	return cmps, ops, nil
}

type pendingJoinKey struct{}

// pendingJoin is the host token a Host made by /join is created with.
type pendingJoin struct {
	p    *auth.Principal
	hash string
	rec  api.TokenRecord
}

// spendJoinToken returns the comparisons and writes that use p's join
// token once: a single-use token is deleted, a reusable one counts the
// use. Both are conditional on the record read, so of two joins racing
// with a single-use token exactly one commits; the other reads again and
// finds it spent. A cluster admin joining uses no token.
func (s *Server) spendJoinToken(ctx context.Context, kv clientv3.KV, p *auth.Principal) ([]clientv3.Cmp, []clientv3.Op, error) {
	if !p.Join {
		return nil, nil, nil
	}
	key := auth.TokenPrefix + p.TokenHash
	resp, err := kv.Get(ctx, key)
	if err != nil {
		return nil, nil, api.NewUnavailable("etcd: %v", err)
	}
	var rec api.TokenRecord
	if len(resp.Kvs) == 0 || json.Unmarshal(resp.Kvs[0].Value, &rec) != nil {
		return nil, nil, api.NewUnauthorized("the join token %s was used already, or revoked: single-use join tokens register one host (make another with `hearth token create --join`)", p.Record.ID)
	}
	if rec.Expired(time.Now()) {
		return nil, nil, api.NewUnauthorized("the join token %s expired at %s", rec.ID, rec.Expires.Format(time.RFC3339))
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)}
	if !rec.Reusable {
		return cmps, []clientv3.Op{clientv3.OpDelete(key)}, nil
	}
	rec.Uses++
	data, _ := json.Marshal(rec)
	return cmps, []clientv3.Op{clientv3.OpPut(key, string(data))}, nil
}

// join exchanges a join token for a host's credential. A new host's Host
// is created here, in the transaction that spends the join token and
// stores the host token (bound to the Host's uid), with the site and
// labels of the join token and the address the host reports: the agent
// never writes its Host's spec. A name already taken is refused unless
// the join token was made to re-join that Host.
func (s *Server) join(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if !p.Join && (p.Role != api.RoleClusterAdmin || p.HostCredential()) {
		return api.NewForbidden("%s may not register hosts: use a join token (`hearth token create --join`)", p.Name)
	}
	var req api.JoinRequest
	data, err := readBody(r)
	if err != nil {
		return err
	}
	if err := api.DecodeInto(data, &req); err != nil {
		return api.NewBadRequest("join request: %v", err)
	}
	es := api.ValidateName("host", req.Host)
	if req.Address != "" {
		_, e := api.ValidateIP("address", req.Address)
		es = append(es, e...)
	}
	if len(es) > 0 {
		return api.NewInvalid("Host", req.Host, es)
	}
	var jt api.TokenRecord // a cluster admin joins with none
	if p.Join {
		jt = *p.Record
	}
	if jt.Host != "" && (req.Boot || req.Host != jt.Host) {
		return api.NewForbidden("the join token %s re-joins host %s and nothing else", jt.ID, jt.Host)
	}
	resp := api.JoinResponse{CA: string(s.ca.CertPEM), Host: req.Host, Site: jt.Site, Labels: jt.Labels}
	if req.Boot {
		resp.Kind = api.BootToken
		resp.Token, err = s.joinBoot(r.Context(), p, req.Host)
	} else {
		resp.Kind = api.HostToken
		resp.Token, err = s.joinHost(r.Context(), p, jt, req)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// joinBoot makes a boot service's credential.
func (s *Server) joinBoot(ctx context.Context, p *auth.Principal, name string) (string, error) {
	secret, hash, rec := newToken(api.TokenRecord{Kind: api.BootToken, Host: name, Description: "joined with " + p.Name})
	for attempt := 0; attempt < 16; attempt++ {
		cmps, ops, err := s.spendJoinToken(ctx, s.etcd, p)
		if err != nil {
			return "", err
		}
		resp, err := s.etcd.Txn(ctx).If(cmps...).Then(append(ops, tokenOps(hash, rec)...)...).Commit()
		if err != nil {
			return "", api.NewUnavailable("etcd: %v", err)
		}
		if resp.Succeeded {
			return secret, nil
		}
	}
	return "", api.NewUnavailable("the join token %s is in use by many joins at once; try again", p.Record.ID)
}

// joinHost creates the Host and its credential, or re-joins an existing
// Host when the join token was made for it.
func (s *Server) joinHost(ctx context.Context, p *auth.Principal, jt api.TokenRecord, req api.JoinRequest) (string, error) {
	hk, _ := api.KindByName("Host")
	secret, hash, rec := newToken(api.TokenRecord{Kind: api.HostToken, Host: req.Host, Description: "joined with " + p.Name})
	for attempt := 0; attempt < 16; attempt++ {
		owner, err := s.readOwner(ctx, hk, req.Host)
		switch {
		case api.IsNotFound(err):
			host := &api.Host{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Host"},
				Metadata: api.ObjectMeta{Name: req.Host, Labels: jt.Labels},
				Spec:     api.HostSpec{Site: jt.Site, Address: req.Address}}
			if es := api.Prepare(host, nil); len(es) > 0 {
				return "", api.NewInvalid("Host", req.Host, es)
			}
			jctx := context.WithValue(ctx, pendingJoinKey{}, &pendingJoin{p: p, hash: hash, rec: rec})
			if _, err := s.store.Create(jctx, host); api.IsAlreadyExists(err) {
				continue // made a moment ago: see whether this token may re-join it
			} else if err != nil {
				return "", err
			}
			return secret, nil
		case err != nil:
			return "", err
		}
		// The Host exists: only a token made for it (or a cluster admin)
		// may join it again, and the new credential replaces the old ones.
		if p.Join && jt.Host != req.Host {
			return "", &api.Status{Kind: "Status", Code: http.StatusConflict, Reason: api.ReasonAlreadyExists,
				Message: "Host " + req.Host + " already exists: joining as an existing host needs a join token made for it (`hearth token create --join --host " + req.Host + "`), or choose another --name"}
		}
		cmps, ops, err := s.spendJoinToken(ctx, s.etcd, p)
		if err != nil {
			return "", err
		}
		ocmps, oops, err := ownedTokensDeletion(ctx, s.etcd, owner.uid)
		if err != nil {
			return "", err
		}
		rec.UID = owner.uid
		cmps = append(append(cmps, owner.exists()), ocmps...)
		ops = append(append(ops, oops...), tokenOps(hash, rec)...)
		resp, err := s.etcd.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return "", api.NewUnavailable("etcd: %v", err)
		}
		if resp.Succeeded {
			slog.Info("host re-joined; its earlier credentials are revoked", "host", req.Host, "joinToken", jt.ID)
			return secret, nil
		}
	}
	return "", api.NewUnavailable("Host %s is changing too fast to join; try again", req.Host)
}

// bindLegacyTokens binds the user and host tokens stored before tokens
// were bound to their owner's uid: to the User or Host of their name if it
// exists, as the server took them to be until now, and deletes the others,
// which belonged to an object deleted since. It runs at every start and
// finds nothing to do once done; every write is conditional, so servers
// starting together do not trip over each other.
func (s *Server) bindLegacyTokens(ctx context.Context) error {
	recs, err := s.tokenRecords(ctx)
	if err != nil {
		return err
	}
	hk, _ := api.KindByName("Host")
	for _, t := range recs {
		var k *api.KindInfo
		var name string
		switch {
		case t.rec.UID != "":
			continue
		case t.rec.Kind == api.UserToken:
			k, name = s.userKind, t.rec.User
		case t.rec.Kind == api.HostToken:
			k, name = hk, t.rec.Host
		default:
			continue
		}
		unchanged := clientv3.Compare(clientv3.ModRevision(t.key), "=", t.modRev)
		owner, err := s.readOwner(ctx, k, name)
		if api.IsNotFound(err) {
			if _, err := s.etcd.Txn(ctx).If(unchanged).Then(clientv3.OpDelete(t.key)).Commit(); err != nil {
				return err
			}
			slog.Warn("deleted a token of an object that no longer exists", "token", t.rec.ID, "kind", t.rec.Kind, "owner", k.Kind+"/"+name)
			continue
		}
		if err != nil {
			return err
		}
		rec := *t.rec
		rec.UID = owner.uid
		if _, err := s.etcd.Txn(ctx).If(unchanged, owner.exists()).Then(tokenOps(strings.TrimPrefix(t.key, auth.TokenPrefix), rec)...).Commit(); err != nil {
			return err
		}
	}
	return nil
}
