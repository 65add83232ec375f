package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// StartBootService starts the boot service (cfg.BootCommand, by default
// `hearth boot`) inside PREFIX-boot with a join token of its own, and
// waits until it serves HTTP on the provisioning network.
//
// A hearth binary without a `boot` command (the default command only)
// is not a failure: the provisioning network stays up without a boot
// service, the reason is recorded (Provisioning.BootSkipped) and printed,
// and machines added to it send DHCP that nobody answers.
func (s *Sandbox) StartBootService(ctx context.Context) error {
	p := s.State.Provisioning
	if p == nil {
		return errors.New("the sandbox has no provisioning network yet")
	}
	if s.cfg.defaultBootCommand && !hasCommand(ctx, s.cfg.Executable, "boot") {
		p.BootSkipped = s.cfg.Executable + " has no boot command"
		fmt.Fprintf(s.cfg.Progress, "sandbox: not starting the boot service: %s; the provisioning network %s is up without one (start one in %s with hearth sandbox exec-in, or pass --boot-service=false)\n",
			p.BootSkipped, p.CIDR, p.BootNetns)
		return s.State.save()
	}
	if err := s.dialFrom(p.BootNetns, s.serverHostPort()); err != nil {
		return fmt.Errorf("the boot service's namespace %s cannot reach the server at %s (%v): does a firewall in the root namespace drop traffic on %s?", p.BootNetns, s.serverHostPort(), err, s.names.ctl())
	}
	token, err := s.joinToken(ctx, "hearth sandbox boot service")
	if err != nil {
		return fmt.Errorf("the boot service: %w", err)
	}
	j := Join{
		Server: s.State.ServerURL,
		Token:  token,
		CAFile: filepath.Join(s.cfg.Dir, serverSubdir, "ca.crt"),
		Site:   s.cfg.Site,
	}
	if err := os.MkdirAll(p.BootDir, 0o755); err != nil {
		return err
	}
	if err := s.addPath(p.BootDir); err != nil {
		return err
	}
	argv := s.Command(p.BootNetns, s.cfg.BootCommand(*p, j)...).Args
	proc, err := startDaemon(argv, p.BootLog())
	if proc != nil {
		p.Boot = proc
		if serr := s.State.save(); serr != nil {
			return serr
		}
	}
	failed := func(what string) error {
		return fmt.Errorf("the boot service %s; the end of %s:\n%s\n\nTo build the sandbox without it, pass --boot-service=false",
			what, p.BootLog(), logTail(p.BootLog(), 15))
	}
	if err != nil {
		return failed("did not start (" + err.Error() + ")")
	}
	deadline := time.Now().Add(s.cfg.ReadyTimeout)
	for {
		if !proc.alive() {
			return failed("exited")
		}
		if s.dialFrom(p.BootNetns, p.HTTPListen) == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return failed(fmt.Sprintf("does not serve HTTP on %s after %s", p.HTTPListen, s.cfg.ReadyTimeout))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// hasCommand reports whether the hearth binary exe knows the command:
// `exe COMMAND --help` fails on an unknown command.
func hasCommand(ctx context.Context, exe, command string) bool {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, exe, command, "--help").CombinedOutput()
	return err == nil && !strings.Contains(string(out), "unknown command")
}
