package cli

import (
	"time"

	"github.com/spf13/cobra"

	"hearth.dev/hearth/bench"
	"hearth.dev/hearth/sandbox"
)

func newBenchPXECmd(g *globals) *cobra.Command {
	var cfg bench.PXEConfig
	cmd := &cobra.Command{
		Use:   "pxe",
		Short: "Time for N sandbox machines network-booting at once to all reach userspace",
		Long: `Applies the stateless, auto-approved MachineProfile ` + bench.PXEProfile + ` that boots the
sandbox's test guest, powers on one machine alone and then --machines
machines at once on the sandbox's provisioning network (bench-solo,
bench-01, ...), waits until every guest's userspace has reported back
(phase Ready), and prints power-on → first DHCP, → boot.ipxe served and →
report taken, p50 and max, and the total until all of them reported. Run
it as root against the sandbox (HEARTH_CONFIG from hearth sandbox up, and
its --dir). The machines and the profile are removed afterwards.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return bench.RunPXE(cmd.Context(), c, cfg, g.out)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Machines, "machines", 10, "machines to boot at once")
	f.BoolVar(&cfg.UEFI, "uefi", false, "boot OVMF (PXE, ipxe.efi over TFTP) instead of SeaBIOS with iPXE")
	f.StringVar(&cfg.Dir, "dir", sandbox.DefaultDir, "the sandbox's directory")
	f.StringVar(&cfg.Memory, "memory", "", "each machine's memory (default "+sandbox.DefaultMachineMemory+")")
	f.DurationVar(&cfg.Timeout, "timeout", 10*time.Minute, "give up on a run after this long")
	f.BoolVar(&cfg.NoSolo, "no-solo", false, "skip the one-machine-alone comparison")
	return cmd
}
