package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"hearth.dev/hearth/atomicfile"

	api "hearth.dev/hearth/api/v1alpha1"
)

// JoinConfig says how a host process (agent, boot service) gets its
// credential.
type JoinConfig struct {
	Server string
	// JoinToken registers the host the first time (and again once its
	// credential is revoked). JoinTokenFile holds it instead, out of
	// sight of `ps`; it is read each time a join is needed, so a new
	// token written there is picked up without a restart.
	JoinToken     string
	JoinTokenFile string
	// CAFile is the cluster CA to trust on the first connection.
	CAFile string
	// Name is the host name the credential is bound to.
	Name string
	// Address is the host's underlay IP, which the server records in the
	// Host it makes for a new host.
	Address string
	// Boot joins as a boot service, which acts as no Host.
	Boot bool
	// DataDir keeps the credential (credentials.json).
	DataDir string
}

// Credentials are what joining gave a host.
type Credentials struct {
	Server string `json:"server"`
	Token  string `json:"token"`
	CA     string `json:"ca"`
	// Name is the host (or boot service) the credential acts as, and Kind
	// host or boot.
	Name string        `json:"name,omitempty"`
	Kind api.TokenKind `json:"kind,omitempty"`
	// Site and Labels come from the join token.
	Site   string            `json:"site,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// ErrNotJoined says a host has no credential yet and nothing to join
// with: it needs the server's URL and a join token.
var ErrNotJoined = errors.New("this host has not joined yet")

// ErrRevoked says the server refuses a host's credential: its Host was
// deleted or the credential revoked. Only a new join token helps.
var ErrRevoked = errors.New("host credential revoked or Host deleted: re-join with a new join token")

// Join returns a client acting as the host, joining with the join token
// the first time and keeping the host credential in DataDir after that.
// A kept credential the server refuses is replaced by joining again when
// a join token is at hand; otherwise Join returns an error wrapping
// ErrRevoked.
func Join(ctx context.Context, cfg JoinConfig) (*Client, *Credentials, error) {
	path := filepath.Join(cfg.DataDir, "credentials.json")
	var creds Credentials
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &creds); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		if creds.Name != "" && creds.Name != cfg.Name {
			return nil, nil, fmt.Errorf("%s holds the credential of %s, not %s: run as %s, or keep this host's credential in another data directory", path, creds.Name, cfg.Name, creds.Name)
		}
		c, err := credentialClient(cfg, &creds)
		if err != nil {
			return nil, nil, err
		}
		refused := checkCredential(ctx, c)
		if refused == nil {
			return c, &creds, nil
		}
		token, terr := joinToken(cfg)
		if terr != nil || token == "" {
			return nil, nil, fmt.Errorf("%w (the server says: %v)", ErrRevoked, refused)
		}
		if cfg.Server == "" {
			cfg.Server = creds.Server
		}
		if err := join(ctx, cfg, token, &creds); err != nil {
			// Still revoked: a caller that waits tries again, and reads
			// the join token file again, later.
			return nil, nil, fmt.Errorf("%w; joining again failed: %v", ErrRevoked, err)
		}
	case errors.Is(err, os.ErrNotExist):
		token, err := joinToken(cfg)
		if err != nil {
			return nil, nil, err
		}
		if err := join(ctx, cfg, token, &creds); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, err
	}
	data, _ = json.MarshalIndent(creds, "", "  ")
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, nil, err
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return nil, nil, err
	}
	c, err := credentialClient(cfg, &creds)
	return c, &creds, err
}

// WaitJoined is Join for a process that should wait rather than exit
// while its credential is refused (a restarting service would only be
// refused again): it says why once, then tries again, further and
// further apart, until a join token is at hand or ctx ends.
func WaitJoined(ctx context.Context, cfg JoinConfig) (*Client, *Credentials, error) {
	const first, most = 10 * time.Second, 5 * time.Minute
	wait, said := first, ""
	for {
		c, creds, err := Join(ctx, cfg)
		if !errors.Is(err, ErrRevoked) {
			if err == nil && said != "" {
				slog.Info("joined again", "host", cfg.Name)
			}
			return c, creds, err
		}
		if msg := err.Error(); msg != said {
			how := "write a new join token (`hearth token create --join`, or `--join --host " + cfg.Name + "` if the Host still exists) to the join token file"
			if cfg.JoinTokenFile == "" {
				how = "restart it with a join token file that holds a new join token"
			}
			slog.Error(msg, "host", cfg.Name, "then", how)
			said = msg
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, most)
	}
}

func credentialClient(cfg JoinConfig, creds *Credentials) (*Client, error) {
	return New(&Context{Name: cfg.Name, Server: creds.Server, CertificateAuthority: creds.CA, Token: creds.Token})
}

// checkCredential returns the server's refusal of the client's token, or
// nil when it is accepted or the server cannot say (unreachable: the
// process finds out later).
func checkCredential(ctx context.Context, c *Client) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := c.WhoAmI(ctx); api.ReasonOf(err) == api.ReasonUnauthorized {
		return err
	}
	return nil
}

// UntilRevoked asks the server every so often whether c's credential
// still holds, and returns an error wrapping ErrRevoked once it is
// refused (its Host or boot service deleted, the credential revoked); nil
// when ctx ends. A service that holds no watch open runs it beside its
// work, so that a revoked credential stops it rather than leaving it
// serving on its last view.
func UntilRevoked(ctx context.Context, c *Client, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if refused := checkCredential(ctx, c); refused != nil && ctx.Err() == nil {
				return fmt.Errorf("%w (the server says: %v)", ErrRevoked, refused)
			}
		}
	}
}

// joinToken reads the join token from the config: the token itself, or
// the file that holds it (a missing file is no token).
func joinToken(cfg JoinConfig) (string, error) {
	if cfg.JoinToken != "" || cfg.JoinTokenFile == "" {
		return cfg.JoinToken, nil
	}
	data, err := os.ReadFile(cfg.JoinTokenFile)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("join token file: %w", err)
	}
	return strings.TrimSpace(string(data)), nil
}

func join(ctx context.Context, cfg JoinConfig, token string, out *Credentials) error {
	if token == "" || cfg.Server == "" {
		need := "the server's URL and a join token (from `hearth token create --join`)"
		if cfg.JoinTokenFile != "" {
			need += ", which the join token file " + cfg.JoinTokenFile + " does not hold yet"
		}
		return fmt.Errorf("%w: it needs %s", ErrNotJoined, need)
	}
	caPEM := ""
	if cfg.CAFile != "" {
		data, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return fmt.Errorf("cluster CA file: %w", err)
		}
		caPEM = string(data)
	}
	joiner, err := New(&Context{Name: "join", Server: cfg.Server, CertificateAuthority: caPEM, Token: token})
	if err != nil {
		return err
	}
	defer joiner.Close()
	req := api.JoinRequest{Host: cfg.Name, Address: cfg.Address, Boot: cfg.Boot}
	var resp *api.JoinResponse
	// The server may still be starting (the sandbox starts everything at
	// once): retry what may pass, not a refused token or a name taken.
	for attempt := 0; ; attempt++ {
		resp, err = joiner.Join(ctx, req)
		r := api.ReasonOf(err)
		if err == nil || attempt >= 30 || r == api.ReasonUnauthorized || r == api.ReasonForbidden || r == api.ReasonInvalid || r == api.ReasonAlreadyExists {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if err != nil {
		return fmt.Errorf("joining %s as %s: %w", cfg.Server, cfg.Name, err)
	}
	if resp.Host == "" {
		resp.Host = cfg.Name
	}
	*out = Credentials{Server: cfg.Server, Token: resp.Token, CA: resp.CA, Name: resp.Host, Kind: resp.Kind, Site: resp.Site, Labels: resp.Labels}
	return nil
}
