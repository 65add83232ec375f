package cli

import (
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"hearth.dev/hearth/bench"
)

func init() { commands = append(commands, newBenchCmd) }

func newBenchCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Measure Hearth side by side with its peers on this machine"}
	var cfg bench.APIConfig
	var clients, cpuProfile string
	api := &cobra.Command{
		Use:   "api",
		Short: "API create throughput and latency vs raw etcd puts, and watch delivery latency",
		Long: `Starts a server with an embedded etcd in a temporary directory, then for
each concurrency level measures creates through the HTTPS API and raw etcd
puts of the same size against the same etcd, and finally the latency from a
write to its watch event, through the API and through etcd directly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, c := range strings.Split(clients, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(c))
				if err != nil || n < 1 {
					return err
				}
				cfg.Clients = append(cfg.Clients, n)
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			return bench.RunAPI(cmd.Context(), cfg, g.out)
		},
	}
	api.Flags().StringVar(&clients, "clients", "1,8,64", "concurrency levels, comma-separated")
	api.Flags().IntVar(&cfg.Ops, "ops", 3000, "operations per round")
	api.Flags().IntVar(&cfg.Rounds, "rounds", 3, "rounds per row, alternating raw and API; the median is reported")
	api.Flags().IntVar(&cfg.WatchOps, "watch-ops", 300, "writes to measure watch delivery on")
	api.Flags().BoolVar(&cfg.NoControllers, "no-controllers", false, "run the API without its controllers, to show their share")
	api.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file")
	api.Flags().StringVar(&cfg.DataDir, "data-dir", "", "server data directory (default a temporary one)")
	cmd.AddCommand(api)

	var vc bench.VMConfig
	vms := &cobra.Command{
		Use:   "vms",
		Short: "Create→Running latency of VMs on a running cluster (the sandbox)",
		Long: `Creates --count VMs at --rate per second through the API of the current
context (run it against the sandbox), watches them until every guest has
written to its console, and prints create→Running p50/p95 with the control
plane's, the agent's and the guest's shares. The VMs are deleted afterwards.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return bench.RunVMs(cmd.Context(), c, vc, g.out)
		},
	}
	vf := vms.Flags()
	vf.IntVar(&vc.Count, "count", 50, "VMs to create")
	vf.Float64Var(&vc.Rate, "rate", 5, "creates per second")
	vf.StringVar(&vc.Tenant, "bench-tenant", "bench", "tenant for the VMs (created if missing)")
	vf.StringVar(&vc.KernelImage, "kernel-image", "testguest-kernel", "Image of the guest's kernel (the sandbox makes testguest-kernel)")
	vf.StringVar(&vc.InitrdImage, "initrd-image", "testguest-initrd", "Image of the guest's initrd")
	vc.Memory = 128 << 20
	vf.DurationVar(&vc.Timeout, "timeout", 10*time.Minute, "give up after this long")
	vf.BoolVar(&vc.Keep, "keep", false, "leave the VMs in place")
	vf.BoolVar(&vc.Timeline, "timeline", false, "also print every VM's moments, in the order they were created")
	cmd.AddCommand(vms)
	cmd.AddCommand(newBenchDHCPCmd(g))
	cmd.AddCommand(newBenchPXECmd(g))
	cmd.AddCommand(newBenchScaleCmd(g))
	cmd.AddCommand(newBenchNetCmd(g))
	return cmd
}
