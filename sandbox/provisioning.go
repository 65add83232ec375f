package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"hearth.dev/hearth/netns"
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
	if err := os.MkdirAll(p.BootDir, 0o755); err != nil {
		return err
	}
	if err := s.addPath(p.BootDir); err != nil {
		return err
	}
	tokenFile, err := s.joinTokenFile(ctx, p.BootDir, "hearth sandbox boot service")
	if err != nil {
		return fmt.Errorf("the boot service: %w", err)
	}
	j := Join{
		Server:    s.State.ServerURL,
		TokenFile: tokenFile,
		CAFile:    filepath.Join(s.cfg.Dir, serverSubdir, "ca.crt"),
		Site:      s.cfg.Site,
		FileDirs:  s.fileDirs(),
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

// StartHomeRouter starts dnsmasq in PREFIX-router as the provisioning
// network's home router: DHCP only (no DNS: --port=0), addresses .50 to
// .99 of the provisioning network, and no PXE option whatsoever, so the
// boot service, in proxy mode, is what tells machines what to boot. Its
// own log is DIR/router/dnsmasq.log, its leases DIR/router/leases, and
// what it prints DIR/router/router.log. Up waits until it listens on
// port 67.
func (s *Sandbox) StartHomeRouter(ctx context.Context) error {
	p := s.State.Provisioning
	if p == nil || p.Router == nil {
		return errors.New("the sandbox has no home router's namespace yet")
	}
	r := p.Router
	if _, err := os.Stat(s.cfg.DNSMasq); err != nil {
		return fmt.Errorf("--home-router needs dnsmasq (%v): on Debian, apt-get install dnsmasq-base", err)
	}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return err
	}
	if err := s.addPath(r.Dir); err != nil {
		return err
	}
	for _, f := range []string{r.Leases(), r.Log()} {
		if err := touch(f); err != nil {
			return err
		}
	}
	// dnsmasq drops root for nobody once it has its sockets; it must
	// still write its leases and its log.
	_ = os.Chmod(r.Dir, 0o777)
	for _, f := range []string{r.Leases(), r.Log()} {
		_ = os.Chmod(f, 0o666)
	}
	mask := net.IP(net.CIDRMask(s.cfg.Provisioning.Bits(), 32)).String()
	argv := s.Command(r.Netns, s.cfg.DNSMasq,
		"--no-daemon",
		"--conf-file=/dev/null",
		"--no-hosts",
		"--no-resolv",
		"--port=0",
		"--interface="+r.Interface,
		"--bind-interfaces",
		"--dhcp-range="+r.RangeStart+","+r.RangeEnd+","+mask+",1h",
		"--dhcp-authoritative",
		"--log-dhcp",
		"--dhcp-leasefile="+r.Leases(),
		"--pid-file="+filepath.Join(r.Dir, routerPID),
		"--log-facility="+r.Log(),
	).Args
	logPath := filepath.Join(r.Dir, routerLog)
	proc, err := startDaemon(argv, logPath)
	if proc != nil {
		r.DNSMasq = proc
		if serr := s.State.save(); serr != nil {
			return serr
		}
	}
	failed := func(what string) error {
		return fmt.Errorf("the home router (dnsmasq) %s; the end of %s:\n%s\nand of %s:\n%s",
			what, logPath, logTail(logPath, 10), r.Log(), logTail(r.Log(), 10))
	}
	if err != nil {
		return failed("did not start (" + err.Error() + ")")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if !proc.alive() {
			return failed("exited")
		}
		if listensUDP(r.Netns, 67) {
			return nil
		}
		if time.Now().After(deadline) {
			return failed("does not listen on UDP port 67 after 30s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// listensUDP reports whether something in the namespace has a UDP socket
// bound to port.
func listensUDP(netnsName string, port int) bool {
	found := false
	_ = netns.DoNamed(netnsName, func() error {
		// The thread's namespace, not the process's.
		data, err := os.ReadFile("/proc/thread-self/net/udp")
		if err != nil {
			return err
		}
		want := fmt.Sprintf(":%04X ", port)
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 2 && strings.HasSuffix(f[1]+" ", want) {
				found = true
			}
		}
		return nil
	})
	return found
}

// touch makes an empty file unless it exists.
func touch(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}
