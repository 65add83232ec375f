package cli

import (
	"bufio"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"hearth.dev/hearth/client"
)

func init() { commands = append(commands, newLoginCmd) }

func newLoginCmd(g *globals) *cobra.Command {
	var token, caFile string
	cmd := &cobra.Command{
		Use:   "login SERVER --token TOKEN [--ca-file FILE]",
		Short: "Save a server and a token as a context, and make it current",
		Long: `Check a token against a server (by asking who it belongs to), then save
the server, the token, the CA and the tenant as a context in the config file
and make it the current context.

The server's certificate must verify: against --ca-file (the server writes
its CA to DATA-DIR/ca.crt), against the CA already saved for this context,
or against the system's roots. There is no way to skip verification: the
token would go to whoever answers.

--context names the context (default USER@HOST); --tenant sets its tenant
(default the user's tenant, or "default" for cluster-wide users). Use
--token - to read the token from stdin and keep it out of shell history.`,
		Example: `  hearth login https://hearth.lan:8443 --token "$TOKEN" --ca-file ca.crt
  hearth token create --user alice | hearth login hearth.lan:8443 --token - --context alice`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			server, err := normalizeServer(args[0])
			if err != nil {
				return err
			}
			if token == "-" {
				line, err := bufio.NewReader(g.in).ReadString('\n')
				if err != nil && line == "" {
					return fmt.Errorf("reading the token from stdin: %w", err)
				}
				token = line
			}
			token = strings.TrimSpace(token)
			if token == "" {
				return errors.New("--token is required (create one with `hearth token create --user NAME`)")
			}
			path := client.ConfigPath(g.config)
			cfg, err := client.LoadConfig(path)
			if err != nil {
				return err
			}
			ca := ""
			if caFile != "" {
				data, err := os.ReadFile(caFile)
				if err != nil {
					return fmt.Errorf("--ca-file: %w", err)
				}
				ca = string(data)
			} else {
				// Logging in again (a new token) keeps the CA saved for
				// the context or the server.
				for _, c := range cfg.Contexts {
					if c.CertificateAuthority != "" && (c.Name == g.context || (g.context == "" && c.Server == server)) {
						ca = c.CertificateAuthority
						break
					}
				}
			}
			ctx := client.Context{Name: "login", Server: server, CertificateAuthority: ca, Token: token}
			c, err := client.New(&ctx)
			if err != nil {
				return err
			}
			who, err := c.WhoAmI(cmd.Context())
			if err != nil {
				return fmt.Errorf("logging in to %s: %w", server, explainTLS(server, caFile, err))
			}
			name, _ := who["name"].(string)
			role, _ := who["role"].(string)
			tenant := g.tenant
			if tenant == "" {
				tenant, _ = who["tenant"].(string)
			}
			if tenant == "" {
				tenant = "default"
			}
			ctx.Tenant = tenant
			ctx.Name = g.context
			if ctx.Name == "" {
				u, _ := url.Parse(server)
				ctx.Name = name + "@" + u.Host
			}
			cfg.Upsert(ctx)
			cfg.CurrentContext = ctx.Name
			if err := cfg.Save(path); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "Logged in to %s as %s (%s, tenant %s)\n", server, name, role, tenant)
			fmt.Fprintf(g.errOut, "Saved context %q in %s and made it current.\n", ctx.Name, path)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&token, "token", "", "bearer token, or - to read it from stdin")
	f.StringVar(&caFile, "ca-file", "", "PEM file of the CA that signed the server's certificate")
	_ = cmd.MarkFlagFilename("ca-file", "crt", "pem")
	return cmd
}

// normalizeServer makes "host:port" into "https://host:port" and refuses
// plain HTTP: tokens never travel unencrypted.
func normalizeServer(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("server %q: %w", s, err)
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("server %q: Hearth serves its API over https only", s)
	}
	if u.Host == "" {
		return "", fmt.Errorf("server %q has no host", s)
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.Path, "/"), nil
}

// explainTLS turns a failed verification of the server's certificate into
// what to do about it; other errors pass as they are.
func explainTLS(server, caFile string, err error) error {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	switch {
	case errors.As(err, &unknown) && caFile == "":
		return fmt.Errorf("the server's certificate is not signed by a CA this machine trusts (Hearth signs it with its cluster's own CA): "+
			"pass --ca-file with a copy of that CA (the server writes it to DATA-DIR/ca.crt, /var/lib/hearth/ca.crt by default) (%w)", err)
	case errors.As(err, &unknown):
		return fmt.Errorf("the server's certificate is not signed by the CA in %s: is it the CA of this server's cluster (its DATA-DIR/ca.crt)? (%w)", caFile, err)
	case errors.As(err, &host):
		u, _ := url.Parse(server)
		return fmt.Errorf("the server's certificate is not valid for %s: log in with a name or address it was issued for, or start the server with --tls-san %s (%w)",
			u.Hostname(), u.Hostname(), err)
	}
	return err
}
