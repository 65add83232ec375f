package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server"
	"hearth.dev/hearth/server/auth"
)

func init() { commands = append(commands, newTokenCmd) }

// defaultJoinTTL bounds join tokens made without --ttl: they let any
// machine become a host, so they should not linger.
const defaultJoinTTL = 24 * time.Hour

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke API tokens and host join tokens",
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

func userTokensPath(user string) string {
	return api.PathPrefix + "/users/" + url.PathEscape(user) + "/tokens"
}

const joinTokensPath = api.PathPrefix + "/jointokens"

func newTokenCreateCmd(g *globals) *cobra.Command {
	var user, description, site string
	var join bool
	var ttl time.Duration
	var labels map[string]string
	cmd := &cobra.Command{
		Use:   "create [--user NAME | --join]",
		Short: "Create a token and print its secret",
		Long: `Create a token for a user (default: yourself), or with --join a token that
lets hosts join the cluster (they get --site and --label). Only the secret
is printed on stdout, so it can be captured; it is shown this once.

User tokens do not expire unless --ttl says so; join tokens expire after
24h unless --ttl says otherwise.`,
		Example: `  TOKEN=$(hearth token create --user alice --ttl 720h --description laptop)
  hearth token create --join --site home --label rack=a`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if join && user != "" {
				return errors.New("give either --user or --join")
			}
			if !join && (site != "" || len(labels) > 0) {
				return errors.New("--site and --label are for join tokens (--join)")
			}
			if ttl < 0 {
				return fmt.Errorf("--ttl %s is negative", ttl)
			}
			if join && !cmd.Flags().Changed("ttl") {
				ttl = defaultJoinTTL
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			req := server.TokenRequest{Description: description, Site: site, Labels: labels}
			if ttl > 0 {
				req.TTL = ttl.String()
			}
			path, owner := joinTokensPath, "joining hosts"
			if !join {
				if user, err = tokenUser(ctx, c, user); err != nil {
					return err
				}
				path, owner = userTokensPath(user), "user "+user
			}
			var resp server.TokenResponse
			if err := c.Do(ctx, http.MethodPost, path, req, &resp); err != nil {
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
	_ = cmd.RegisterFlagCompletionFunc("user", func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return g.nameCompletions(cmd.Context(), "User", toComplete), cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

func newTokenListCmd(g *globals) *cobra.Command {
	var user string
	var join bool
	var output string
	cmd := &cobra.Command{
		Use:   "list [--user NAME | --join]",
		Short: "List a user's tokens (default: yours), or the join tokens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if join && user != "" {
				return errors.New("give either --user or --join")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			path := joinTokensPath
			if !join {
				if user, err = tokenUser(ctx, c, user); err != nil {
					return err
				}
				path = userTokensPath(user)
			}
			var list struct {
				Items []auth.TokenRecord `json:"items"`
			}
			if err := c.Do(ctx, http.MethodGet, path, nil, &list); err != nil {
				return err
			}
			if output == "yaml" || output == "json" {
				return printValue(g.out, output, list)
			}
			if len(list.Items) == 0 {
				if join {
					fmt.Fprintln(g.errOut, "No join tokens.")
				} else {
					fmt.Fprintf(g.errOut, "No tokens for user %s.\n", user)
				}
				return nil
			}
			now := time.Now()
			header := []string{"ID", "DESCRIPTION", "AGE", "EXPIRES"}
			if join {
				header = []string{"ID", "SITE", "LABELS", "DESCRIPTION", "AGE", "EXPIRES"}
			}
			rows := [][]string{header}
			for _, t := range list.Items {
				created := t.Created
				exp := "never"
				switch {
				case t.Expired(now):
					exp = "expired"
				case t.Expires != nil:
					exp = "in " + api.Age(&now, *t.Expires)
				}
				if join {
					labels := ""
					if len(t.Labels) > 0 {
						labels = formatLabels(t.Labels)
					}
					rows = append(rows, []string{t.ID, t.Site, labels, t.Description, api.Age(&created, now), exp})
				} else {
					rows = append(rows, []string{t.ID, t.Description, api.Age(&created, now), exp})
				}
			}
			return writeTable(g.out, rows)
		},
	}
	f := cmd.Flags()
	f.StringVar(&user, "user", "", "user whose tokens to list (default: yours)")
	f.BoolVar(&join, "join", false, "list join tokens instead")
	f.StringVarP(&output, "output", "o", "", "yaml or json instead of a table")
	return cmd
}

func newTokenDeleteCmd(g *globals) *cobra.Command {
	var user string
	cmd := &cobra.Command{
		Use:     "delete [--user NAME] ID...",
		Aliases: []string{"revoke"},
		Short:   "Revoke tokens of a user (default: yours) by ID",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := g.client()
			if err != nil {
				return err
			}
			if user, err = tokenUser(ctx, c, user); err != nil {
				return err
			}
			var failed []string
			for _, id := range args {
				err := c.Do(ctx, http.MethodDelete, userTokensPath(user)+"/"+url.PathEscape(id), nil, nil)
				if api.IsNotFound(err) {
					err = fmt.Errorf("user %s has no token %s (see `hearth token list --user %s`)", user, id, user)
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
	cmd.Flags().StringVar(&user, "user", "", "user whose token to revoke (default: yours)")
	return cmd
}
