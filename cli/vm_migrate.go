package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

// newVMMigrateCmd is `hearth vm migrate NAME [--to HOST]`: it sets the
// VM's spec.host, which the agents of the two hosts carry out as a live
// migration (agent/migrate.go); the server refuses a VM that cannot move
// (a disk not in a shared pool, NICs, UEFI) and says why.
func newVMMigrateCmd(g *globals) *cobra.Command {
	var to string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "migrate NAME",
		Short: "Move a VM to another host, live",
		Long: `Set the VM's spec.host to another host: the new host's agent starts QEMU with
the same devices, waiting for the VM's state, and the old host's agent
sends it there over QMP; the VM is Migrating, then Running on the new host.
Only VMs whose disks are all Volumes in shared pools (rbd, nfs) can move.

Without --to, the VM goes to the first Ready host (by name) that is not
cordoned and is not its host now. With --wait, wait until it runs there.`,
		Example:           "  hearth vm migrate web-1 --to h2 -t lab --wait",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNames(g, "VirtualMachine"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := g.client()
			if err != nil {
				return err
			}
			k, _ := api.KindByName("VirtualMachine")
			o, err := c.Get(ctx, "VirtualMachine", g.readTenant(k), args[0])
			if err != nil {
				return err
			}
			vm := o.(*api.VirtualMachine)
			if to == "" {
				if to, err = otherHost(ctx, c, vm.Spec.Host); err != nil {
					return err
				}
			}
			if to == vm.Spec.Host {
				return fmt.Errorf("virtualmachine/%s is on %s already", vm.Metadata.Name, to)
			}
			patch := map[string]any{"metadata": map[string]any{"resourceVersion": vm.Metadata.ResourceVersion},
				"spec": map[string]any{"host": to}}
			if _, err := c.Patch(ctx, "VirtualMachine", vm.Metadata.Tenant, vm.Metadata.Name, patch, false); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "virtualmachine/%s moving from %s to %s\n", vm.Metadata.Name, vm.Spec.Host, to)
			if !wait {
				return nil
			}
			return waitMigrated(ctx, g, c, vm, to, timeout)
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the host to move the VM to (default: another Ready, uncordoned host)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the VM runs on the new host")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "with --wait, how long to wait")
	return cmd
}

// otherHost picks a Ready, schedulable host other than from.
func otherHost(ctx context.Context, c *client.Client, from string) (string, error) {
	hosts, _, err := c.List(ctx, "Host", "", client.ListOptions{})
	if err != nil {
		return "", err
	}
	for _, o := range hosts {
		h := o.(*api.Host)
		if h.Metadata.Name != from && h.Status.Phase == api.HostReady && !h.Spec.Unschedulable {
			return h.Metadata.Name, nil
		}
	}
	return "", fmt.Errorf("no other Ready, uncordoned host to move to: give one with --to")
}

// waitMigrated polls the VM until it runs on host to.
func waitMigrated(ctx context.Context, g *globals, c *client.Client, vm *api.VirtualMachine, to string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last *api.VirtualMachine
	for {
		o, err := c.Get(ctx, "VirtualMachine", vm.Metadata.Tenant, vm.Metadata.Name)
		if err == nil {
			last = o.(*api.VirtualMachine)
			if last.Status.Host == to && last.Status.Phase == api.VMRunning && last.Status.Migration == nil {
				fmt.Fprintf(g.out, "virtualmachine/%s is Running on %s\n", vm.Metadata.Name, to)
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if last == nil {
				return ctx.Err()
			}
			return fmt.Errorf("timed out waiting for virtualmachine/%s to run on %s: it is %s on %s (%s)",
				vm.Metadata.Name, to, last.Status.Phase, last.Status.Host, vmWhy(last))
		case <-time.After(500 * time.Millisecond):
		}
	}
}
