package cli

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/pki"
	"hearth.dev/hearth/server"
	"hearth.dev/hearth/server/etcd"
)

func init() { commands = append(commands, newServerCmd) }

func newServerCmd(g *globals) *cobra.Command {
	var cfg server.Config
	var endpoints, sans, clientURL, maxUpload, reserve, cpuProfile, memProfile string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane: API, embedded etcd and controllers",
		Long: `Run the control plane. On first start it creates a CA (kept in
DATA-DIR/pki), a serving certificate, a "default" tenant, an "admin" user,
and writes an admin client config to DATA-DIR/admin.conf (use it with
--config or HEARTH_CONFIG).

By default etcd is embedded, alone, in DATA-DIR/etcd. It has no TCP client
port: etcd clients such as etcdctl reach it only through the unix socket
DATA-DIR/etcd.sock (mode 0600). Members talk to each other over mutual TLS
with certificates from the cluster CA.

For HA run three servers with --etcd-name, an https --etcd-peer-url on the
server's own address, the same --etcd-initial-cluster, and the same CA
(make it once with "hearth server ca create DIR", give each server
--ca-cert and --ca-key); or point every server at an external cluster with
--etcd-endpoints (and --etcd-cafile, --etcd-certfile, --etcd-keyfile for
one that requires TLS).

Images uploaded through the API (hearth image upload) are kept in
DATA-DIR/images, beside etcd: one upload may be at most --max-upload-size,
a tenant's uploads together at most its quota's imageStorage, and no
upload may leave less than --upload-reserve free on that file system, so
etcd never finds its disk full.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("etcd-client-url") {
				return fmt.Errorf("--etcd-client-url %s: the embedded etcd no longer has a TCP client port; it serves clients only on %s, which only this server's user can use (etcdctl --endpoints unix://%[2]s): remove the flag", clientURL, etcd.SocketPath(cfg.DataDir))
			}
			for _, b := range []struct {
				flag, value string
				into        *int64
			}{{"max-upload-size", maxUpload, &cfg.MaxUploadSize}, {"upload-reserve", reserve, &cfg.UploadReserve}} {
				n, err := api.ParseBytes(b.value)
				if err != nil {
					return fmt.Errorf("--%s: %w", b.flag, err)
				}
				*b.into = int64(n)
			}
			cfg.Etcd.Endpoints = server.ParseList(endpoints)
			cfg.TLSSANs = server.ParseList(sans)
			var nextCPUPhase func()
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					f.Close()
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				var stop func()
				nextCPUPhase, stop = cpuPhases(cpuProfile, f)
				defer stop()
			}
			s, err := server.Start(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.errOut, "hearth server listening on %s\nadmin config: %s\n", s.URL(), filepath.Join(cfg.DataDir, "admin.conf"))
			// Once the heap is written at a mark, the write at exit
			// would replace it with the heap after the clients left
			// (hearth bench scale stops its simulated hosts before
			// its servers): it is written at exit only without one.
			var heapWritten atomic.Bool
			if memProfile != "" || nextCPUPhase != nil {
				// SIGUSR1 marks a point of a measurement: it starts the
				// CPU profile's next phase (hearth bench scale
				// --server-cpuprofile) and writes the heap now, while
				// every client is still connected (--server-memprofile),
				// not after they left.
				usr1 := make(chan os.Signal, 1)
				signal.Notify(usr1, syscall.SIGUSR1)
				defer signal.Stop(usr1)
				go func() {
					for range usr1 {
						if nextCPUPhase != nil {
							nextCPUPhase()
						}
						if memProfile == "" {
							continue
						}
						if err := writeHeapProfile(memProfile); err != nil {
							fmt.Fprintf(g.errOut, "--memprofile: %v\n", err)
						} else {
							heapWritten.Store(true)
						}
					}
				}()
			}
			if memProfile != "" {
				// SIGUSR2 writes the heap and the goroutines (counted by
				// where they wait) to FILE.peak and FILE.peak.goroutines
				// without touching the CPU profile's phases: hearth bench
				// scale --server-memprofile-placing sends it as a phase
				// reaches its most goroutines.
				usr2 := make(chan os.Signal, 1)
				signal.Notify(usr2, syscall.SIGUSR2)
				defer signal.Stop(usr2)
				go func() {
					for range usr2 {
						if err := writePeakProfiles(memProfile + ".peak"); err != nil {
							fmt.Fprintf(g.errOut, "--memprofile: %v\n", err)
						}
					}
				}()
			}
			<-cmd.Context().Done()
			if memProfile != "" && !heapWritten.Load() {
				// The heap as the server held it, before stopping frees it.
				if err := writeHeapProfile(memProfile); err != nil {
					fmt.Fprintf(g.errOut, "--memprofile: %v\n", err)
				}
			}
			return s.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", server.DefaultDataDir(), "where etcd data, certificates and admin.conf live")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8443", "address of the HTTPS API")
	f.StringVar(&cfg.AdvertiseURL, "advertise-url", "", "URL clients and agents use to reach this server (default from --listen)")
	f.StringVar(&sans, "tls-san", "", "extra names or IPs for the serving certificate, comma-separated")
	f.StringVar(&cfg.CACertFile, "ca-cert", "", "the cluster CA's certificate, for the first start of an HA member (with --ca-key; see hearth server ca create)")
	f.StringVar(&cfg.CAKeyFile, "ca-key", "", "the cluster CA's key, for the first start of an HA member (with --ca-cert)")
	f.BoolVar(&cfg.AccessLog, "access-log", false, "log every API request")
	f.DurationVar(&cfg.DiscoveredMachineTTL, "discovered-machine-ttl", server.DefaultDiscoveredMachineTTL, "delete a machine waiting in Discovered, never approved or changed by a person, after the boot service has not heard from it this long (negative: never)")
	f.StringVar(&maxUpload, "max-upload-size", api.Bytes(server.DefaultMaxUploadSize).String(), "the largest image upload taken (413 beyond it)")
	f.StringVar(&reserve, "upload-reserve", api.Bytes(server.DefaultUploadReserve).String(), "free space an upload must leave on the data directory's file system, for etcd (507 otherwise)")
	addLimitFlags(f, "", &cfg.Limits)
	f.StringVar(&cfg.SecretsKeyFile, "secrets-key-file", "", "key Secrets are encrypted with in etcd (default DATA-DIR/secrets.key, made by the first server); every server of a cluster needs the same file")
	f.StringVar(&endpoints, "etcd-endpoints", "", "use this external etcd cluster (comma-separated URLs) instead of the embedded one")
	f.StringVar(&cfg.Etcd.CAFile, "etcd-cafile", "", "CA certificate to verify the external etcd's servers (default the system's)")
	f.StringVar(&cfg.Etcd.CertFile, "etcd-certfile", "", "client certificate for the external etcd (with --etcd-keyfile)")
	f.StringVar(&cfg.Etcd.KeyFile, "etcd-keyfile", "", "client key for the external etcd (with --etcd-certfile)")
	f.StringVar(&cfg.Etcd.Name, "etcd-name", "default", "name of this embedded etcd member")
	f.StringVar(&cfg.Etcd.PeerURL, "etcd-peer-url", etcd.DefaultPeerURL, "where the other embedded members reach this one: https, on this server's own address")
	f.StringVar(&cfg.Etcd.InitialCluster, "etcd-initial-cluster", "", "every embedded member as name=peerURL,... (default this member alone)")
	f.StringVar(&cfg.Etcd.ClusterState, "etcd-initial-cluster-state", "new", "new, or existing to join a running cluster")
	f.DurationVar(&cfg.Etcd.CompactionRetention, "etcd-compaction-retention", time.Hour, "history kept for watches to resume from")
	// For measuring (hearth bench scale --server-cpuprofile): a CPU
	// profile of the whole run, written when the server stops.
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of this server to this file when it stops")
	f.StringVar(&memProfile, "memprofile", "", "write a heap profile of this server to this file when it stops, and at each SIGUSR1 (with the runtime's memory statistics in FILE.memstats); at each SIGUSR2 to FILE.peak, with its goroutines in FILE.peak.goroutines")
	_ = f.MarkHidden("cpuprofile")
	// Gone: kept only to say so clearly to units that still pass it.
	f.StringVar(&clientURL, "etcd-client-url", "", "")
	_ = f.MarkHidden("etcd-client-url")
	cmd.AddCommand(newServerCACmd(g))
	return cmd
}

func newServerCACmd(g *globals) *cobra.Command {
	ca := &cobra.Command{
		Use:   "ca",
		Short: "The cluster CA of an HA control plane",
		Args:  cobra.NoArgs,
	}
	ca.AddCommand(&cobra.Command{
		Use:   "create DIR",
		Short: "Make a cluster CA to give every server of an HA control plane",
		Long: `Make a new cluster CA and write it to DIR/ca.crt and DIR/ca.key (mode 0600).
Copy both to each server of an HA control plane and start each for the first
time with --ca-cert DIR/ca.crt --ca-key DIR/ca.key: the servers keep a copy
in their data directories, issue their etcd peer certificates from it, and
accept as peers only members with a certificate from it. The key signs
every certificate of the cluster: move it only over channels you trust, and
delete the copies once the servers have started.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			for _, name := range []string{pki.CACertFile, pki.CAKeyFile} {
				p := filepath.Join(dir, name)
				if _, err := os.Stat(p); err == nil {
					return fmt.Errorf("%s exists: not overwriting a CA; choose another DIR", p)
				} else if !errors.Is(err, os.ErrNotExist) {
					return err
				}
			}
			c, err := server.NewClusterCA()
			if err != nil {
				return err
			}
			if err := pki.WriteCAFiles(dir, c); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "wrote %s and %s\n", filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile))
			return nil
		},
	})
	return ca
}

// writeHeapProfile writes the heap in use, after a collection, to path,
// and the runtime's memory statistics to path.memstats: what of the
// process's RSS is heap in use, heap kept for reuse, stacks and the
// runtime's own, which a heap profile does not say.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	const mib = 1 << 20
	stats := fmt.Sprintf("HeapInuse %d MiB\nHeapIdle %d MiB\nHeapReleased %d MiB\nStackInuse %d MiB\nSys %d MiB\nNumGC %d\nGoroutines %d\n",
		ms.HeapInuse/mib, ms.HeapIdle/mib, ms.HeapReleased/mib, ms.StackInuse/mib, ms.Sys/mib, ms.NumGC, runtime.NumGoroutine())
	return os.WriteFile(path+".memstats", []byte(stats), 0o644)
}

// writePeakProfiles writes the heap (as writeHeapProfile) to path and the
// goroutines, counted by stack, to path.goroutines: what a server holds
// at the height of a phase, and where its goroutines wait.
func writePeakProfiles(path string) error {
	// The goroutines first: the heap's collection lets some finish.
	f, err := os.Create(path + ".goroutines")
	if err != nil {
		return err
	}
	if err := pprof.Lookup("goroutine").WriteTo(f, 1); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return writeHeapProfile(path)
}
