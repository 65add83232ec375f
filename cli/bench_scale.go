package cli

import (
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"hearth.dev/hearth/bench"
)

func newBenchScaleCmd(g *globals) *cobra.Command {
	var cfg bench.ScaleConfig
	var cpuProfile string
	cmd := &cobra.Command{
		Use:   "scale",
		Short: "Simulate --hosts hosts and --vms VMs on a real control plane and measure it",
		Long: `Starts a real control plane (one server, or three with --servers 3, as
child processes with embedded etcd, in a temporary directory) and --hosts
simulated hosts in this process: the real agent with a fake compute driver
(compute/computetest), each with its own data directory and console port,
joining with one reusable join token, heartbeating and taking VMs up to
Running. Then it measures:

  - heartbeats: etcd writes, server CPU and database growth with idle hosts;
  - placement: --vms VMs created while every host is cordoned, then the
    hosts uncordoned, timed until the last is bound (and until all run);
  - create→Running p50/p95 of --running-vms VMs created at --rate per second,
    by step (create, bind, to the agent, start), and the five slowest with
    the moments of each (answered, bound, the agent's first look, the
    states seen, started, first output) and its retries;
  - watch delivery: one VM bound to each host at its create, timed until
    that host's agent looks it up, and the server's part of it (from
    reading the change from etcd to the agent's connection flushed, its
    hearth_watch_delivery_seconds);
  - listing every VM, the servers' memory and etcd's size.

With --servers 3 --kill-leader the leading server is killed (SIGKILL)
once placement has begun: the run checks that placement resumes and that
no VM is bound twice or lost. Agents then talk to the other two servers.
create→Running begins only once another server leads (the report says
when): until then no VM is placed, and that wait is the failover's.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					f.Close()
					return err
				}
				// By phase, as --server-cpuprofile: NAME.1 is the
				// placement, NAME.2 what follows.
				phase := 0
				cfg.NextPhase = func() {
					pprof.StopCPUProfile()
					f.Close()
					phase++
					next, err := os.Create(fmt.Sprintf("%s.%d", cpuProfile, phase))
					if err == nil {
						err = pprof.StartCPUProfile(next)
					}
					if err != nil {
						fmt.Fprintf(g.errOut, "--cpuprofile: %v\n", err)
						return
					}
					f = next
				}
				defer func() {
					pprof.StopCPUProfile()
					f.Close()
				}()
			}
			cfg.Logf = func(format string, args ...any) {
				fmt.Fprintf(g.errOut, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
			}
			res, err := bench.RunScale(cmd.Context(), cfg, g.out)
			if err != nil {
				return err
			}
			if len(res.BoundTwice) > 0 || len(res.Lost) > 0 {
				return fmt.Errorf("%w: %d bound twice, %d lost", bench.ErrScaleFaults, len(res.BoundTwice), len(res.Lost))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Hosts, "hosts", 100, "simulated hosts")
	f.IntVar(&cfg.VMs, "vms", 1000, "VMs in the backlog placed at once")
	f.IntVar(&cfg.RunningVMs, "running-vms", 0, "VMs created at --rate for create→Running (default min(--vms, 2000))")
	f.Float64Var(&cfg.Rate, "rate", 200, "creates per second for create→Running and watch delivery")
	f.IntVar(&cfg.Servers, "servers", 1, "servers: 1, or 3 for an HA control plane")
	f.BoolVar(&cfg.KillLeader, "kill-leader", false, "kill the leading server once placement has begun (needs --servers 3)")
	f.DurationVar(&cfg.HeartbeatWindow, "heartbeat-window", 30*time.Second, "how long idle hosts' heartbeats are measured")
	f.IntVar(&cfg.VMsPerNetwork, "vms-per-network", 250, "VMs per network (each with one subnet: a /23, or as large as this needs; at most 65533)")
	f.DurationVar(&cfg.BootDelay, "boot-delay", 0, "how long a simulated guest takes to write its first console output")
	f.StringVar(&cfg.Dir, "dir", "", "work directory, kept afterwards (default a temporary one, removed)")
	f.StringVar(&cfg.HostsDir, "hosts-dir", "", "where the simulated hosts keep their files (default a temporary directory in /dev/shm, removed; DIR/hosts without /dev/shm)")
	f.DurationVar(&cfg.Timeout, "timeout", 30*time.Minute, "give up after this long")
	f.StringVar(&cfg.ServerCPUProfile, "server-cpuprofile", "", "write CPU profiles of each server to this directory: NAME.pprof until placement, NAME.pprof.1 of placement until the backlog runs, NAME.pprof.2 after")
	f.StringVar(&cfg.ServerMemProfile, "server-memprofile", "", "write each server's heap at the end of the measurements, every agent still connected, to NAME.heap.pprof in this directory")
	f.BoolVar(&cfg.ServerPlacingProfile, "server-memprofile-placing", false, "with --server-memprofile, also write each server's heap and goroutines at the placement's most goroutines, to NAME.heap.pprof.peak and NAME.heap.pprof.peak.goroutines (each costs the server a collection then)")
	f.StringVar(&cfg.ServerMemoryLimit, "server-memory-limit", "", "run each server with this GOMEMLIMIT (the Go runtime's soft memory limit, e.g. 900MiB)")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write CPU profiles of this process (the simulated hosts) to this file: NAME until placement, NAME.1 of placement until the backlog runs, NAME.2 after")
	return cmd
}
