package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newCompletionCmd) }

func newCompletionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print a shell completion script",
		Long: `Print a script that teaches a shell to complete hearth's commands, flags,
kinds and (asking the server) object names.`,
		Example: `  source <(hearth completion bash)
  hearth completion zsh > "${fpath[1]}/_hearth"
  hearth completion fish > ~/.config/fish/completions/hearth.fish`,
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(g.out, true)
			case "zsh":
				return root.GenZshCompletion(g.out)
			case "fish":
				return root.GenFishCompletion(g.out, true)
			case "powershell":
				return root.GenPowerShellCompletionWithDesc(g.out)
			}
			return fmt.Errorf("unknown shell %q", args[0])
		},
	}
}
