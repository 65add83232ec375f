package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/power"
)

// `hearth machine power` hangs under `hearth machine` (cli/machine.go).
func init() { machineSubcommands = append(machineSubcommands, newMachinePowerCmd) }

type machinePowerOptions struct {
	networkBoot bool
	iface       string
	timeout     time.Duration
}

// machinePowerAction is one of on, off and cycle.
type machinePowerAction struct {
	verb   string
	short  string
	reason string // of the Event recorded on the machine
	act    func(power.Driver) func(context.Context) error
}

var machinePowerActions = []machinePowerAction{
	{"on", "Turn a machine on", "PowerOn", func(d power.Driver) func(context.Context) error { return d.On }},
	{"off", "Cut a machine's power at once (no clean shutdown)", "PowerOff", func(d power.Driver) func(context.Context) error { return d.Off }},
	{"cycle", "Turn a machine off and on again (or just on, if it is off)", "PowerCycle", func(d power.Driver) func(context.Context) error { return d.Cycle }},
}

// newMachinePowerCmd is `hearth machine power`. The CLI talks to the
// machine's BMC, plug or network itself, with the settings in the
// machine's spec.power, so it must run where it can reach them.
func newMachinePowerCmd(g *globals) *cobra.Command {
	var o machinePowerOptions
	cmd := &cobra.Command{
		Use:   "power on|off|cycle|status NAME",
		Short: "Switch a bare-metal machine on or off, or read its power state",
		Long: `Switch a bare-metal machine's power with the driver its spec.power names:
Wake-on-LAN (on only), IPMI (through ipmitool), Redfish, or a webhook (smart
plugs). This command reaches the BMC, plug or network itself, so run it
where it can. Each action is recorded as an event on the machine
(hearth events --for machine/NAME).`,
		Example: `  hearth machine power status node1
  hearth machine power on node1
  hearth machine power cycle node1 --network-boot   # reinstall from the network
  hearth machine power on node1 --interface br-prov # Wake-on-LAN from this interface`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&o.iface, "interface", "", "network interface Wake-on-LAN packets leave from (default: the routing table's choice)")
	pf.DurationVar(&o.timeout, "timeout", time.Minute, "how long to wait for the BMC or plug")

	for _, a := range machinePowerActions {
		sub := &cobra.Command{
			Use:               a.verb + " NAME",
			Short:             a.short,
			Args:              cobra.ExactArgs(1),
			ValidArgsFunction: completeMachineName(g),
			RunE: func(cmd *cobra.Command, args []string) error {
				return runMachinePower(cmd.Context(), g, o, a, args[0])
			},
		}
		if a.verb != "off" {
			sub.Flags().BoolVar(&o.networkBoot, "network-boot", false, "boot from the network this once (IPMI and Redfish only)")
		}
		cmd.AddCommand(sub)
	}
	cmd.AddCommand(&cobra.Command{
		Use:               "status NAME",
		Short:             "Read whether a machine is on",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeMachineName(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runMachinePowerStatus(cmd.Context(), g, o, args[0])
		},
	})
	return cmd
}

func completeMachineName(g *globals) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return g.nameCompletions(cmd.Context(), "Machine", toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// machinePowerDriver reads the machine and builds its power driver.
func machinePowerDriver(ctx context.Context, g *globals, o machinePowerOptions, name string) (*client.Client, *api.Machine, power.Driver, error) {
	c, err := g.client()
	if err != nil {
		return nil, nil, nil, err
	}
	obj, err := c.Get(ctx, "Machine", "", name)
	if err != nil {
		return nil, nil, nil, err
	}
	m := obj.(*api.Machine)
	// The BMC password and webhook tokens are read from their Secrets
	// with the caller's own credential, here, and never stored.
	resolved, err := power.ResolveSecrets(ctx, m, func(ctx context.Context, name string) (*api.Secret, error) {
		s, err := c.Get(ctx, "Secret", "", name)
		if err != nil {
			return nil, err
		}
		return s.(*api.Secret), nil
	})
	if err != nil {
		return nil, nil, nil, err
	}
	d, err := power.For(resolved, power.Options{Interface: o.iface})
	if err != nil {
		return nil, nil, nil, err
	}
	return c, m, d, nil
}

func runMachinePower(ctx context.Context, g *globals, o machinePowerOptions, a machinePowerAction, name string) error {
	c, m, d, err := machinePowerDriver(ctx, g, o, name)
	if err != nil {
		return err
	}
	msg := a.reason + " requested by " + whoAmIName(ctx, c)
	if o.networkBoot {
		msg += ", booting from the network once"
	}
	actx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if o.networkBoot {
		err = d.BootOnceFromNetwork(actx)
	}
	if err == nil {
		err = a.act(d)(actx)
	}
	// The event is written with ctx, not actx: a BMC that used up the
	// timeout must still leave its failure on the machine's timeline.
	rec := client.NewRecorder(c, "cli")
	if errors.Is(err, power.ErrUnsupported) {
		// Nothing was tried, so nothing happened to the machine.
		return err
	}
	if err != nil {
		rec.Eventf(ctx, m, api.EventWarning, a.reason+"Failed", "%s: %v", msg, err)
		return err
	}
	rec.Eventf(ctx, m, api.EventNormal, a.reason, "%s", msg)
	what := "power " + a.verb
	if o.networkBoot {
		what += " with a network boot"
	}
	fmt.Fprintf(g.out, "machine/%s: %s done (%v)\n", name, what, d)
	return nil
}

func runMachinePowerStatus(ctx context.Context, g *globals, o machinePowerOptions, name string) error {
	_, _, d, err := machinePowerDriver(ctx, g, o, name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	s, err := d.Status(ctx)
	if errors.Is(err, power.ErrUnsupported) {
		fmt.Fprintf(g.out, "machine/%s: %s (%v cannot read the power state)\n", name, s, d)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(g.out, "machine/%s: %s (%v)\n", name, s, d)
	return nil
}

// whoAmIName is the caller's name as the server knows it, for events.
func whoAmIName(ctx context.Context, c *client.Client) string {
	if who, err := c.WhoAmI(ctx); err == nil {
		if n, _ := who["name"].(string); n != "" {
			return n
		}
	}
	return "an unknown user"
}
