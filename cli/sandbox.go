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
		Short: "Build a whole Hearth lab on this Linux machine (up, down, status, machine)",
		Long: `Build a whole Hearth lab on this machine, without hardware: network
namespaces as hosts on an underlay bridge, a server in the root namespace, an
agent in each host, and a provisioning network with the boot service, on
which QEMU machines network-boot like real ones. Its traffic never leaves the
namespaces it made.

Run a command on a host with: hearth sandbox exec-in PREFIX-hN -- COMMAND…`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newSandboxUpCmd(g), newSandboxDownCmd(g), newSandboxStatusCmd(g), newSandboxMachineCmd(g), newSandboxExecInCmd(), newSandboxServeInternetCmd())
	return cmd
}

func newSandboxUpCmd(g *globals) *cobra.Command {
	var cfg sandbox.Config
	var cidr, provCIDR, extCIDR, ext6CIDR, routed6CIDR string
	cmd := &cobra.Command{
		Use:   "up [--hosts N] [--dir DIR]",
		Short: "Build the sandbox and wait until every host is Ready",
		Long: `Build the sandbox: a namespace PREFIX-underlay with a bridge, a namespace
PREFIX-hN per host with eth0 at .(10+N) of the underlay, and a veth PREFIX-ctl
at .1 that lets this machine reach the hosts (and nothing more: no forwarding,
no NAT, no route but the underlay's). Then start hearth server on .1, an agent
in each host, build the test guest into DIR/testguest, and wait until every
Host is Ready. The test guest becomes the shared Images testguest-kernel and
testguest-initrd (file:// URLs into DIR/testguest, which the agents and the
boot service are started to allow with --allow-file-dir): VMs boot it with
boot: {from: kernel, kernel: {image: testguest-kernel}, initrd: {image:
testguest-initrd}}.

The provisioning network is a bridge prov0 in a namespace PREFIX-lan, where
"hearth sandbox machine add" puts machines. The boot service runs in
PREFIX-boot, with prov at .2 of --provisioning-cidr and underlay at .9 of the
underlay, to reach the server:

  hearth boot --server https://UNDERLAY.1:PORT --join-token-file DIR/boot/join-token
    --ca-file DIR/server/ca.crt --name boot --data-dir DIR/boot
    --interface prov --address PROV.2 --dhcp-mode full
    --pool-start PROV.100 --pool-end PROV.199 --http-listen PROV.2:8080
    --site SITE --allow-file-dir DIR/testguest

with its log in DIR/boot/boot.log. Up waits until it serves HTTP. If this
hearth has no boot command, up says so and goes on without it.

With --home-router the provisioning network gets a home router, as a real
LAN has: dnsmasq (/usr/sbin/dnsmasq, Debian's dnsmasq-base) in a namespace
PREFIX-router, at .1 of --provisioning-cidr, handing out .50-.99 with no PXE
options at all (leases in DIR/router/leases, log DIR/router/dnsmasq.log).
The boot service then runs with --dhcp-mode proxy and no pool: it answers
only PXE clients, with boot files, on ports 67 and 4011.

With --shared-storage the hosts get shared storage, as a lab with a Ceph
cluster and a NAS has: a namespace PREFIX-storage at .8 of the underlay
running a single-node Ceph cluster (monitor, manager, one OSD on memstore,
pool hearth of size 1; from Debian's ceph packages) and an NFS server
(NFS-Ganesha, export /export in DIR/storage/nfs/export), and the
StoragePools ceph (rbd, user hearth, key in the Secret ceph-keyring) and nfs.
Ceph starts in the background while the agents start (15-30 s).

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
			if cfg.Provisioning, err = netip.ParsePrefix(provCIDR); err != nil {
				return fmt.Errorf("--provisioning-cidr %q: %w", provCIDR, err)
			}
			if cfg.External, err = netip.ParsePrefix(extCIDR); err != nil {
				return fmt.Errorf("--external-cidr %q: %w", extCIDR, err)
			}
			if cfg.External6, err = netip.ParsePrefix(ext6CIDR); err != nil {
				return fmt.Errorf("--external6-cidr %q: %w", ext6CIDR, err)
			}
			if cfg.Routed6, err = netip.ParsePrefix(routed6CIDR); err != nil {
				return fmt.Errorf("--routed6-cidr %q: %w", routed6CIDR, err)
			}
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
	f.StringVar(&provCIDR, "provisioning-cidr", sandbox.DefaultProvisioningCIDR, "the network machines network-boot on (the boot service gets .2, its DHCP pool .100-.199)")
	f.StringVar(&extCIDR, "external-cidr", sandbox.DefaultExternalCIDR, "the sandbox's internet (namespace PREFIX-internet, .1, HTTP on port 80), the ExternalNetwork internet")
	f.StringVar(&ext6CIDR, "external6-cidr", sandbox.DefaultExternal6CIDR, "the internet's IPv6 link (a /64; the internet is ::1), the ExternalNetwork internet's spec.ipv6")
	f.StringVar(&routed6CIDR, "routed6-cidr", sandbox.DefaultRouted6CIDR, "the IPv6 range the internet routes on-link to the hosts: prefixes the ExternalNetwork delegates to tenants inside it are reachable from PREFIX-internet")
	f.BoolVar(&cfg.BootService, "boot-service", true, "start hearth boot on the provisioning network")
	f.BoolVar(&cfg.HomeRouter, "home-router", false, "start dnsmasq as the provisioning network's home router (PREFIX-router, .1, DHCP .50-.99, no PXE options) and run the boot service in proxy DHCP mode beside it")
	f.StringVar(&cfg.Prefix, "prefix", sandbox.DefaultPrefix, "start of the names of the namespaces and links it makes (another sandbox needs another prefix and CIDR)")
	f.IntVar(&cfg.Port, "port", sandbox.DefaultPort, "the server's port on the underlay's .1")
	f.StringVar(&cfg.Site, "site", sandbox.DefaultSite, "the site every host joins")
	f.BoolVar(&cfg.TestGuest, "test-guest", true, "build the test guest into DIR/testguest and make it the shared Images testguest-kernel and testguest-initrd, so VMs can boot")
	f.BoolVar(&cfg.DebianImage, "debian-image", false, "build a Debian 12 image with cloud-init (minutes and ~150 MB from the Debian mirror the first time; cached) into DIR/debian and make it the shared Images debian-kernel, debian-initrd and debian-disk (examples/sandbox/cloudinit.yaml boots it)")
	f.BoolVar(&cfg.SharedStorage, "shared-storage", false, "start a single-node Ceph cluster and an NFS server in PREFIX-storage (the underlay's .8), which every host reaches, and make the StoragePools ceph (rbd) and nfs (examples/sandbox/shared-storage.yaml uses them)")
	f.DurationVar(&cfg.ReadyTimeout, "timeout", sandbox.DefaultReadyTimeout, "how long to wait for the server and each host")
	f.IntVar(&cfg.OwnerPID, "owner-pid", 0, "the process this sandbox belongs to (a test): once it has exited without taking the sandbox down, the next sandbox up on this machine removes it. 0: the sandbox lives until sandbox down")
	f.StringVar(&cfg.OwnerDir, "owner-dir", "", "with --owner-pid: a directory the owner made to hold DIR (DIR or one above it); removing the sandbox of an exited owner also removes the directories from DIR up to it that are left empty")
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
PREFIX-lan, PREFIX-boot, PREFIX-router, PREFIX-storage, PREFIX-ctl). The boot
service, the home router, the shared storage and the machines go with it. Running it again does nothing.`,
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

func newSandboxMachineCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "machine",
		Short: "Add, remove and list QEMU machines that network-boot on the provisioning network",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newSandboxMachineAddCmd(g), newSandboxMachineRmCmd(g), newSandboxMachineRestartCmd(g), newSandboxMachineListCmd(g))
	return cmd
}

func newSandboxMachineAddCmd(g *globals) *cobra.Command {
	var cfg sandbox.MachineConfig
	cmd := &cobra.Command{
		Use:   "add NAME [--uefi] [--disk 8G] [--memory 512M] [--mac MAC] [--dir DIR]",
		Short: "Power on a new machine on the provisioning network; it boots from the network",
		Long: `Add a machine to the sandbox's provisioning network and power it on, as if
a new server were plugged into the lab: QEMU with an empty disk
(DIR/machines/NAME/disk.qcow2) and one NIC on the bridge prov0, set to boot
from the network first and from its disk second. It runs in the namespace
PREFIX-lan, detached; its serial console is logged to
DIR/machines/NAME/console.log.

BIOS machines boot through QEMU's iPXE option ROM, which fetches its script
over HTTP at once. --uefi machines run OVMF (/usr/share/OVMF/OVMF_CODE_4M.fd,
with a copy of its variable store) and its own PXE client, which fetches
iPXE over TFTP first, as real UEFI firmware does. The MAC is
52:54:00 and three bytes of a hash of NAME unless --mac is given, so a machine
added again under its name is the same machine to the boot service.

Before it is powered on, the sandbox's administrator creates its Machine in
the API: named NAME, with its MAC, labelled hearth.dev/sandbox=machine (what
examples/sandbox/machines.yaml's profile selects) and not approved, so
"hearth describe machine NAME" follows it from its first DHCP packet. A
Machine of that name and MAC made beforehand is kept (and labelled).`,
		Example: `  hearth sandbox machine add node1
  hearth sandbox machine add node2 --uefi --disk 20G --memory 1G
  tail -f /var/lib/hearth-sandbox/machines/node1/console.log`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Name = args[0]
			m, err := sandbox.AddMachine(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.out, "machine %s (%s, %s) is on, pid %d\nconsole: %s\nfollow it with: hearth describe machine %s\n", m.Name, m.MAC, m.Firmware, m.QEMU.PID, m.Console(), m.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Dir, "dir", sandbox.DefaultDir, "the sandbox's directory")
	f.BoolVar(&cfg.UEFI, "uefi", false, "boot UEFI firmware (OVMF) instead of BIOS (SeaBIOS)")
	f.StringVar(&cfg.DiskSize, "disk", sandbox.DefaultMachineDisk, "the size of the machine's empty disk")
	f.StringVar(&cfg.Memory, "memory", sandbox.DefaultMachineMemory, "the machine's memory")
	f.StringVar(&cfg.MAC, "mac", "", "the NIC's MAC (default: derived from NAME)")
	return cmd
}

func newSandboxMachineRmCmd(g *globals) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:     "rm NAME [--dir DIR]",
		Aliases: []string{"remove", "delete"},
		Short:   "Power a machine off and remove it: its QEMU, tap, files and Machine object",
		Long: `Power the machine off and remove it from the sandbox, as if it were carried
out of the lab: stop its QEMU, delete its tap and DIR/machines/NAME, and
delete its Machine objects from the API (every Machine with its MAC), which
would otherwise stay in their last phase for ever. To boot it again with its
disk, use "hearth sandbox machine restart NAME" instead.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := sandbox.RemoveMachine(cmd.Context(), dir, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.errOut, "machine %s removed\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", sandbox.DefaultDir, "the sandbox's directory")
	return cmd
}

func newSandboxMachineRestartCmd(g *globals) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:     "restart NAME [--dir DIR]",
		Aliases: []string{"reset", "reboot"},
		Short:   "Power-cycle a machine: it boots again from the network, then its disk",
		Long: `Power-cycle the machine, as its reset button does: stop its QEMU and start it
again on the same disk and tap. It network-boots again, so the boot service
decides what it boots: its profile, or, once an install profile's installer
reported, its disk. Its console log goes on in the same file.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := sandbox.RestartMachine(cmd.Context(), dir, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(g.out, "machine %s restarted, pid %d\nconsole: %s\n", m.Name, m.QEMU.PID, m.Console())
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", sandbox.DefaultDir, "the sandbox's directory")
	return cmd
}

func newSandboxMachineListCmd(g *globals) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:     "list [--dir DIR]",
		Aliases: []string{"ls"},
		Short:   "List the sandbox's machines with their console logs",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return sandbox.PrintMachines(g.out, dir)
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

func newSandboxServeInternetCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "serve-internet ADDR:PORT",
		Short:  "Serve the sandbox internet's web site (inside PREFIX-internet)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return sandbox.ServeInternet(cmd.Context(), args[0])
		},
	}
}
