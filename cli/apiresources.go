package cli

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
)

func init() { commands = append(commands, newAPIResourcesCmd) }

func newAPIResourcesCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "api-resources",
		Short: "List the kinds of object, with their short names and scope",
		Long: `List every kind the API serves: the plural and short names the verbs
accept, and whether objects belong to a tenant (Tenant), to the cluster
(Cluster), or to either (TenantOptional).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			kinds := api.Kinds()
			sort.Slice(kinds, func(i, j int) bool { return kinds[i].Plural < kinds[j].Plural })
			switch output {
			case "name":
				for _, k := range kinds {
					fmt.Fprintln(g.out, k.Plural)
				}
				return nil
			case "", "wide":
			default:
				return fmt.Errorf("-o %s is not supported here (want wide or name)", output)
			}
			header := []string{"NAME", "SHORTNAMES", "KIND", "SCOPE"}
			if output == "wide" {
				header = append(header, "DESCRIPTION")
			}
			rows := [][]string{header}
			for _, k := range kinds {
				// The singular is a short name only for the lookup's sake.
				var short []string
				for _, s := range k.ShortNames {
					if s != strings.ToLower(k.Kind) {
						short = append(short, s)
					}
				}
				r := []string{k.Plural, strings.Join(short, ","), k.Kind, k.Scope.String()}
				if output == "wide" {
					r = append(r, k.Description)
				}
				rows = append(rows, r)
			}
			return writeTable(g.out, rows)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "wide (adds DESCRIPTION) or name")
	return cmd
}
