package cli

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server"
)

func init() { commands = append(commands, newServerCmd) }

func newServerCmd(g *globals) *cobra.Command {
	var cfg server.Config
	var endpoints, sans, maxUpload, reserve string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane: API, embedded etcd and controllers",
		Long: `Run the control plane. On first start it creates a CA, a serving
certificate, a "default" tenant, an "admin" user, and writes an admin client
config to DATA-DIR/admin.conf (use it with --config or HEARTH_CONFIG).

By default etcd is embedded, alone, in DATA-DIR/etcd. For HA run three
servers with --etcd-name, --etcd-peer-url and the same --etcd-initial-cluster;
or point every server at an external cluster with --etcd-endpoints.

Images uploaded through the API (hearth image upload) are kept in
DATA-DIR/images, beside etcd: one upload may be at most --max-upload-size,
a tenant's uploads together at most its quota's imageStorage, and no
upload may leave less than --upload-reserve free on that file system, so
etcd never finds its disk full.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
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
	f.StringVar(&maxUpload, "max-upload-size", api.Bytes(server.DefaultMaxUploadSize).String(), "the largest image upload taken (413 beyond it)")
	f.StringVar(&reserve, "upload-reserve", api.Bytes(server.DefaultUploadReserve).String(), "free space an upload must leave on the data directory's file system, for etcd (507 otherwise)")
	f.StringVar(&endpoints, "etcd-endpoints", "", "use this external etcd cluster (comma-separated URLs) instead of the embedded one")
	f.StringVar(&cfg.Etcd.Name, "etcd-name", "default", "name of this embedded etcd member")
	f.StringVar(&cfg.Etcd.ClientURL, "etcd-client-url", "http://127.0.0.1:2379", "where the embedded etcd serves clients")
	f.StringVar(&cfg.Etcd.PeerURL, "etcd-peer-url", "http://127.0.0.1:2380", "where the other embedded members reach this one")
	f.StringVar(&cfg.Etcd.InitialCluster, "etcd-initial-cluster", "", "every embedded member as name=peerURL,... (default this member alone)")
	f.StringVar(&cfg.Etcd.ClusterState, "etcd-initial-cluster-state", "new", "new, or existing to join a running cluster")
	f.DurationVar(&cfg.Etcd.CompactionRetention, "etcd-compaction-retention", time.Hour, "history kept for watches to resume from")
	return cmd
}
