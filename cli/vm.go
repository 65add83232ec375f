package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

func init() { commands = append(commands, newVMGroupCmd) }

// vmVerbs are the power verbs of `hearth vm`: each sets the VM's spec, and
// the host's agent does the rest.
var vmVerbs = []struct {
	use, short, long, done string
	spec                   func() map[string]any
}{
	{"start", "Start stopped VMs", "Set spec.powerState to Running: the host's agent starts the VM (or resumes\na paused one). A VM whose restart policy left it stopped (its guest powered\nitself off under OnFailure or Never, or it crashed under Never) has\nspec.powerState Running already: start also sets spec.restartRequested,\nwhich starts it.",
		"started", func() map[string]any { return map[string]any{"powerState": api.PowerRunning} }},
	{"stop", "Shut VMs down", "Set spec.powerState to Stopped: the host's agent presses the ACPI power\nbutton and kills QEMU if the guest has not powered off within the agent's\n--shutdown-timeout. The VM keeps its disks and its host.",
		"stopped", func() map[string]any { return map[string]any{"powerState": api.PowerStopped} }},
	{"restart", "Restart running VMs", "Set spec.restartRequested to now: the host's agent shuts the VM down (ACPI,\nthen a kill after its --shutdown-timeout) and starts it again, once. A\nstopped VM stays stopped.",
		"restart requested", func() map[string]any {
			return map[string]any{"restartRequested": time.Now().UTC().Format(time.RFC3339Nano)}
		}},
	{"pause", "Pause VMs (freeze their vCPUs)", "Set spec.powerState to Paused: the guest stops running but keeps its memory.",
		"paused", func() map[string]any { return map[string]any{"powerState": api.PowerPaused} }},
	{"resume", "Resume paused VMs", "Set spec.powerState to Running: a paused guest carries on where it was.",
		"resumed", func() map[string]any { return map[string]any{"powerState": api.PowerRunning} }},
}

// newVMGroupCmd is `hearth vm`: power verbs for VirtualMachines, the
// shorthand for editing spec.powerState and spec.restartRequested.
func newVMGroupCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vm",
		Short: "Start, stop, restart, pause, resume and migrate VMs",
		Long: `Change the power state of VMs. Each verb sets the VM's spec and returns;
the host's agent converges (watch it with ` + "`hearth get vm -w`" + `, and why with
` + "`hearth describe vm NAME`" + `).`,
	}
	for _, v := range vmVerbs {
		var wait bool
		var timeout time.Duration
		verb := &cobra.Command{
			Use:   v.use + " NAME...",
			Short: v.short,
			Long: v.long + `

With --wait, wait until each VM's agent has acted on the change and the
VM is in the phase its power state asks for (Running, Stopped or Paused),
or say where it is stuck once --timeout has passed.`,
			Example:           "  hearth vm " + v.use + " web-1 web-2 -t lab\n  hearth vm " + v.use + " web-1 --wait --timeout 2m",
			Args:              cobra.MinimumNArgs(1),
			ValidArgsFunction: completeNames(g, "VirtualMachine"),
			RunE: func(cmd *cobra.Command, args []string) error {
				if v.use == "start" {
					restartHeld(cmd.Context(), g, args)
				}
				patched, err := patchEach(cmd.Context(), g, "VirtualMachine", args, map[string]any{"spec": v.spec()}, v.done)
				if !wait || len(patched) == 0 {
					return err
				}
				werr := waitVMs(cmd.Context(), g, patched, timeout)
				if err != nil {
					return err
				}
				return werr
			},
		}
		verb.Flags().BoolVar(&wait, "wait", false, "wait until each VM reaches the phase its power state asks for")
		verb.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "with --wait, how long to wait in all")
		cmd.AddCommand(verb)
	}
	cmd.AddCommand(newVMMigrateCmd(g))
	return cmd
}

// restartHeld asks for a restart of each named VM that its restart
// policy left stopped while its spec.powerState is Running, so that
// `hearth vm start` starts it: setting Running again changes nothing.
// A VM it cannot read is left to patchEach, which says why.
func restartHeld(ctx context.Context, g *globals, names []string) {
	c, err := g.client()
	if err != nil {
		return
	}
	k, _ := api.KindByName("VirtualMachine")
	for _, name := range names {
		o, err := c.Get(ctx, k.Kind, g.readTenant(k), name)
		if err != nil {
			continue
		}
		vm := o.(*api.VirtualMachine)
		ready := vm.Status.Condition(api.ConditionReady)
		policy := vm.Spec.RestartPolicy
		held := vm.Spec.PowerState == api.PowerRunning && ready != nil &&
			((vm.Status.Phase == api.VMStopped && ready.Reason == api.ReasonGuestShutdown && policy != api.RestartAlways) ||
				(vm.Status.Phase == api.VMFailed && ready.Reason == api.ReasonCrashed && policy == api.RestartNever))
		if held {
			patch := map[string]any{"spec": map[string]any{"restartRequested": time.Now().UTC().Format(time.RFC3339Nano)}}
			if _, err := c.Patch(ctx, k.Kind, g.readTenant(k), name, patch, false); err != nil {
				printError(g.errOut, err)
			}
		}
	}
}

// phaseFor is the phase a VM kept in a power state ends up in.
func phaseFor(powerState string) string {
	switch powerState {
	case api.PowerStopped:
		return api.VMStopped
	case api.PowerPaused:
		return api.VMPaused
	}
	return api.VMRunning
}

// vmSettled says whether a VM's agent has acted on generation gen of its
// spec and the VM is where its power state asks; an error when it
// failed instead.
func vmSettled(vm *api.VirtualMachine, gen int64) (bool, error) {
	if vm.Status.ObservedGeneration < gen {
		return false, nil
	}
	switch vm.Status.Phase {
	case phaseFor(vm.Spec.PowerState):
		return true, nil
	case api.VMFailed:
		return false, fmt.Errorf("virtualmachine/%s failed: %s", vm.Metadata.Name, vmWhy(vm))
	}
	return false, nil
}

// vmWhy says why a VM is in its phase: its conditions that are not True.
func vmWhy(vm *api.VirtualMachine) string {
	var why []string
	for _, c := range vm.Status.Conditions {
		if c.Status != api.ConditionTrue {
			why = append(why, fmt.Sprintf("%s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message))
		}
	}
	if len(why) == 0 {
		return "no condition says why"
	}
	return strings.Join(why, "; ")
}

// waitVMs waits, within timeout in all, until every VM in vms (as the
// verb patched them) has settled, printing each as it does.
func waitVMs(ctx context.Context, g *globals, vms []api.Object, timeout time.Duration) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, o := range vms {
		vm := o.(*api.VirtualMachine)
		if err := waitVM(ctx, g, c, vm); err != nil {
			return err
		}
	}
	return nil
}

func waitVM(ctx context.Context, g *globals, c *client.Client, patched *api.VirtualMachine) error {
	m := patched.Metadata
	want := phaseFor(patched.Spec.PowerState)
	last := patched
	var settled bool
	var failure error
	check := func(vm *api.VirtualMachine) {
		last = vm
		settled, failure = vmSettled(vm, m.Generation)
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	relist := func(ctx context.Context) (string, error) {
		o, err := c.Get(ctx, "VirtualMachine", m.Tenant, m.Name)
		if err != nil {
			return "", err
		}
		if check(o.(*api.VirtualMachine)); settled || failure != nil {
			stop()
		}
		return o.GetMetadata().ResourceVersion, nil
	}
	rv, err := relist(wctx)
	if err != nil {
		return err
	}
	if !settled && failure == nil {
		err = follow(wctx, c, "VirtualMachine", m.Tenant, client.ListOptions{FieldSelector: "metadata.name=" + m.Name}, rv,
			func(ev client.Event) {
				if ev.Type == "DELETED" {
					failure = fmt.Errorf("virtualmachine/%s was deleted", m.Name)
					stop()
					return
				}
				if check(ev.Object.(*api.VirtualMachine)); settled || failure != nil {
					stop()
				}
			}, relist)
		if err != nil {
			return err
		}
	}
	switch {
	case failure != nil:
		return failure
	case settled:
		fmt.Fprintf(g.out, "virtualmachine/%s is %s\n", m.Name, want)
		return nil
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		phase := last.Status.Phase
		if phase == "" {
			phase = "without a phase"
		}
		if last.Status.ObservedGeneration < m.Generation {
			phase += ", its agent not having seen the change yet"
		}
		return fmt.Errorf("timed out waiting for virtualmachine/%s to be %s: it is %s (%s)", m.Name, want, phase, vmWhy(last))
	}
	return ctx.Err()
}
