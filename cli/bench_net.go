package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"hearth.dev/hearth/bench"
	"hearth.dev/hearth/sandbox"
)

func newBenchNetCmd(g *globals) *cobra.Command {
	cfg := bench.NetConfig{Tenant: "bench-net", CIDR: "10.77.0.0/24"}
	cmd := &cobra.Command{
		Use:   "net",
		Short: "Tenant network convergence on the sandbox: VM create→reached from another host, FloatingIP create→reached from the internet",
		Long: `Runs against the sandbox (hearth sandbox up --hosts 2; the current context
must be its admin config, and this must run as root on the sandbox's
machine). Each run makes a new network with one subnet routed to the
sandbox's internet and a peer VM on host 2, then creates a VM on host 1,
which does not carry the network yet, and times until the peer reaches it
(ARP and ping); then creates a floating IP pointed at the VM and times until
the internet namespace reaches the VM through it (ping). Everything the run
made is deleted before the next.

The VMs are Stopped: the data plane makes their taps all the same, and this
process attaches to each tap as QEMU would and answers ARP and ping in the
guest's place, so the figures are the control plane's and the data plane's
share, without a TCG guest's boot.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			cfg.Logf = func(format string, args ...any) {
				fmt.Fprintf(g.errOut, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
			}
			_, err = bench.RunNet(cmd.Context(), c, cfg, g.out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.SandboxDir, "sandbox-dir", sandbox.DefaultDir, "the sandbox's directory")
	f.IntVar(&cfg.Runs, "runs", 20, "runs")
	f.StringVar(&cfg.Tenant, "bench-tenant", cfg.Tenant, "tenant to work in (created if missing)")
	f.StringVar(&cfg.CIDR, "cidr", cfg.CIDR, "each run's subnet")
	f.DurationVar(&cfg.Interval, "interval", 5*time.Millisecond, "between pings (the resolution of the figures)")
	f.DurationVar(&cfg.Timeout, "timeout", time.Minute, "give up on a run after this long")
	return cmd
}
