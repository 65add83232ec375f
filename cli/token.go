package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

func init() { commands = append(commands, newTokenCmd) }

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke API tokens, join tokens and host credentials",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newTokenCreateCmd(g), newTokenListCmd(g), newTokenDeleteCmd(g))
	return cmd
}

// tokenUser is --user, or the caller.
func tokenUser(ctx context.Context, c *client.Client, user string) (string, error) {
	if user != "" {
		return user, nil
	}
	who, err := c.WhoAmI(ctx)
	if err != nil {
		return "", err
	}
	name, _ := who["name"].(string)
	if name == "" {
		return "", errors.New("name the user with --user")
	}
	return name, nil
}

func newTokenCreateCmd(g *globals) *cobra.Command {
	var user, description, site, host string
	var join, reusable bool
	var ttl time.Duration
	var labels map[string]string
	cmd := &cobra.Command{
		Use:   "create [--user NAME | --join [--host NAME]]",
		Short: "Create a token and print its secret",
		Long: `Create a token for a user (default: yourself), or with --join a token that
lets a host join the cluster: its agent's first start registers a new Host
(with --site and --label) and gets the host's own credential in exchange.
Only the secret is printed on stdout, so it can be captured; it is shown
this once.

A join token registers one host (or boot service) and is spent; with
--reusable it registers any number until it expires. It registers only
hosts whose name is not taken: to join a Host that exists again (a
reinstalled machine), make one with --host NAME; the host then gets a new
credential and its old ones are revoked.

User tokens do not expire unless --ttl says so; join tokens expire after
24h unless --ttl says otherwise.`,
		Example: `  TOKEN=$(hearth token create --user alice --ttl 720h --description laptop)
  hearth token create --join --site home --label rack=a > join-token
  hearth token create --join --host h1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if join && user != "" {
				return errors.New("give either --user or --join")
			}
			if !join && (site != "" || len(labels) > 0 || host != "" || reusable) {
				return errors.New("--site, --label, --host and --reusable are for join tokens (--join)")
			}
			if ttl < 0 {
				return fmt.Errorf("--ttl %s is negative", ttl)
			}
			if join && !cmd.Flags().Changed("ttl") {
				ttl = api.DefaultJoinTTL
			}
			if join && cmd.Flags().Changed("ttl") && ttl == 0 {
				return errors.New("--ttl: join tokens always expire; give a duration such as 24h")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			req := api.TokenRequest{Description: description, Site: site, Labels: labels, Host: host, Reusable: reusable}
			if ttl > 0 {
				req.TTL = ttl.String()
			}
			set, owner := client.JoinTokens(), "joining hosts"
			switch {
			case host != "":
				owner = "re-joining host " + host
			case reusable:
				owner = "joining hosts, reusable"
			default:
				owner = "joining one host"
			}
			if !join {
				if user, err = tokenUser(ctx, c, user); err != nil {
					return err
				}
				set, owner = client.UserTokens(user), "user "+user
			}
			resp, err := c.CreateToken(ctx, set, req)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.out, resp.Token)
			expires := "never expires"
			if resp.Expires != nil {
				expires = "expires " + resp.Expires.Local().Format(time.RFC3339)
			}
			fmt.Fprintf(g.errOut, "Created token %s for %s (%s). This is the only time its secret is shown.\n", resp.ID, owner, expires)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&user, "user", "", "user the token is for (default: yourself)")
	f.BoolVar(&join, "join", false, "create a join token for hosts instead")
	f.DurationVar(&ttl, "ttl", 0, "lifetime, such as 24h or 720h (default: none for user tokens, 24h for join tokens)")
	f.StringVar(&description, "description", "", "what the token is for, shown by `token list`")
	f.StringVar(&site, "site", "", "site hosts joining with the token belong to")
	f.StringToStringVar(&labels, "label", nil, "label hosts joining with the token get, as k=v; repeatable")
	f.StringVar(&host, "host", "", "make a join token that re-joins this existing Host, and nothing else")
	f.BoolVar(&reusable, "reusable", false, "let the join token register any number of hosts until it expires (default: one)")
	_ = cmd.RegisterFlagCompletionFunc("host", func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return g.nameCompletions(cmd.Context(), "Host", toComplete), cobra.ShellCompDirectiveNoFileComp
	})
	_ = cmd.RegisterFlagCompletionFunc("user", func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return g.nameCompletions(cmd.Context(), "User", toComplete), cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// tokenSet is which tokens list and delete are about: a user's, the join
// tokens, or the credentials of hosts and boot services.
type tokenSet struct {
	user        string
	join, hosts bool
}

func (ts *tokenSet) flags(f *pflag.FlagSet, verb string) {
	f.StringVar(&ts.user, "user", "", "user whose tokens to "+verb+" (default: yours)")
	f.BoolVar(&ts.join, "join", false, verb+" join tokens instead")
	f.BoolVar(&ts.hosts, "hosts", false, verb+" the credentials of hosts and boot services instead (cluster admins)")
}

// set returns the chosen tokens, and what to call one of them.
func (ts *tokenSet) set(ctx context.Context, c *client.Client, host string) (client.TokenSet, string, error) {
	n := 0
	for _, b := range []bool{ts.user != "", ts.join, ts.hosts} {
		if b {
			n++
		}
	}
	switch {
	case n > 1:
		return client.TokenSet{}, "", errors.New("give one of --user, --join and --hosts")
	case ts.join:
		return client.JoinTokens(), "join token", nil
	case ts.hosts:
		return client.HostCredentials(host), "host credential", nil
	}
	user, err := tokenUser(ctx, c, ts.user)
	if err != nil {
		return client.TokenSet{}, "", err
	}
	ts.user = user
	return client.UserTokens(user), "token of user " + user, nil
}

func newTokenListCmd(g *globals) *cobra.Command {
	var ts tokenSet
	var output, host string
	cmd := &cobra.Command{
		Use:   "list [--user NAME | --join | --hosts [--host NAME]]",
		Short: "List a user's tokens (default: yours), the join tokens, or hosts' credentials",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := g.client()
			if err != nil {
				return err
			}
			if host != "" {
				ts.hosts = true
			}
			set, _, err := ts.set(ctx, c, host)
			if err != nil {
				return err
			}
			items, err := c.ListTokens(ctx, set)
			if err != nil {
				return err
			}
			if output == "yaml" || output == "json" {
				return printValue(g.out, output, api.TokenList{Items: items})
			}
			if len(items) == 0 {
				switch {
				case ts.join:
					fmt.Fprintln(g.errOut, "No join tokens.")
				case ts.hosts:
					fmt.Fprintln(g.errOut, "No host credentials.")
				default:
					fmt.Fprintf(g.errOut, "No tokens for user %s.\n", ts.user)
				}
				return nil
			}
			now := time.Now()
			header := []string{"ID", "DESCRIPTION", "AGE", "EXPIRES"}
			switch {
			case ts.join:
				header = []string{"ID", "USES", "HOST", "SITE", "LABELS", "DESCRIPTION", "AGE", "EXPIRES"}
			case ts.hosts:
				header = []string{"ID", "KIND", "HOST", "DESCRIPTION", "AGE"}
			}
			rows := [][]string{header}
			for _, t := range items {
				created := t.Created
				exp := "never"
				switch {
				case t.Expired(now):
					exp = "expired"
				case t.Expires != nil:
					exp = "in " + api.Age(&now, *t.Expires)
				}
				switch {
				case ts.join:
					labels := ""
					if len(t.Labels) > 0 {
						labels = formatLabels(t.Labels)
					}
					uses := "once"
					if t.Reusable {
						uses = fmt.Sprintf("reusable (%d)", t.Uses)
					}
					host := "(new)"
					if t.Host != "" {
						host = t.Host
					}
					rows = append(rows, []string{t.ID, uses, host, t.Site, labels, t.Description, api.Age(&created, now), exp})
				case ts.hosts:
					rows = append(rows, []string{t.ID, string(t.Kind), t.Host, t.Description, api.Age(&created, now)})
				default:
					rows = append(rows, []string{t.ID, t.Description, api.Age(&created, now), exp})
				}
			}
			return writeTable(g.out, rows)
		},
	}
	f := cmd.Flags()
	ts.flags(f, "list")
	f.StringVar(&host, "host", "", "with --hosts: only this host's credentials")
	f.StringVarP(&output, "output", "o", "", "yaml or json instead of a table")
	return cmd
}

func newTokenDeleteCmd(g *globals) *cobra.Command {
	var ts tokenSet
	cmd := &cobra.Command{
		Use:     "delete [--user NAME | --join | --hosts] ID...",
		Aliases: []string{"revoke"},
		Short:   "Revoke tokens by ID: a user's (default: yours), join tokens, or hosts' credentials",
		Long: `Revoke tokens by the ID that token list shows. They are refused at once.

A host whose credential is revoked stops with "host credential revoked or
Host deleted" and waits for a new join token (hearth token create --join
--host NAME) in its --join-token-file. Deleting a Host revokes its
credentials too.`,
		Example: `  hearth token delete 3f9a1c2b7d4e
  hearth token delete --join 5e6f7a8b9c0d
  hearth token list --hosts --host h1
  hearth token delete --hosts 0a1b2c3d4e5f`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := g.client()
			if err != nil {
				return err
			}
			set, what, err := ts.set(ctx, c, "")
			if err != nil {
				return err
			}
			list := "hearth token list --user " + ts.user
			switch {
			case ts.join:
				list = "hearth token list --join"
			case ts.hosts:
				list = "hearth token list --hosts"
			}
			var failed []string
			for _, id := range args {
				err := c.RevokeToken(ctx, set, id)
				if api.IsNotFound(err) {
					err = fmt.Errorf("no %s has id %s (see `%s`)", what, id, list)
				}
				if err != nil {
					if len(args) == 1 {
						return err
					}
					printError(g.errOut, err)
					failed = append(failed, id)
					continue
				}
				fmt.Fprintf(g.out, "token %s deleted\n", id)
			}
			if len(failed) > 0 {
				return fmt.Errorf("could not delete %s", strings.Join(failed, ", "))
			}
			return nil
		},
	}
	ts.flags(cmd.Flags(), "revoke")
	return cmd
}
