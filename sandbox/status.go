package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"hearth.dev/hearth/client"
	"hearth.dev/hearth/netns"
)

// PrintStatus writes what of the sandbox in dir is up: its namespaces,
// the server, each host's agent and Host phase, the provisioning network
// with its boot service, and the machines.
func PrintStatus(ctx context.Context, w io.Writer, dir string) error {
	if dir == "" {
		dir = DefaultDir
	}
	st, err := LoadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no sandbox is up in %s (there is no %s)", dir, statePath(dir))
	}
	if err != nil {
		return err
	}
	var c *client.Client
	if st.AdminConfig != "" {
		c, _ = client.FromConfig(st.AdminConfig, "")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "sandbox\t%s\tprefix %s, underlay %s\n", dir, st.Prefix, st.Underlay)
	server := "not started"
	if st.Server != nil {
		server = running(st.Server)
		if c != nil && st.Server.alive() {
			qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			if _, err := c.WhoAmI(qctx); err != nil {
				server += ", not answering: " + err.Error()
			} else {
				server += ", answering"
			}
			cancel()
		}
		server += ", log " + st.Server.Log
	}
	fmt.Fprintf(tw, "server\t%s\t%s\n", st.ServerURL, server)
	for _, h := range st.Hosts {
		ns := "netns " + h.Netns
		if !exists(netns.Path(h.Netns)) {
			ns += " (missing)"
		}
		agent := "agent not started"
		if h.Agent != nil {
			agent = "agent " + running(h.Agent)
		}
		phase := ""
		if c != nil {
			qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			if obj, err := c.Get(qctx, "Host", "", h.Name); err == nil {
				phase = ", Host " + obj.CommonStatus().Phase
			}
			cancel()
		}
		metrics := ""
		if h.Metrics != "" {
			metrics = ", metrics http://" + h.Metrics + "/metrics"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s, %s%s%s, log %s\n", h.Name, h.Address, ns, agent, phase, metrics, h.Log())
	}
	if p := st.Provisioning; p != nil {
		ns := "netns " + p.Netns
		if !exists(netns.Path(p.Netns)) {
			ns += " (missing)"
		}
		fmt.Fprintf(tw, "provisioning\t%s\t%s, bridge %s\n", p.CIDR, ns, p.Bridge)
		if r := p.Router; r != nil {
			fmt.Fprintf(tw, "home router\t%s\t%s\n", r.Address, routerStatus(r))
		}
		boot := bootStatus(p)
		if p.BootMetrics != "" {
			boot += ", metrics http://" + p.BootMetrics + "/metrics"
		}
		fmt.Fprintf(tw, "boot service\t%s\t%s\n", p.BootAddress, boot)
	}
	for _, m := range st.Machines {
		state := "not started"
		if m.QEMU != nil {
			state = running(m.QEMU)
		}
		fmt.Fprintf(tw, "machine %s\t%s\t%s, %s, console %s\n", m.Name, m.MAC, m.Firmware, state, m.Console())
	}
	if s := st.Storage; s != nil {
		ns := "netns " + s.Netns
		if !exists(netns.Path(s.Netns)) {
			ns += " (missing)"
		}
		ceph, nfs := storageStatus(s)
		pools := "no pools made yet"
		if len(s.Pools) > 0 {
			pools = "pools " + strings.Join(s.Pools, ", ")
		}
		fmt.Fprintf(tw, "storage\t%s\t%s, %s\n", s.Address, ns, pools)
		fmt.Fprintf(tw, "ceph\t%s\t%s\n", PoolCeph, ceph)
		fmt.Fprintf(tw, "nfs\t%s\t%s\n", PoolNFS, nfs)
	}
	if g := st.TestGuest; g != nil {
		files := "file://" + g.Kernel + " file://" + g.Initrd
		if g.Disk != "" {
			files += " file://" + g.Disk
		}
		fmt.Fprintf(tw, "test guest\t%s\t%s\n", strings.Join(g.images(), ", "), files)
	}
	if d := st.DebianImage; d != nil {
		fmt.Fprintf(tw, "Debian image\t%s, %s, %s\tfile://%s file://%s file://%s\n", d.KernelImage, d.InitrdImage, d.DiskImage, d.Kernel, d.Initrd, d.Disk)
	}
	return tw.Flush()
}

func running(p *Process) string {
	if p.alive() {
		return fmt.Sprintf("running (pid %d)", p.PID)
	}
	return fmt.Sprintf("not running (was pid %d)", p.PID)
}

// bootStatus says whether the boot service runs, and where its log is.
func bootStatus(p *Provisioning) string {
	switch {
	case p.Boot != nil:
		return "netns " + p.BootNetns + ", " + running(p.Boot) + ", http " + p.HTTPListen + ", log " + p.BootLog()
	case p.BootSkipped != "":
		return "netns " + p.BootNetns + ", not started: " + p.BootSkipped
	default:
		return "netns " + p.BootNetns + ", not started"
	}
}

func routerStatus(r *Router) string {
	s := "netns " + r.Netns + ", dhcp " + r.RangeStart + "-" + r.RangeEnd
	if r.DNSMasq == nil {
		return s + ", dnsmasq not started"
	}
	return s + ", dnsmasq " + running(r.DNSMasq) + ", log " + r.Log()
}
