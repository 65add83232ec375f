package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
)

func init() { commands = append(commands, newLogsCmd) }

func newLogsCmd(g *globals) *cobra.Command {
	var follow bool
	var tail int64
	var tailBytes string
	cmd := &cobra.Command{
		Use:   "logs vm/NAME | virtualmachine NAME | NAME",
		Short: "Print a VM's serial console log",
		Long: `Print what a VM has written to its serial console (kernel messages, the
login prompt, cloud-init's progress), across restarts. The log is kept by
the VM's host even when nobody is attached, up to the agent's
--console-log-max (8Mi by default; the previous part is kept beside it, so
up to twice that is shown); ` + "`hearth console`" + ` attaches.`,
		Example: `  hearth logs vm/web-1
  hearth logs vm/web-1 -f --tail 20
  hearth logs virtualmachine web-1 --tail-bytes 4Ki -t lab`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeVMs(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := vmName(args)
			if err != nil {
				return err
			}
			o := api.LogOptions{Follow: follow}
			if tail >= 0 {
				o.TailLines = &tail
			}
			if tailBytes != "" {
				if o.TailLines != nil {
					return errors.New("--tail counts lines and --tail-bytes bytes: give one")
				}
				b, err := api.ParseBytes(tailBytes)
				if err != nil {
					return fmt.Errorf("--tail-bytes: %w", err)
				}
				n := int64(b)
				o.TailBytes = &n
			}
			return runLogs(cmd.Context(), g, name, o)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new output until interrupted or the VM is deleted")
	f.Int64Var(&tail, "tail", -1, "print only the last N lines of the log (default: all of it; 0 with -f: only what comes next)")
	f.StringVar(&tailBytes, "tail-bytes", "", "print only the last BYTES of the log, such as 2048 or 4Ki")
	return cmd
}

func runLogs(ctx context.Context, g *globals, name string, o api.LogOptions) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	rc, err := c.Logs(ctx, "", name, o)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(g.out, rc)
	if err != nil && ctx.Err() != nil {
		return nil // interrupted while following
	}
	return err
}

// vmName reads the VM a console command names: vm/NAME, KIND NAME with a
// kind that means VirtualMachine, or a bare NAME.
func vmName(args []string) (string, error) {
	var kind, name string
	switch {
	case len(args) == 2:
		kind, name = args[0], args[1]
	case strings.Contains(args[0], "/"):
		kind, name, _ = strings.Cut(args[0], "/")
	default:
		return args[0], nil
	}
	if name == "" {
		return "", errors.New("name a VM: vm/NAME")
	}
	k, err := api.KindByName(kind)
	if err != nil {
		return "", err
	}
	if k.Kind != "VirtualMachine" {
		return "", fmt.Errorf("only VirtualMachines have consoles, not %s", k.Plural)
	}
	return name, nil
}
