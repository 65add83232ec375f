package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

func init() { commands = append(commands, newAgentCmd) }

func newAgentCmd(g *globals) *cobra.Command {
	var cfg agent.Config
	var jt joinTokenFlags
	var logMax string
	var externals []string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: register this host and run what is placed on it",
		Long: `Run the node agent. The first time, it joins with a join token (from
hearth token create --join), which registers its Host with the site and
labels of the join token and this host's --address, and keeps the host
credential it gets in --data-dir; later starts need neither the join token
nor --server. Give the join token in a root-only file (--join-token-file)
or HEARTH_JOIN_TOKEN: a --join-token on the command line is visible to
every local user.

If the server refuses the credential (the Host was deleted, or its tokens
revoked), the agent says so once and waits for a new join token in
--join-token-file; its VMs run on.

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
			var err error
			if cfg.JoinToken, cfg.JoinTokenFile, err = jt.resolve(g.errOut); err != nil {
				return err
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
				return fmt.Errorf("--console-log-max: %w", err)
			}
			cfg.ConsoleLogMax = int64(b)
			if cfg.ExternalInterfaces, err = parseExternalInterfaces(externals); err != nil {
				return err
			}
			return joinFlagsError(agent.Run(cmd.Context(), cfg))
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Server, "server", "", "API server URL (first start)")
	jt.add(f)
	f.StringVar(&cfg.CAFile, "ca-file", "", "the cluster CA certificate to trust on first start (the server's DATA-DIR/ca.crt)")
	f.StringVar(&cfg.Name, "name", "", "host name (default the machine's hostname)")
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/hearth-agent", "credential, VMs and image cache")
	f.StringVar(&cfg.Address, "address", "", "this host's underlay IP (recorded in its Host when it first joins)")
	// A Host's site and labels come from its join token now: labels
	// attract VMs, so they are the administrator's, not the host's.
	var ignored string
	f.StringVar(&ignored, "site", "", "ignored: the Host's site comes from its join token")
	f.StringVar(&ignored, "labels", "", "ignored: the Host's labels come from its join token")
	_ = f.MarkDeprecated("site", "a Host's site comes from its join token (hearth token create --join --site SITE); this flag is ignored")
	_ = f.MarkDeprecated("labels", "a Host's labels come from its join token (hearth token create --join --label k=v); this flag is ignored")
	f.StringVar(&cfg.Listen, "listen", "", "address for console connections from the server (default ADDRESS:9443)")
	addLimitFlags(f, "console-", &cfg.ConsoleLimits)
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 0, "how long a guest gets to power off before it is killed (default 60s)")
	f.DurationVar(&cfg.MigrationTimeout, "migration-timeout", 0, "how long this host sends a VM moving live to another before it cancels the move and runs the VM on (default 4m, at most 5m)")
	f.StringVar(&logMax, "console-log-max", api.Bytes(agent.DefaultConsoleLogMax).String(),
		"cap of each VM's console log, such as 8Mi: past it the log is kept as console.log.1 (replacing the older one) and console.log starts again empty")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", "", "address to serve Prometheus metrics on over plain HTTP (GET /metrics), such as 10.0.0.5:9464; none when empty. VM series carry tenant and VM names: use a management network")
	f.StringArrayVar(&cfg.AllowFileDirs, "allow-file-dir", nil, "a directory shared Images may name files in with file:// URLs (repeatable; none by default)")
	f.StringVar(&cfg.UnderlayDevice, "underlay-device", "",
		"the link holding --address that tenant networks' VXLAN rides on; turns tenant networking on (without it, VMs' NICs are unplugged)")
	f.StringArrayVar(&externals, "external-interface", nil,
		"this host's link (usually a bridge) to an external network, as NAME=DEVICE for the ExternalNetwork NAME or DEVICE for any (repeatable)")
	f.StringVar(&cfg.NetnsPrefix, "netns-prefix", "", "start of the names of the routers' network namespaces (default hearth-)")
	f.IntVar(&cfg.VMNice, "vm-nice", 10, "CPU niceness of the VMs (0-19): when guests keep every core busy, the host's own services still get CPU in time")
	return cmd
}

// parseExternalInterfaces reads --external-interface values.
func parseExternalInterfaces(vals []string) (map[string]string, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, v := range vals {
		name, dev, found := strings.Cut(v, "=")
		if !found {
			name, dev = "", v
		}
		if dev == "" || strings.ContainsAny(dev, "/ ") || len(dev) > 15 {
			return nil, fmt.Errorf("--external-interface %q: want NAME=DEVICE or DEVICE, with a link name of at most 15 characters", v)
		}
		if name != "" {
			if es := api.ValidateName("--external-interface", name); len(es) > 0 {
				return nil, es
			}
		}
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("--external-interface %q: external network %q has a device already", v, name)
		}
		m[name] = dev
	}
	return m, nil
}

// joinTokenFlags are how a host process is given its join token.
type joinTokenFlags struct{ token, file string }

func (j *joinTokenFlags) add(f *pflag.FlagSet) {
	f.StringVar(&j.file, "join-token-file", "", "file holding the join token (first start, or a re-join); keep it readable by root only")
	f.StringVar(&j.token, "join-token", "", "join token (first start); visible to every local user in ps: prefer --join-token-file or HEARTH_JOIN_TOKEN")
}

// resolve returns the join token given on the command line or in the
// environment, or the file that holds it. HEARTH_JOIN_TOKEN is removed
// from the environment once read, so processes started later (QEMU) do
// not inherit it.
// joinFlagsError says which flags give what a host process that has not
// joined lacks; the client says it in its own words.
func joinFlagsError(err error) error {
	if errors.Is(err, client.ErrNotJoined) {
		return fmt.Errorf("%w: give --server and --join-token-file (or HEARTH_JOIN_TOKEN)", err)
	}
	return err
}

func (j *joinTokenFlags) resolve(errOut io.Writer) (token, file string, err error) {
	env := os.Getenv("HEARTH_JOIN_TOKEN")
	os.Unsetenv("HEARTH_JOIN_TOKEN")
	switch {
	case j.token != "" && j.file != "":
		return "", "", errors.New("give the join token once: --join-token-file or --join-token, not both")
	case j.token != "":
		fmt.Fprintln(errOut, "warning: --join-token is visible to every local user (ps, /proc/PID/cmdline): prefer --join-token-file or HEARTH_JOIN_TOKEN")
		return strings.TrimSpace(j.token), "", nil
	case j.file != "":
		return "", j.file, nil
	}
	return strings.TrimSpace(env), "", nil
}
