package cli

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"

	"hearth.dev/hearth/sandbox"
)

func init() { commands = append(commands, newSandboxCmd) }

func newSandboxCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sandbox",
		Short: "Build a whole Hearth lab on this Linux machine (up, down, status)",
		Long: `Build a whole Hearth lab on this machine, without hardware: network
namespaces as hosts on an underlay bridge, a server in the root namespace and
an agent in each host. Its traffic never leaves the namespaces it made.

Run a command on a host with: hearth sandbox exec-in PREFIX-hN -- COMMAND…`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newSandboxUpCmd(g), newSandboxDownCmd(g), newSandboxStatusCmd(g), newSandboxExecInCmd())
	return cmd
}

func newSandboxUpCmd(g *globals) *cobra.Command {
	var cfg sandbox.Config
	var cidr string
	cmd := &cobra.Command{
		Use:   "up [--hosts N] [--dir DIR]",
		Short: "Build the sandbox and wait until every host is Ready",
		Long: `Build the sandbox: a namespace PREFIX-underlay with a bridge, a namespace
PREFIX-hN per host with eth0 at .(10+N) of the underlay, and a veth PREFIX-ctl
at .1 that lets this machine reach the hosts (and nothing more: no forwarding,
no NAT, no route but the underlay's). Then start hearth server on .1, an agent
in each host, build the test guest into DIR/testguest, and wait until every
Host is Ready.

Progress goes to stderr. Stdout is a summary as shell comments and, last, the
line that points the CLI at the sandbox, so this works:

  eval "$(hearth sandbox up)"`,
		Example: `  hearth sandbox up --hosts 3
  export HEARTH_CONFIG=/var/lib/hearth-sandbox/server/admin.conf
  hearth get hosts`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := netip.ParsePrefix(cidr)
			if err != nil {
				return fmt.Errorf("--underlay-cidr %q: %w", cidr, err)
			}
			cfg.Underlay = p
			cfg.Progress = g.errOut
			s, err := sandbox.Up(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			s.PrintSummary(g.out)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Hosts, "hosts", 2, "how many hosts")
	f.StringVar(&cfg.Dir, "dir", sandbox.DefaultDir, "where the server's and agents' data, the logs and sandbox.json live")
	f.StringVar(&cidr, "underlay-cidr", sandbox.DefaultUnderlayCIDR, "the hosts' network (this machine gets .1, host N .(10+N))")
	f.StringVar(&cfg.Prefix, "prefix", sandbox.DefaultPrefix, "start of the names of the namespaces and links it makes (another sandbox needs another prefix and CIDR)")
	f.IntVar(&cfg.Port, "port", sandbox.DefaultPort, "the server's port on the underlay's .1")
	f.StringVar(&cfg.Site, "site", sandbox.DefaultSite, "the site every host joins")
	f.BoolVar(&cfg.TestGuest, "test-guest", true, "build the test guest into DIR/testguest so VMs can boot")
	f.DurationVar(&cfg.ReadyTimeout, "timeout", sandbox.DefaultReadyTimeout, "how long to wait for the server and each host")
	return cmd
}

func newSandboxDownCmd(g *globals) *cobra.Command {
	var cfg sandbox.Config
	cmd := &cobra.Command{
		Use:   "down [--dir DIR]",
		Short: "Remove the sandbox: its processes (VMs too), namespaces, links and files",
		Long: `Remove the sandbox in DIR: stop the agents and every process inside its
namespaces (the VMs too), then the server, delete the namespaces and the
veth, and remove the files it made under DIR. It follows DIR/sandbox.json
and, if that is missing, the naming scheme (PREFIX-underlay, PREFIX-hN,
PREFIX-ctl). Running it again does nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Progress = g.errOut
			if err := sandbox.Down(cmd.Context(), cfg); err != nil {
				return fmt.Errorf("sandbox down: %w", err)
			}
			fmt.Fprintf(g.errOut, "sandbox in %s removed\n", cfg.Dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Dir, "dir", sandbox.DefaultDir, "the sandbox's directory")
	f.StringVar(&cfg.Prefix, "prefix", sandbox.DefaultPrefix, "names to look for when DIR/sandbox.json is missing")
	return cmd
}

func newSandboxStatusCmd(g *globals) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "status [--dir DIR]",
		Short: "Show what of the sandbox is up",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return sandbox.PrintStatus(cmd.Context(), g.out, dir)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", sandbox.DefaultDir, "the sandbox's directory")
	return cmd
}

// newSandboxExecInCmd is how the sandbox starts processes inside a
// namespace: see sandbox.ExecIn.
func newSandboxExecInCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "exec-in NETNS -- COMMAND [ARG…]",
		Short:  "Run a command inside a sandbox network namespace",
		Hidden: true,
		// Everything after NETNS belongs to the command.
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
				return cmd.Help()
			}
			if len(args) < 2 {
				return errors.New("usage: hearth sandbox exec-in NETNS -- COMMAND [ARG…]")
			}
			ns, argv := args[0], args[1:]
			if argv[0] == "--" {
				argv = argv[1:]
			}
			return sandbox.ExecIn(ns, argv)
		},
	}
}
