package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
)

func init() { commands = append(commands, newMachineGroupCmd) }

// machineSubcommands are the commands under `hearth machine` that live in
// files of their own (power); each appends its constructor from init.
var machineSubcommands []func(*globals) *cobra.Command

// newMachineGroupCmd is `hearth machine`: the verbs that act on bare-metal
// machines rather than edit them. Listing and describing them is `hearth
// get machines` and `hearth describe machine NAME` (which shows the boot
// timeline, its events).
func newMachineGroupCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "machine",
		Short: "Approve, reinstall and power bare-metal machines",
		Long: `Act on bare-metal machines. A machine that network-boots for the first time
is discovered (phase Discovered) and boots nothing until it is approved,
by hand or by its profile's autoApprove; see where each machine stands with
` + "`hearth get machines`" + ` and why with ` + "`hearth describe machine NAME`" + `.`,
	}
	for _, add := range append([]func(*globals) *cobra.Command{newMachineApproveCmd, newMachineReinstallCmd}, machineSubcommands...) {
		cmd.AddCommand(add(g))
	}
	return cmd
}

// completeNames completes names of objects of kind.
func completeNames(g *globals, kind string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return g.nameCompletions(cmd.Context(), kind, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

func newMachineApproveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "approve NAME...",
		Short: "Let machines boot their profile",
		Long: `Approve machines (set spec.approved): on its next network boot each boots
its profile, which for an install profile installs it. Until then a
discovered machine gets a script that waits and asks again, so a stray
machine on the provisioning network is never installed over.`,
		Example:           "  hearth machine approve node1 node2",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeNames(g, "Machine"),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := patchEach(cmd.Context(), g, "Machine", args, map[string]any{"spec": map[string]any{"approved": true}}, "approved")
			return err
		},
	}
}

func newMachineReinstallCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "reinstall NAME...",
		Short: "Run the profile's installer again on the next boot",
		Long: `Ask for machines to be installed again (set spec.reinstallRequested to now):
on its next network boot each boots its profile's installer instead of its
disk. Power-cycle it to start now. A machine that does not network-boot
first (an installer may put the installed system first in the firmware's
boot order) needs a one-time network boot from its BMC or boot menu.`,
		Example:           "  hearth machine reinstall node1",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeNames(g, "Machine"),
		RunE: func(cmd *cobra.Command, args []string) error {
			now := time.Now().UTC().Format(time.RFC3339Nano)
			_, err := patchEach(cmd.Context(), g, "Machine", args, map[string]any{"spec": map[string]any{"reinstallRequested": now}}, "reinstall requested")
			return err
		},
	}
}

// patchEach merge-patches each named object of kind (in the context's or
// --tenant's tenant, for tenant-scoped kinds) and prints "kind/NAME done"
// for each. It goes on past a failure: with one name the error is
// returned, with several each is printed as it happens. It returns the
// objects as patched.
func patchEach(ctx context.Context, g *globals, kind string, names []string, patch map[string]any, done string) ([]api.Object, error) {
	k, err := api.KindByName(kind)
	if err != nil {
		return nil, err
	}
	c, err := g.client()
	if err != nil {
		return nil, err
	}
	noun := strings.ToLower(k.Kind)
	failed := 0
	var patched []api.Object
	for _, name := range names {
		out, err := c.Patch(ctx, k.Kind, g.readTenant(k), name, patch, false)
		if err != nil {
			if api.IsNotFound(err) {
				where := ""
				if t := g.shownTenant(c, k); t != "" {
					where = " in tenant " + t
				}
				err = fmt.Errorf("%s %q not found%s (see `hearth get %s`)", noun, name, where, k.Plural)
			}
			if len(names) == 1 {
				return nil, err
			}
			printError(g.errOut, err)
			failed++
			continue
		}
		fmt.Fprintf(g.out, "%s/%s %s\n", noun, name, done)
		patched = append(patched, out)
	}
	if failed > 0 {
		return patched, fmt.Errorf("%d of %d %s failed", failed, len(names), k.Plural)
	}
	return patched, nil
}
