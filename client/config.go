package client

import (
	"errors"
	"fmt"
	"hearth.dev/hearth/atomicfile"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// Config is a client configuration file: named contexts, each a server and
// a credential, and the one in use. `hearth login` writes it; the server
// writes one for its admin to DATA-DIR/admin.conf.
type Config struct {
	APIVersion     string    `json:"apiVersion,omitempty"`
	Kind           string    `json:"kind,omitempty"`
	CurrentContext string    `json:"currentContext"`
	Contexts       []Context `json:"contexts"`
}

// Context is one server and how to talk to it.
type Context struct {
	Name   string `json:"name"`
	Server string `json:"server"`
	// CertificateAuthority is the PEM of the CA that signed the server's
	// certificate.
	CertificateAuthority string `json:"certificateAuthority,omitempty"`
	Token                string `json:"token"`
	// Tenant is used when a command names none.
	Tenant string `json:"tenant,omitempty"`
}

// DefaultConfigPath is where the CLI keeps its own config when neither
// --config nor HEARTH_CONFIG says otherwise.
func DefaultConfigPath() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = filepath.Join(os.Getenv("HOME"), ".config")
	}
	return filepath.Join(dir, "hearth", "config.yaml")
}

// ConfigPath resolves which config file to use: the flag, then
// HEARTH_CONFIG, then the default.
func ConfigPath(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("HEARTH_CONFIG"); env != "" {
		return env
	}
	return DefaultConfigPath()
}

// LoadConfig reads a config file. A missing file is an empty config.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, err
	}
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// Save writes the config atomically, readable only by its owner (it holds
// tokens).
func (c *Config) Save(path string) error {
	c.APIVersion, c.Kind = "hearth.dev/v1alpha1", "Config"
	data, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

// Current returns the context in use, or the named one when name is set.
func (c *Config) Current(name string) (*Context, error) {
	if name == "" {
		name = c.CurrentContext
	}
	if name == "" {
		if len(c.Contexts) == 0 {
			return nil, errors.New("no Hearth server configured: run `hearth login SERVER --token TOKEN`, or set HEARTH_CONFIG (the sandbox prints it)")
		}
		return nil, errors.New("no current context: run `hearth config use-context NAME`")
	}
	for i := range c.Contexts {
		if c.Contexts[i].Name == name {
			return &c.Contexts[i], nil
		}
	}
	return nil, fmt.Errorf("no context named %q in the config", name)
}

// Upsert adds a context or replaces the one of the same name.
func (c *Config) Upsert(ctx Context) {
	for i := range c.Contexts {
		if c.Contexts[i].Name == ctx.Name {
			c.Contexts[i] = ctx
			return
		}
	}
	c.Contexts = append(c.Contexts, ctx)
}
