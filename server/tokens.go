package server

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
)

// TokenRequest asks for a new token.
type TokenRequest struct {
	Description string `json:"description,omitempty"`
	// TTL such as "24h"; empty means no expiry.
	TTL string `json:"ttl,omitempty"`
	// Site and Labels are given to hosts joining with a join token.
	Site   string            `json:"site,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// TokenResponse carries a new token's secret, shown only this once.
type TokenResponse struct {
	auth.TokenRecord
	Token string `json:"token"`
}

// JoinRequest registers a host with a join token.
type JoinRequest struct {
	Host string `json:"host"`
}

// JoinResponse gives a joining host its own credential.
type JoinResponse struct {
	Token  string            `json:"token"`
	CA     string            `json:"ca"`
	Site   string            `json:"site,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// serveSpecial handles the endpoints that are not plain objects. It
// reports whether it handled the request.
func (s *Server) serveSpecial(w http.ResponseWriter, r *http.Request, p *auth.Principal, segs []string) bool {
	var err error
	switch {
	case len(segs) == 1 && segs[0] == "whoami" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, whoami(p))
	case len(segs) == 1 && segs[0] == "join" && r.Method == http.MethodPost:
		err = s.join(w, r, p)
	case len(segs) == 1 && segs[0] == "jointokens":
		if p.Role != api.RoleClusterAdmin || p.Host != "" {
			err = api.NewForbidden("%s may not manage join tokens: only cluster admins may", p.Name)
		} else if r.Method == http.MethodPost {
			err = s.issueToken(w, r, auth.TokenRecord{Kind: auth.JoinToken})
		} else {
			err = s.listTokens(w, r.Context(), func(t *auth.TokenRecord) bool { return t.Kind == auth.JoinToken })
		}
	case len(segs) >= 3 && segs[0] == "users" && segs[2] == "tokens":
		err = s.userTokens(w, r, p, segs[1], segs[3:])
	case isImageContent(segs):
		err = s.serveImageContent(w, r, p, segs)
	default:
		return false
	}
	if err != nil {
		writeError(w, err)
	}
	return true
}

// userTokens lists, issues and revokes a user's tokens. Whoever may
// change the User may manage its tokens; users may manage their own.
func (s *Server) userTokens(w http.ResponseWriter, r *http.Request, p *auth.Principal, user string, rest []string) error {
	u, err := s.store.Get(r.Context(), s.userKind, "", user)
	if err != nil {
		if api.IsNotFound(err) && p.Role != api.RoleClusterAdmin {
			return api.NewForbidden("%s may not manage tokens of user %s", p.Name, user)
		}
		return err
	}
	if p.Name != user || p.Host != "" {
		if err := auth.Authorize(p, auth.Request{Verb: auth.Update, Kind: s.userKind, Name: user, Stored: u}); err != nil {
			return err
		}
	}
	switch {
	case len(rest) == 0 && r.Method == http.MethodPost:
		return s.issueToken(w, r, auth.TokenRecord{Kind: auth.UserToken, User: user})
	case len(rest) == 0 && r.Method == http.MethodGet:
		return s.listTokens(w, r.Context(), func(t *auth.TokenRecord) bool { return t.Kind == auth.UserToken && t.User == user })
	case len(rest) == 1 && r.Method == http.MethodDelete:
		return s.revokeToken(w, r.Context(), func(t *auth.TokenRecord) bool {
			return t.Kind == auth.UserToken && t.User == user && t.ID == rest[0]
		})
	}
	return api.NewBadRequest("%s is not allowed on %s", r.Method, r.URL.Path)
}

func (s *Server) issueToken(w http.ResponseWriter, r *http.Request, rec auth.TokenRecord) error {
	var req TokenRequest
	if data, err := readBody(r); err != nil {
		return err
	} else if len(data) > 0 {
		if err := api.DecodeInto(data, &req); err != nil {
			return api.NewBadRequest("token request: %v", err)
		}
	}
	rec.Description, rec.Site, rec.Labels = req.Description, req.Site, req.Labels
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return api.NewInvalid("Token", "", api.FieldErrors{{Field: "ttl", Detail: req.TTL + " is not a positive duration such as 24h"}})
		}
		exp := time.Now().Add(d).UTC()
		rec.Expires = &exp
	}
	secret, saved, err := s.saveToken(r.Context(), rec)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, TokenResponse{TokenRecord: saved, Token: secret})
	return nil
}

// saveToken stores a new token's record under its hash and returns the
// secret. The write is acknowledged only once etcd has it.
func (s *Server) saveToken(ctx context.Context, rec auth.TokenRecord) (string, auth.TokenRecord, error) {
	secret := auth.NewSecret(rec.Kind)
	hash := auth.Hash(secret)
	rec.ID = auth.IDOf(hash)
	rec.Created = time.Now().UTC().Truncate(time.Second)
	data, _ := json.Marshal(rec)
	if _, err := s.etcd.Put(ctx, auth.TokenPrefix+hash, string(data)); err != nil {
		return "", rec, api.NewUnavailable("storing the token: %v", err)
	}
	return secret, rec, nil
}

// listTokens reads the token records from etcd itself, so a token issued a
// moment ago is listed even before the in-memory mirror has it.
func (s *Server) listTokens(w http.ResponseWriter, ctx context.Context, match func(*auth.TokenRecord) bool) error {
	recs, err := s.tokenRecords(ctx)
	if err != nil {
		return err
	}
	out := []*auth.TokenRecord{}
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
	key string
	rec *auth.TokenRecord
}

func (s *Server) tokenRecords(ctx context.Context) ([]storedToken, error) {
	resp, err := s.etcd.Get(ctx, auth.TokenPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, api.NewUnavailable("etcd: %v", err)
	}
	out := make([]storedToken, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var rec auth.TokenRecord
		if json.Unmarshal(kv.Value, &rec) == nil {
			out = append(out, storedToken{string(kv.Key), &rec})
		}
	}
	return out, nil
}

func (s *Server) revokeToken(w http.ResponseWriter, ctx context.Context, match func(*auth.TokenRecord) bool) error {
	recs, err := s.tokenRecords(ctx)
	if err != nil {
		return err
	}
	for _, t := range recs {
		if match(t.rec) {
			if _, err := s.etcd.Delete(ctx, t.key); err != nil {
				return api.NewUnavailable("etcd: %v", err)
			}
			writeJSON(w, http.StatusOK, t.rec)
			return nil
		}
	}
	return api.NewNotFound("Token", "", "")
}

// join exchanges a join token for a host token bound to one host name.
func (s *Server) join(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if !p.Join && p.Role != api.RoleClusterAdmin {
		return api.NewForbidden("%s may not register hosts: use a join token (`hearth token create --join`)", p.Name)
	}
	var req JoinRequest
	data, err := readBody(r)
	if err != nil {
		return err
	}
	if err := api.DecodeInto(data, &req); err != nil {
		return api.NewBadRequest("join request: %v", err)
	}
	if es := api.ValidateName("host", req.Host); len(es) > 0 {
		return api.NewInvalid("Host", req.Host, es)
	}
	rec := auth.TokenRecord{Kind: auth.HostToken, Host: req.Host, Description: "joined with " + p.Name}
	secret, _, err := s.saveToken(r.Context(), rec)
	if err != nil {
		return err
	}
	resp := JoinResponse{Token: secret, CA: string(s.ca.CertPEM)}
	if p.Record != nil {
		resp.Site, resp.Labels = p.Record.Site, p.Record.Labels
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}
