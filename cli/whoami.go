package cli

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newWhoAmICmd) }

func newWhoAmICmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "whoami",
		Short: "Show who the server thinks you are",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			who, err := c.WhoAmI(cmd.Context())
			if err != nil {
				return err
			}
			if output == "yaml" || output == "json" {
				return printValue(g.out, output, who)
			}
			str := func(k string) string {
				s, _ := who[k].(string)
				if s == "" {
					return "<none>"
				}
				return s
			}
			rows := [][]string{
				{"Name:", str("name")},
				{"Role:", str("role")},
				{"Tenant:", str("tenant")},
			}
			if h, _ := who["host"].(string); h != "" {
				rows = append(rows, []string{"Host:", h})
			}
			// Whatever else a newer server tells, in a stable order.
			var extra []string
			for k := range who {
				switch k {
				case "name", "role", "tenant", "host":
				default:
					extra = append(extra, k)
				}
			}
			sort.Strings(extra)
			for _, k := range extra {
				rows = append(rows, []string{k + ":", fmt.Sprint(who[k])})
			}
			rows = append(rows, []string{"Server:", c.Server()})
			return writeTable(g.out, rows)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "yaml or json instead of text")
	return cmd
}
