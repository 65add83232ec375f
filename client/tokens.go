package client

import (
	"context"
	"net/http"
	"net/url"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TokenSet names one set of tokens the token calls act on: a User's
// tokens, the join tokens, or the credentials of hosts and boot services.
type TokenSet struct {
	path string
	// host narrows a list of host credentials to one host's.
	host string
}

// UserTokens is the set of a User's tokens. Users manage their own;
// whoever may change a User manages its tokens.
func UserTokens(user string) TokenSet { return TokenSet{path: api.UserTokensPath(user)} }

// JoinTokens is the set of join tokens (cluster admins only).
func JoinTokens() TokenSet { return TokenSet{path: api.JoinTokensPath} }

// HostCredentials is the set of the credentials of hosts and boot
// services, which they get by joining (cluster admins only). A host other
// than "" lists only that host's (or boot service's). Nobody creates
// them: hosts join (Join).
func HostCredentials(host string) TokenSet {
	return TokenSet{path: api.HostTokensPath, host: host}
}

// CreateToken makes a token in the set: a user's token, or a join token
// (whose site, labels, host and reusable the request may set). The
// answer carries its secret, shown this once.
func (c *Client) CreateToken(ctx context.Context, set TokenSet, req api.TokenRequest) (*api.TokenResponse, error) {
	var out api.TokenResponse
	if err := c.Do(ctx, http.MethodPost, set.path, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListTokens lists the tokens of the set, oldest first, without secrets.
func (c *Client) ListTokens(ctx context.Context, set TokenSet) ([]api.TokenRecord, error) {
	path := set.path
	if set.host != "" {
		path += "?host=" + url.QueryEscape(set.host)
	}
	var list api.TokenList
	if err := c.Do(ctx, http.MethodGet, path, nil, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// RevokeToken revokes the token of the set with this id (as listed): it
// is refused from then on. A token the set does not hold is a NotFound.
func (c *Client) RevokeToken(ctx context.Context, set TokenSet, id string) error {
	return c.Do(ctx, http.MethodDelete, set.path+"/"+url.PathEscape(id), nil, nil)
}

// Join exchanges the client's token, a join token, for a host's or boot
// service's own credential (see JoinConfig for a host process that keeps
// it). A cluster admin may join without one.
func (c *Client) Join(ctx context.Context, req api.JoinRequest) (*api.JoinResponse, error) {
	var out api.JoinResponse
	if err := c.Do(ctx, http.MethodPost, api.JoinPath, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
