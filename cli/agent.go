package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
)

func init() { commands = append(commands, newAgentCmd) }

func newAgentCmd(g *globals) *cobra.Command {
	var cfg agent.Config
	var labels, logMax string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: register this host and run what is placed on it",
		Long: `Run the node agent. The first time, it joins with a join token (from
hearth token create --join) and keeps the host credential it gets in
--data-dir; later starts need neither --join-token nor --server.

VMs run as QEMU processes that outlive the agent: a restarted agent finds
and adopts them.

Images are fetched from their URLs with no credential, and never from this
machine (loopback, its own --address) or link-local addresses such as the
metadata service, whatever a name resolves to or a server redirects to.
A shared Image (made by a cluster admin) may name a file on the hosts with
file:///path; the agent reads it only under a directory given with
--allow-file-dir (none by default), after resolving ".." and symbolic
links. Tenants' images never read host files.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if labels != "" {
				cfg.Labels = map[string]string{}
				for _, kv := range strings.Split(labels, ",") {
					k, v, _ := strings.Cut(kv, "=")
					cfg.Labels[strings.TrimSpace(k)] = strings.TrimSpace(v)
				}
			}
			// Incus and Proxmox users write 8MiB, 8MB: the same as 8Mi, 8M.
			size := logMax
			if n := len(size); n > 1 && size[n-1] == 'B' && strings.ContainsRune("iKkMGTPE", rune(size[n-2])) {
				size = size[:n-1]
			}
			b, err := api.ParseBytes(size)
			if err != nil {
				return fmt.Errorf("--console-log-max: %w", err)
			}
			// Checked here too: 0 in agent.Config means the default.
			if err := agent.CheckConsoleLogMax(int64(b)); err != nil {
				return err
			}
			cfg.ConsoleLogMax = int64(b)
			return agent.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Server, "server", "", "API server URL (first start)")
	f.StringVar(&cfg.JoinToken, "join-token", "", "join token (first start)")
	f.StringVar(&cfg.CAFile, "ca-file", "", "the cluster CA certificate to trust on first start (the server's DATA-DIR/ca.crt)")
	f.StringVar(&cfg.Name, "name", "", "host name (default the machine's hostname)")
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/hearth-agent", "credential, VMs and image cache")
	f.StringVar(&cfg.Address, "address", "", "this host's underlay IP")
	f.StringVar(&cfg.Site, "site", "", "site the host belongs to")
	f.StringVar(&labels, "labels", "", "host labels, k=v,…")
	f.StringVar(&cfg.Listen, "listen", "", "address for console connections from the server (default ADDRESS:9443)")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 0, "how long a guest gets to power off before it is killed (default 60s)")
	f.StringVar(&logMax, "console-log-max", api.Bytes(agent.DefaultConsoleLogMax).String(),
		"cap of each VM's console log, such as 8Mi: past it the log is kept as console.log.1 (replacing the older one) and console.log starts again empty")
	f.StringArrayVar(&cfg.AllowFileDirs, "allow-file-dir", nil, "a directory shared Images may name files in with file:// URLs (repeatable; none by default)")
	f.IntVar(&cfg.VMNice, "vm-nice", 10, "CPU niceness of the VMs (0-19): when guests keep every core busy, the host's own services still get CPU in time")
	return cmd
}
