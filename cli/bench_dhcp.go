package cli

import (
	"strings"
	"time"

	"github.com/spf13/cobra"

	"hearth.dev/hearth/bench"
)

func newBenchDHCPCmd(g *globals) *cobra.Command {
	var cfg bench.DHCPConfig
	var servers string
	cmd := &cobra.Command{
		Use:   "dhcp",
		Short: "DORA exchanges per second with perfdhcp against Hearth, dnsmasq and Kea",
		Long: `Builds two network namespaces joined by a veth (nothing touches this
machine's interfaces), then runs each DHCP server in turn on the same
address and pool in one namespace — Hearth's own (in this process), dnsmasq
and kea-dhcp4 — and perfdhcp in the other, and prints its results side by
side with the exact perfdhcp command line. Needs root, and the packages
kea-admin (perfdhcp), dnsmasq-base and kea-dhcp4-server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, s := range strings.Split(servers, ",") {
				if s = strings.TrimSpace(s); s != "" {
					cfg.Servers = append(cfg.Servers, s)
				}
			}
			return bench.RunDHCP(cmd.Context(), cfg, g.out)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Rate, "rate", 10000, "DORA exchanges perfdhcp starts per second (-r)")
	f.IntVar(&cfg.Clients, "clients", 1000, "different clients perfdhcp simulates (-R)")
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "run against each server this long (-p, whole seconds)")
	f.StringVar(&servers, "servers", strings.Join(bench.DHCPServers, ","), "servers to measure, comma-separated")
	return cmd
}
