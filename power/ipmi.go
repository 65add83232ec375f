package power

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// ipmi drives a BMC over IPMI 2.0 (lanplus) by running ipmitool: the one
// IPMI client every distribution ships and every BMC vendor tests
// against, so its quirks are known ones.
type ipmi struct {
	machine  string
	host     string
	port     int
	username string
	password string
	tool     string
	// uefi asks for a UEFI network boot rather than a legacy PXE one.
	uefi bool
}

// ipmiPort is the RMCP+ port BMCs listen on.
const ipmiPort = 623

func newIPMI(m *api.Machine, p *api.MachinePower, o Options) (*ipmi, error) {
	host, port, err := splitHostPort("spec.power.address", p.Address, ipmiPort)
	if err != nil {
		return nil, fmt.Errorf("machine %s: %w", m.Metadata.Name, err)
	}
	tool := o.IPMITool
	if tool == "" {
		tool = "ipmitool"
	}
	return &ipmi{
		machine:  m.Metadata.Name,
		host:     host,
		port:     port,
		username: p.Username,
		password: p.Password,
		tool:     tool,
		uefi:     m.Status.Firmware == api.FirmwareUEFI,
	}, nil
}

func (d *ipmi) String() string { return "ipmi " + d.bmc() }

func (d *ipmi) bmc() string {
	if strings.Contains(d.host, ":") {
		return "[" + d.host + "]:" + strconv.Itoa(d.port)
	}
	return d.host + ":" + strconv.Itoa(d.port)
}

func (d *ipmi) On(ctx context.Context) error {
	_, err := d.run(ctx, "chassis", "power", "on")
	return err
}

func (d *ipmi) Off(ctx context.Context) error {
	_, err := d.run(ctx, "chassis", "power", "off")
	return err
}

func (d *ipmi) Cycle(ctx context.Context) error {
	s, err := d.Status(ctx)
	if err != nil {
		return err
	}
	if s == Off {
		return d.On(ctx)
	}
	_, err = d.run(ctx, "chassis", "power", "cycle")
	return err
}

var ipmiPowerState = regexp.MustCompile(`(?m)^Chassis Power is (on|off)\s*$`)

func (d *ipmi) Status(ctx context.Context) (State, error) {
	out, err := d.run(ctx, "chassis", "power", "status")
	if err != nil {
		return Unknown, err
	}
	m := ipmiPowerState.FindStringSubmatch(out)
	if m == nil {
		return Unknown, fmt.Errorf("machine %s: ipmitool chassis power status (BMC %s): unexpected answer %q", d.machine, d.bmc(), strings.TrimSpace(out))
	}
	return State(m[1]), nil
}

func (d *ipmi) BootOnceFromNetwork(ctx context.Context) error {
	// Without options=persistent the BMC keeps the choice for one boot.
	args := []string{"chassis", "bootdev", "pxe"}
	if d.uefi {
		args = append(args, "options=efiboot")
	}
	_, err := d.run(ctx, args...)
	return err
}

// run runs one ipmitool command against the BMC and returns its output.
// The password goes through the environment (-E), never the command
// line, where any user of the machine could read it in the process list.
func (d *ipmi) run(ctx context.Context, args ...string) (string, error) {
	argv := []string{"-I", "lanplus", "-H", d.host, "-p", strconv.Itoa(d.port)}
	if d.username != "" {
		argv = append(argv, "-U", d.username)
	}
	env := withoutPasswords(os.Environ())
	if d.password != "" {
		argv = append(argv, "-E")
		env = append(env, "IPMI_PASSWORD="+d.password)
	}
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, d.tool, argv...)
	cmd.Env = env
	cmd.WaitDelay = 2 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.String(), nil
	}
	what := fmt.Sprintf("machine %s: ipmitool %s (BMC %s)", d.machine, strings.Join(args, " "), d.bmc())
	switch {
	case errors.Is(err, exec.ErrNotFound):
		return "", fmt.Errorf("%s: %w (install ipmitool: apt-get install ipmitool)", what, err)
	case ctx.Err() != nil:
		return "", fmt.Errorf("%s: %w", what, ctx.Err())
	}
	msg := d.cleanOutput(stderr.String())
	if msg == "" {
		msg = d.cleanOutput(stdout.String())
	}
	if msg == "" {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return "", fmt.Errorf("%s: %w: %s", what, err, msg)
}

// ipmitoolNoise are lines ipmitool prints on success too: many BMCs
// (and ipmi_sim) do not answer Get Channel Cipher Suites, and ipmitool
// then falls back to a suite they do support.
var ipmitoolNoise = []string{"Unable to Get Channel Cipher Suites"}

// cleanOutput makes ipmitool's output into one line for an error
// message, without the noise and without the password, should a BMC or
// a future ipmitool ever echo it.
func (d *ipmi) cleanOutput(s string) string {
	var lines []string
	for l := range strings.Lines(s) {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		noise := false
		for _, n := range ipmitoolNoise {
			noise = noise || l == n
		}
		if !noise {
			lines = append(lines, l)
		}
	}
	out := strings.Join(lines, "; ")
	if d.password != "" {
		out = strings.ReplaceAll(out, d.password, "<password>")
	}
	return out
}

// withoutPasswords drops the variables ipmitool -E reads, so the caller's
// environment cannot override the machine's password; IPMITOOL_PASSWORD
// even takes precedence over IPMI_PASSWORD.
func withoutPasswords(env []string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if strings.HasPrefix(kv, "IPMI_PASSWORD=") || strings.HasPrefix(kv, "IPMITOOL_PASSWORD=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}
