package client

import (
	"context"
	"encoding/json"
	"fmt"
	"hearth.dev/hearth/atomicfile"
	"net/http"
	"os"
	"path/filepath"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// JoinConfig says how a host process (agent, boot service) gets its
// credential.
type JoinConfig struct {
	Server    string
	JoinToken string
	// CAFile is the cluster CA to trust on the first connection.
	CAFile string
	// Name is the host name the credential is bound to.
	Name string
	// DataDir keeps the credential (credentials.json).
	DataDir string
}

// Credentials are what joining gave a host.
type Credentials struct {
	Server string `json:"server"`
	Token  string `json:"token"`
	CA     string `json:"ca"`
	// Site and Labels come from the join token.
	Site   string            `json:"site,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Join returns a client acting as the host, joining with the join token
// the first time and keeping the host credential in DataDir after that.
func Join(ctx context.Context, cfg JoinConfig) (*Client, *Credentials, error) {
	path := filepath.Join(cfg.DataDir, "credentials.json")
	var creds Credentials
	if data, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(data, &creds); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
	} else {
		if err := join(ctx, cfg, &creds); err != nil {
			return nil, nil, err
		}
		data, _ := json.MarshalIndent(creds, "", "  ")
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, nil, err
		}
		if err := atomicfile.Write(path, data, 0o600); err != nil {
			return nil, nil, err
		}
	}
	c, err := New(&Context{Name: cfg.Name, Server: creds.Server, CertificateAuthority: creds.CA, Token: creds.Token})
	return c, &creds, err
}

func join(ctx context.Context, cfg JoinConfig, out *Credentials) error {
	if cfg.JoinToken == "" || cfg.Server == "" {
		return fmt.Errorf("this host has not joined yet: give --server and --join-token (from `hearth token create --join`)")
	}
	caPEM := ""
	if cfg.CAFile != "" {
		data, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return fmt.Errorf("--ca-file: %w", err)
		}
		caPEM = string(data)
	}
	joiner, err := New(&Context{Name: "join", Server: cfg.Server, CertificateAuthority: caPEM, Token: cfg.JoinToken})
	if err != nil {
		return err
	}
	var resp struct {
		Token  string            `json:"token"`
		CA     string            `json:"ca"`
		Site   string            `json:"site"`
		Labels map[string]string `json:"labels"`
	}
	// The server may still be starting (the sandbox starts everything at
	// once): retry what may pass, not a refused token.
	for attempt := 0; ; attempt++ {
		err = joiner.Do(ctx, http.MethodPost, api.PathPrefix+"/join", map[string]string{"host": cfg.Name}, &resp)
		r := api.ReasonOf(err)
		if err == nil || attempt >= 30 || r == api.ReasonUnauthorized || r == api.ReasonForbidden || r == api.ReasonInvalid {
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
	*out = Credentials{Server: cfg.Server, Token: resp.Token, CA: resp.CA, Site: resp.Site, Labels: resp.Labels}
	return nil
}
