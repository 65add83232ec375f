package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

func init() { commands = append(commands, newHostGroupCmd) }

// newHostGroupCmd is `hearth host`: cordon, uncordon and drain hosts.
func newHostGroupCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "host",
		Short: "Cordon, uncordon and drain hosts",
		Long: `Take hosts out of service and back. A cordoned host (spec.unschedulable) gets
no new VMs; draining it also moves its VMs to other hosts.`,
	}
	for _, v := range []struct {
		use, short, done string
		cordon           bool
	}{
		{"cordon", "Give a host no new VMs", "cordoned", true},
		{"uncordon", "Let the scheduler place VMs on a host again", "uncordoned", false},
	} {
		cmd.AddCommand(&cobra.Command{
			Use: v.use + " NAME...", Short: v.short, Args: cobra.MinimumNArgs(1),
			ValidArgsFunction: completeNames(g, "Host"),
			RunE: func(cmd *cobra.Command, args []string) error {
				_, err := patchEach(cmd.Context(), g, "Host", args, map[string]any{"spec": map[string]any{"unschedulable": v.cordon}}, v.done)
				return err
			},
		})
	}
	cmd.AddCommand(newHostDrainCmd(g))
	return cmd
}

func newHostDrainCmd(g *globals) *cobra.Command {
	var to string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "drain NAME",
		Short: "Cordon a host and move its VMs elsewhere",
		Long: `Cordon the host, then move every VM on it to another host (the first Ready,
uncordoned host by name, or --to): a running VM moves live (` + "`hearth vm migrate`" + `),
a stopped one just changes host. A VM that cannot move (a disk on the host's
own storage, a disk cloned from an image, NICs, UEFI) stays, and the server's
reason is printed; the command then fails, naming how many stayed.
` + "`hearth host uncordon NAME`" + ` lets VMs come back.`,
		Example:           "  hearth host drain h1 --wait\n  hearth host drain h1 --to h2",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNames(g, "Host"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			name := args[0]
			if _, err := patchEach(ctx, g, "Host", args, map[string]any{"spec": map[string]any{"unschedulable": true}}, "cordoned"); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			vms, _, err := c.List(ctx, "VirtualMachine", "", client.ListOptions{AllTenants: true, FieldSelector: "spec.host=" + name})
			if err != nil {
				return err
			}
			var moved []*api.VirtualMachine
			var targets []string
			stayed := 0
			for _, o := range vms {
				vm := o.(*api.VirtualMachine)
				if vm.Metadata.DeletionTimestamp != nil {
					continue
				}
				target := to
				if target == "" {
					if target, err = otherHost(ctx, c, name); err != nil {
						return err
					}
				}
				patch := map[string]any{"metadata": map[string]any{"resourceVersion": vm.Metadata.ResourceVersion},
					"spec": map[string]any{"host": target}}
				if _, err := c.Patch(ctx, "VirtualMachine", vm.Metadata.Tenant, vm.Metadata.Name, patch, false); err != nil {
					fmt.Fprintf(g.errOut, "virtualmachine/%s (tenant %s) stays on %s: %v\n", vm.Metadata.Name, vm.Metadata.Tenant, name, err)
					stayed++
					continue
				}
				fmt.Fprintf(g.out, "virtualmachine/%s (tenant %s) moving to %s\n", vm.Metadata.Name, vm.Metadata.Tenant, target)
				moved, targets = append(moved, vm), append(targets, target)
			}
			if wait {
				for i, vm := range moved {
					if vm.Status.Phase != api.VMRunning {
						continue // a VM that does not run just changes host
					}
					if err := waitMigrated(ctx, g, c, vm, targets[i], timeout); err != nil {
						return err
					}
				}
			}
			if stayed > 0 {
				return fmt.Errorf("host/%s is cordoned, but %d of its %d VMs cannot move and stay on it", name, stayed, stayed+len(moved))
			}
			fmt.Fprintf(g.out, "host/%s drained\n", name)
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "move every VM to this host (default: another Ready, uncordoned host)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until every running VM that moves runs on its new host")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "with --wait, how long to wait for each VM")
	return cmd
}
