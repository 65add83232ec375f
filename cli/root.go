// Package cli is the `hearth` command line: the kubectl-like verbs that
// talk to the API, and the subcommands that start Hearth's processes.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

// globals are the flags every API command shares.
type globals struct {
	config  string
	context string
	tenant  string
	verbose bool
	out     io.Writer
	errOut  io.Writer
	in      io.Reader
}

// client returns an API client for the chosen config and context, with
// --tenant applied.
func (g *globals) client() (*client.Client, error) {
	c, err := client.FromConfig(g.config, g.context)
	if err != nil {
		return nil, err
	}
	if g.tenant != "" {
		c.Tenant = g.tenant
	}
	return c, nil
}

// NewRoot builds the command tree.
func NewRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "hearth",
		Short: "Hearth: a homelab cloud in one binary",
		Long: `Hearth turns a YAML description of a lab (tenants, networks, VMs, volumes,
bare-metal machines) into reality on every host, and keeps it that way.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			level := slog.LevelInfo
			if g.verbose {
				level = slog.LevelDebug
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(g.errOut, &slog.HandlerOptions{Level: level})))
		},
	}
	root.SetOut(g.out)
	root.SetErr(g.errOut)
	root.SetIn(g.in)
	pf := root.PersistentFlags()
	pf.StringVar(&g.config, "config", "", "client config file (default $HEARTH_CONFIG, then "+client.DefaultConfigPath()+")")
	pf.StringVar(&g.context, "context", "", "context of the config to use (default its current context)")
	pf.StringVarP(&g.tenant, "tenant", "t", "", "tenant for tenant-scoped objects (default the context's tenant)")
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "log more")
	for _, add := range commands {
		root.AddCommand(add(g))
	}
	return root
}

// commands are added to the root by each file's init, so every verb lives
// in its own file.
var commands []func(*globals) *cobra.Command

// Main runs the CLI and returns the exit code.
func Main(args []string) int {
	g := &globals{out: os.Stdout, errOut: os.Stderr, in: os.Stdin}
	root := NewRoot(g)
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := root.ExecuteContext(ctx); err != nil {
		printError(g.errOut, err)
		return 1
	}
	return 0
}

// printError shows an error the way a person needs it: an API error's
// message and then each bad field on its own line.
func printError(w io.Writer, err error) {
	var st *api.Status
	if errors.As(err, &st) && len(st.Fields) > 0 {
		// Keep the context a caller wrapped the error in ("lab.yaml
		// (document 2): …").
		prefix, _ := strings.CutSuffix(err.Error(), st.Message)
		if prefix == err.Error() {
			prefix = ""
		}
		fmt.Fprintf(w, "Error: %s%s is invalid:\n", prefix, objectFromMessage(st.Message))
		for _, f := range st.Fields {
			fmt.Fprintf(w, "  %s: %s\n", f.Field, f.Detail)
		}
		return
	}
	fmt.Fprintf(w, "Error: %v\n", err)
}

// objectFromMessage takes `Network "x" is invalid: …` and returns `Network "x"`.
func objectFromMessage(msg string) string {
	if i := strings.Index(msg, " is invalid"); i >= 0 {
		return msg[:i]
	}
	return "the object"
}
