package cli

import (
	"time"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
)

func init() { commands = append(commands, newVMGroupCmd) }

// vmVerbs are the power verbs of `hearth vm`: each sets the VM's spec, and
// the host's agent does the rest.
var vmVerbs = []struct {
	use, short, long, done string
	spec                   func() map[string]any
}{
	{"start", "Start stopped VMs", "Set spec.powerState to Running: the host's agent starts the VM (or resumes\na paused one).",
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
		Short: "Start, stop, restart, pause and resume VMs",
		Long: `Change the power state of VMs. Each verb sets the VM's spec and returns;
the host's agent converges (watch it with ` + "`hearth get vm -w`" + `, and why with
` + "`hearth describe vm NAME`" + `).`,
	}
	for _, v := range vmVerbs {
		cmd.AddCommand(&cobra.Command{
			Use:               v.use + " NAME...",
			Short:             v.short,
			Long:              v.long,
			Example:           "  hearth vm " + v.use + " web-1 web-2 -t lab",
			Args:              cobra.MinimumNArgs(1),
			ValidArgsFunction: completeNames(g, "VirtualMachine"),
			RunE: func(cmd *cobra.Command, args []string) error {
				return patchEach(cmd.Context(), g, "VirtualMachine", args, map[string]any{"spec": v.spec()}, v.done)
			},
		})
	}
	return cmd
}
