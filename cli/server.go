package cli

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"hearth.dev/hearth/server"
	"hearth.dev/hearth/server/controllers"
)

func init() { commands = append(commands, newServerCmd) }

func newServerCmd(g *globals) *cobra.Command {
	var cfg server.Config
	var endpoints, sans string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane: API, embedded etcd and controllers",
		Long: `Run the control plane. On first start it creates a CA, a serving
certificate, a "default" tenant, an "admin" user, and writes an admin client
config to DATA-DIR/admin.conf (use it with --config or HEARTH_CONFIG).

By default etcd is embedded, alone, in DATA-DIR/etcd. For HA run three
servers with --etcd-name, --etcd-peer-url and the same --etcd-initial-cluster;
or point every server at an external cluster with --etcd-endpoints.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Etcd.Endpoints = server.ParseList(endpoints)
			cfg.TLSSANs = server.ParseList(sans)
			s, err := server.Start(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.errOut, "hearth server listening on %s\nadmin config: %s\n", s.URL(), filepath.Join(cfg.DataDir, "admin.conf"))
			<-cmd.Context().Done()
			return s.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", server.DefaultDataDir(), "where etcd data, certificates and admin.conf live")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8443", "address of the HTTPS API")
	f.StringVar(&cfg.AdvertiseURL, "advertise-url", "", "URL clients and agents use to reach this server (default from --listen)")
	f.StringVar(&sans, "tls-san", "", "extra names or IPs for the serving certificate, comma-separated")
	f.BoolVar(&cfg.AccessLog, "access-log", false, "log every API request")
	f.DurationVar(&cfg.DiscoveredMachineTTL, "discovered-machine-ttl", controllers.DefaultDiscoveredTTL, "delete a machine waiting in Discovered, never approved or changed by a person, after the boot service has not heard from it this long (negative: never)")
	f.StringVar(&endpoints, "etcd-endpoints", "", "use this external etcd cluster (comma-separated URLs) instead of the embedded one")
	f.StringVar(&cfg.Etcd.Name, "etcd-name", "default", "name of this embedded etcd member")
	f.StringVar(&cfg.Etcd.ClientURL, "etcd-client-url", "http://127.0.0.1:2379", "where the embedded etcd serves clients")
	f.StringVar(&cfg.Etcd.PeerURL, "etcd-peer-url", "http://127.0.0.1:2380", "where the other embedded members reach this one")
	f.StringVar(&cfg.Etcd.InitialCluster, "etcd-initial-cluster", "", "every embedded member as name=peerURL,... (default this member alone)")
	f.StringVar(&cfg.Etcd.ClusterState, "etcd-initial-cluster-state", "new", "new, or existing to join a running cluster")
	f.DurationVar(&cfg.Etcd.CompactionRetention, "etcd-compaction-retention", time.Hour, "history kept for watches to resume from")
	return cmd
}
