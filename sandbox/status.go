package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"hearth.dev/hearth/client"
)

// PrintStatus writes what of the sandbox in dir is up: its namespaces,
// the server and each host's agent and Host phase.
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
		netns := "netns " + h.Netns
		if !exists(filepath.Join(netnsDir, h.Netns)) {
			netns += " (missing)"
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
		fmt.Fprintf(tw, "%s\t%s\t%s, %s%s, log %s\n", h.Name, h.Address, netns, agent, phase, h.Log())
	}
	if g := st.TestGuest; g != nil {
		fmt.Fprintf(tw, "test guest\t\tfile://%s file://%s\n", g.Kernel, g.Initrd)
	}
	return tw.Flush()
}

func running(p *Process) string {
	if p.alive() {
		return fmt.Sprintf("running (pid %d)", p.PID)
	}
	return fmt.Sprintf("not running (was pid %d)", p.PID)
}
