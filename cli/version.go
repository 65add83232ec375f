package cli

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/version"
)

func init() { commands = append(commands, newVersionCmd) }

func newVersionCmd(g *globals) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary and of the server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(g.out, "Client Version: %s (API %s)\n", version.Version, api.APIVersion)
			if clientOnly {
				return nil
			}
			c, err := g.client()
			if err != nil {
				fmt.Fprintf(g.errOut, "Server Version: unknown (%v)\n", err)
				return nil
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			var v struct {
				Version    string `json:"version"`
				APIVersion string `json:"apiVersion"`
			}
			if err := c.Do(ctx, http.MethodGet, "/version", nil, &v); err != nil {
				return fmt.Errorf("asking %s for its version: %w", c.Server(), err)
			}
			fmt.Fprintf(g.out, "Server Version: %s (API %s) at %s\n", v.Version, v.APIVersion, c.Server())
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print only this binary's version")
	return cmd
}
