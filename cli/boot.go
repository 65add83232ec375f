package cli

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"hearth.dev/hearth/boot"
	"hearth.dev/hearth/dhcp"
)

func init() { commands = append(commands, newBootCmd) }

func newBootCmd(g *globals) *cobra.Command {
	var cfg boot.Config
	var jt joinTokenFlags
	var address, mode, poolStart, poolEnd, router, dns string
	cmd := &cobra.Command{
		Use:   "boot",
		Short: "Run the network boot service of a provisioning network (DHCP, TFTP, HTTP)",
		Long: `Run the network boot service of one provisioning network.

DHCP in full mode hands out addresses from --pool-start..--pool-end and
tells network-booting machines what to boot; in proxy mode it runs beside
the network's own DHCP server (a home router) and answers only machines
that network-boot; off leaves DHCP to others. TFTP serves the iPXE binaries
(BIOS: undionly.kpxe; UEFI: ipxe.efi), and HTTP each machine's iPXE script,
rendered files, boot artifacts and report callback.

Machines that network-boot for the first time become Machines (Discovered);
approve them with hearth machine approve NAME, or let a profile approve them.
Only network-boot clients are discovered (PXE firmware and iPXE, by their
DHCP options; over HTTP, iPXE asking for its own MAC), at a bounded rate,
and at most --max-discovered wait in Discovered at once; the server forgets
those never approved and not seen for its --discovered-machine-ttl.

A machine's boot files, kernel and initrd are served only to the address
the machine got by DHCP, within the boot its script started, and its report
token works once. See docs/BOOT-TEMPLATES.md.

The first start joins with a join token, like an agent (give it in a
root-only --join-token-file, or HEARTH_JOIN_TOKEN), and gets a boot
service's credential: it discovers Machines and records what it sees of
them, and acts as no Host.

Profiles' kernels and initrds are fetched over http(s) with no credential,
never from this machine or link-local addresses, and checked against their
checksums; file:///path ones are served only from a directory given with
--allow-file-dir (none by default), after resolving ".." and symbolic links.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if cfg.JoinToken, cfg.JoinTokenFile, err = jt.resolve(g.errOut); err != nil {
				return err
			}
			parse := func(flag, s string, into *netip.Addr) {
				if s == "" || err != nil {
					return
				}
				if *into, err = netip.ParseAddr(s); err != nil {
					err = fmt.Errorf("--%s: %q is not an IP address", flag, s)
				}
			}
			if address == "" {
				return errors.New("--address is required: this service's IP on the provisioning network")
			}
			parse("address", address, &cfg.Address)
			parse("pool-start", poolStart, &cfg.PoolStart)
			parse("pool-end", poolEnd, &cfg.PoolEnd)
			parse("router", router, &cfg.Router)
			for _, d := range strings.Split(dns, ",") {
				var a netip.Addr
				parse("dns", strings.TrimSpace(d), &a)
				if a.IsValid() {
					cfg.DNS = append(cfg.DNS, a)
				}
			}
			if err != nil {
				return err
			}
			switch dhcp.Mode(mode) {
			case dhcp.ModeFull, dhcp.ModeProxy, dhcp.ModeOff:
				cfg.DHCPMode = dhcp.Mode(mode)
			default:
				return fmt.Errorf("--dhcp-mode %q: want full, proxy or off", mode)
			}
			if cfg.DHCPMode == dhcp.ModeFull && (!cfg.PoolStart.IsValid() || !cfg.PoolEnd.IsValid()) {
				return fmt.Errorf("--dhcp-mode full needs --pool-start and --pool-end")
			}
			if cfg.DHCPMode != dhcp.ModeOff && cfg.Interface == "" {
				return fmt.Errorf("--dhcp-mode %s needs --interface", cfg.DHCPMode)
			}
			return joinFlagsError(boot.Run(cmd.Context(), cfg))
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Server, "server", "", "API server URL (first start)")
	jt.add(f)
	f.StringVar(&cfg.CAFile, "ca-file", "", "the cluster CA to trust on first start")
	f.StringVar(&cfg.Name, "name", "boot", "name of this service's credential (its events' source is boot/NAME)")
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/hearth-boot", "credential, leases and artifact cache")
	f.StringVar(&cfg.Interface, "interface", "", "the provisioning network's interface")
	f.StringVar(&address, "address", "", "this service's IP on that interface")
	f.StringVar(&mode, "dhcp-mode", "full", "full, proxy or off")
	f.StringVar(&poolStart, "pool-start", "", "first address of the DHCP pool (full mode)")
	f.StringVar(&poolEnd, "pool-end", "", "last address of the DHCP pool (full mode)")
	f.StringVar(&router, "router", "", "default gateway handed out (full mode)")
	f.StringVar(&dns, "dns", "", "DNS servers handed out, comma-separated (full mode)")
	f.StringVar(&cfg.HTTPListen, "http-listen", "", "HTTP address (default ADDRESS:8080)")
	f.StringVar(&cfg.TFTPListen, "tftp-listen", "", "TFTP address (default ADDRESS:69)")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", "", "address to serve Prometheus metrics on over plain HTTP (GET /metrics); none when empty. Keep it off the provisioning network")
	addLimitFlags(f, "http-", &cfg.HTTPLimits)
	f.StringVar(&cfg.IPXEDir, "ipxe-dir", "/usr/lib/ipxe", "where the iPXE binaries are (Debian's ipxe package)")
	f.StringVar(&cfg.UEFIBinary, "uefi-binary", "ipxe.efi", "iPXE binary for x86-64 UEFI: ipxe.efi or snponly.efi")
	f.StringVar(&cfg.Site, "site", "", "site that discovered machines join")
	f.IntVar(&cfg.MaxDiscovered, "max-discovered", boot.DefaultMaxDiscovered, "most machines waiting in phase Discovered; beyond it no new MAC is discovered (-1: no cap)")
	f.StringArrayVar(&cfg.AllowFileDirs, "allow-file-dir", nil, "a directory MachineProfiles may name kernels and initrds in with file:// URLs (repeatable; none by default)")
	cmd.AddCommand(newBootMediaCmd(g))
	return cmd
}
