package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"hearth.dev/hearth/client"
)

func init() { commands = append(commands, newConfigCmd) }

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show and switch the contexts of the client config",
		Long: `The client config file (--config, $HEARTH_CONFIG, or ` + client.DefaultConfigPath() + `)
holds contexts: a server, a token and a default tenant each. ` + "`hearth login`" + ` adds
them; these commands show them and pick the current one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	load := func() (*client.Config, string, error) {
		path := client.ConfigPath(g.config)
		cfg, err := client.LoadConfig(path)
		return cfg, path, err
	}
	completeContexts := func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		cfg, _, err := load()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, c := range cfg.Contexts {
			out = append(out, c.Name)
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}

	cmd.AddCommand(&cobra.Command{
		Use:   "get-contexts",
		Short: "List the contexts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, path, err := load()
			if err != nil {
				return err
			}
			if len(cfg.Contexts) == 0 {
				fmt.Fprintf(g.errOut, "No contexts in %s: add one with `hearth login`.\n", path)
				return nil
			}
			rows := [][]string{{"CURRENT", "NAME", "SERVER", "TENANT"}}
			for _, c := range cfg.Contexts {
				cur := ""
				if c.Name == cfg.CurrentContext {
					cur = "*"
				}
				rows = append(rows, []string{cur, c.Name, c.Server, c.Tenant})
			}
			return writeTable(g.out, rows)
		},
	})

	cmd.AddCommand(&cobra.Command{
		Use:               "use-context NAME",
		Short:             "Make a context the current one",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeContexts,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, path, err := load()
			if err != nil {
				return err
			}
			if _, err := cfg.Current(args[0]); err != nil {
				return err
			}
			cfg.CurrentContext = args[0]
			if err := cfg.Save(path); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "Switched to context %q.\n", args[0])
			return nil
		},
	})

	cmd.AddCommand(&cobra.Command{
		Use:   "current-context",
		Short: "Print the name of the current context",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := load()
			if err != nil {
				return err
			}
			if cfg.CurrentContext == "" {
				return errors.New("no current context: pick one with `hearth config use-context NAME`")
			}
			fmt.Fprintln(g.out, cfg.CurrentContext)
			return nil
		},
	})

	var raw bool
	view := &cobra.Command{
		Use:   "view",
		Short: "Print the config, with tokens and certificates masked",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := load()
			if err != nil {
				return err
			}
			if !raw {
				maskConfig(cfg)
			}
			cfg.APIVersion, cfg.Kind = "hearth.dev/v1alpha1", "Config"
			return printValue(g.out, "yaml", cfg)
		},
	}
	view.Flags().BoolVar(&raw, "raw", false, "show tokens and certificates as they are")
	cmd.AddCommand(view)
	return cmd
}

// maskConfig hides the secrets of a config (and the bulk of the CAs) so
// it can be shown or pasted into a bug report.
func maskConfig(cfg *client.Config) {
	for i := range cfg.Contexts {
		c := &cfg.Contexts[i]
		if c.Token != "" {
			c.Token = "REDACTED"
		}
		if c.CertificateAuthority != "" {
			c.CertificateAuthority = "DATA+OMITTED"
		}
	}
}
