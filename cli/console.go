package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	api "hearth.dev/hearth/api/v1alpha1"
)

func init() { commands = append(commands, newConsoleCmd) }

// detachKey is Ctrl-], telnet's and virsh's escape, which serial consoles
// and shells rarely need.
const detachKey = 0x1d

func newConsoleCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "console vm/NAME | virtualmachine NAME | NAME",
		Short: "Attach to a VM's serial console",
		Long: `Attach to a VM's serial console: what you type goes to the guest's serial
port and what it prints comes back. Others may be attached at the same
time; everyone sees the same output. Needs the right to change the VM.

In a terminal, the terminal is switched to raw mode so every key reaches
the guest as typed (Ctrl-C included); press Ctrl-] to detach, which leaves
the VM running. Without a terminal (input from a pipe or file), input is
sent as it comes and output printed until the console closes or the
command is interrupted.`,
		Example: `  hearth console vm/web-1
  echo root | hearth console vm/web-1 -t lab`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeVMs(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := vmName(args)
			if err != nil {
				return err
			}
			return runConsole(cmd.Context(), g, name)
		},
	}
}

func runConsole(ctx context.Context, g *globals, name string) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	conn, err := c.Console(ctx, "", name)
	if err != nil {
		return err
	}
	defer conn.Close()
	if f, ok := g.in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return consoleTerminal(ctx, g, f, conn, name)
	}
	return consolePipe(ctx, g, conn)
}

// consolePipe copies stdin to the console and the console to stdout. The
// end of stdin does not end the session: the guest's answer to the last
// line is still to come.
func consolePipe(ctx context.Context, g *globals, conn net.Conn) error {
	out := make(chan error, 1)
	go func() {
		_, err := io.Copy(g.out, conn)
		out <- err
	}()
	go func() { _, _ = io.Copy(conn, g.in) }()
	select {
	case err := <-out:
		if ctx.Err() != nil {
			return nil
		}
		return err
	case <-ctx.Done():
		conn.Close()
		<-out
		return nil
	}
}

// consoleTerminal runs an interactive session in raw mode until Ctrl-] or
// the console closes.
func consoleTerminal(ctx context.Context, g *globals, in *os.File, conn net.Conn, name string) error {
	fd := int(in.Fd())
	old, err := term.MakeRaw(fd)
	if err != nil {
		return fmt.Errorf("putting the terminal in raw mode: %w", err)
	}
	defer term.Restore(fd, old)
	// Raw mode turns off the terminal's \n to \r\n, hence the \r.
	fmt.Fprintf(g.errOut, "Connected to the console of VM %s. Press Ctrl-] to detach.\r\n", name)

	out := make(chan error, 1)
	go func() {
		_, err := io.Copy(g.out, conn)
		out <- err
	}()
	detached := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := in.Read(buf)
			if i := bytes.IndexByte(buf[:n], detachKey); i >= 0 {
				if i > 0 {
					_, _ = conn.Write(buf[:i])
				}
				close(detached)
				return
			}
			if n > 0 {
				if _, werr := conn.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case <-detached:
		conn.Close()
		fmt.Fprintf(g.errOut, "\r\nDetached; VM %s keeps running. Attach again with: %s\r\n", name, g.again("console", "vm/"+name))
		return nil
	case err := <-out:
		if err != nil && !errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
			return err
		}
		fmt.Fprintf(g.errOut, "\r\nThe console of VM %s closed.\r\n", name)
		return nil
	case <-ctx.Done():
		conn.Close()
		return nil
	}
}

// again is the command line that runs a hearth command again with the
// flags that chose where this one went (--config, --context, --tenant), so
// a hint printed to a person works when pasted.
func (g *globals) again(args ...string) string {
	line := append([]string{"hearth"}, args...)
	for _, f := range []struct{ flag, value string }{{"--config", g.config}, {"--context", g.context}, {"--tenant", g.tenant}} {
		if f.value != "" {
			line = append(line, f.flag, shellQuote(f.value))
		}
	}
	return strings.Join(line, " ")
}

// shellQuote quotes s for a POSIX shell if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@+,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// completeVMs completes the VM argument of logs and console: VM names,
// vm/NAME once a kind and a slash are typed, and names after
// "virtualmachine" (or any other way of saying it) as the first argument.
func completeVMs(g *globals) cobra.CompletionFunc {
	isVM := func(kind string) bool {
		k, err := api.KindByName(kind)
		return err == nil && k.Kind == "VirtualMachine"
	}
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		switch {
		case len(args) == 1 && !strings.Contains(args[0], "/") && isVM(args[0]):
			return g.nameCompletions(cmd.Context(), "VirtualMachine", toComplete), cobra.ShellCompDirectiveNoFileComp
		case len(args) > 0:
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		if kind, prefix, ok := strings.Cut(toComplete, "/"); ok {
			if !isVM(kind) {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []string
			for _, n := range g.nameCompletions(cmd.Context(), "VirtualMachine", prefix) {
				out = append(out, kind+"/"+n)
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		}
		return g.nameCompletions(cmd.Context(), "VirtualMachine", toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}
