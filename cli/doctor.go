package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"hearth.dev/hearth/doctor"
)

func init() { commands = append(commands, newDoctorCmd) }

// errDoctorFailed makes `hearth doctor` exit 1 after its report, which
// already said everything.
var errDoctorFailed = errors.New("some checks failed")

func newDoctorCmd(g *globals) *cobra.Command {
	var role, dataDir, output string
	var opts doctor.Options
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check that this machine can run a Hearth role, and say what to fix",
		Long: `Check this machine for the role it is about to play (default: every role)
and say, for each missing piece, what to do: the package to install, the
sysctl to set, the flag to give.

  server   the data directory (private, free space, filesystem), etcd's
           fsync latency on it, the API and peer ports, clock sync
  agent    kernel features of the data plane (network namespaces, bridge,
           veth, VXLAN, tun, nftables; tried in a throwaway namespace),
           br_netfilter with a FORWARD policy of drop, KVM (by booting a
           tiny guest) or TCG, QEMU with its firmware and iPXE ROMs (by
           starting it), qemu-img and the RBD driver, the data directory,
           the console port, clock sync, and the server (--server, or the
           credentials of a joined agent)
  boot     the iPXE binaries, the data directory, DHCP, TFTP and HTTP
           ports, clock sync, and the server
  sandbox  what the sandbox and the demo run: the agent's kernel
           features, QEMU, qemu-img, iPXE and the tools that build the
           test guest

Run it as root, as the services run: the kernel checks make network
namespaces, and privileged ports can only be tried by root. It exits 1
when a check fails (warnings do not), so scripts can use it. The agent
runs the agent's checks at start and reports failures as conditions on
its Host (hearth describe host NAME).`,
		Example: `  sudo hearth doctor --role agent --server https://192.0.2.10:8443 --ca-file ca.crt
  sudo hearth doctor --role server --data-dir /var/lib/hearth
  sudo hearth doctor -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if role != "" {
				r, err := doctor.ParseRole(role)
				if err != nil {
					return fmt.Errorf("--role: %w", err)
				}
				opts.Roles = []doctor.Role{r}
				if dataDir != "" {
					opts.DataDirs = map[doctor.Role]string{r: dataDir}
				}
			} else if dataDir != "" {
				return errors.New("--data-dir: say which role's data directory it is with --role")
			}
			if output != "text" && output != "json" {
				return fmt.Errorf("-o %s is not an output format of doctor (want text or json)", output)
			}
			rep := doctor.Run(cmd.Context(), opts)
			if output == "json" {
				enc := json.NewEncoder(g.out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printDoctor(g.out, rep)
			}
			if rep.Worst() == doctor.Fail {
				return errDoctorFailed
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "", "server, agent, boot or sandbox (default all)")
	f.StringVar(&dataDir, "data-dir", "", "the role's data directory (default the role's: /var/lib/hearth, /var/lib/hearth-agent, /var/lib/hearth-boot)")
	f.StringVar(&opts.Server, "server", "", "API server URL an agent or boot service must reach (default from a joined host's credentials)")
	f.StringVar(&opts.CAFile, "ca-file", "", "the cluster CA certificate (the server's DATA-DIR/ca.crt)")
	f.StringVar(&opts.IPXEDir, "ipxe-dir", "", "where the boot service finds the iPXE binaries (default /usr/lib/ipxe)")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

// printDoctor writes a report as a person reads it: a section per role, a
// line per finding, what to do under each one that needs it, and a
// verdict.
func printDoctor(w io.Writer, rep doctor.Report) {
	width := 0
	for _, f := range rep.All() {
		width = max(width, len(f.Check))
	}
	for i, role := range rep.Roles {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s:\n", role)
		for _, f := range rep.Findings[role] {
			fmt.Fprintf(w, "  %-4s  %-*s  %s\n", f.Status, width, f.Check, f.Message)
			if f.Fix != "" && f.Status != doctor.OK {
				fmt.Fprintf(w, "        %*s  → %s\n", width, "", f.Fix)
			}
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, strings.TrimSpace(rep.Summary()))
}
